import math

import pytest

from rank1_cli import scoring
from rank1_cli.scoring import VerdictTokens


def test_score_is_p_true_renormalised_over_true_and_false():
    lt, lf = math.log(0.6), math.log(0.2)
    assert scoring.relevance_score(lt, lf) == pytest.approx(0.75)
    assert scoring.relevance_score(-0.1, -0.1) == 0.5
    assert scoring.relevance_score(0.0, -2000.0) == 1.0
    assert scoring.relevance_score(-2000.0, 0.0) == 0.0


def test_incomplete_when_logprobs_absent_or_a_verdict_token_missing():
    tokens = VerdictTokens(true_id=5, false_id=7)
    assert scoring.verdict_logprobs(None, tokens) is None
    assert scoring.verdict_logprobs({}, tokens) is None
    assert scoring.verdict_logprobs({5: -0.1, 9: -3.0}, tokens) is None
    assert scoring.verdict_logprobs({5: -0.1, 7: -2.0}, tokens) == (-0.1, -2.0)


def test_verdict_comes_from_the_stop_string():
    assert scoring.verdict_from_stop("</think> true") == "true"
    assert scoring.verdict_from_stop("</think> false") == "false"
    assert scoring.verdict_from_stop(None) is None


@pytest.mark.parametrize("text, cleaned", [
    ("The passage is about cats. It mentions dogs", "The passage is about cats."),   # cut to last sentence end
    ("Is it relevant? Maybe it", "Is it relevant?"),
    ("Wow! and then", "Wow!"),
    ("Complete sentence.   \n ", "Complete sentence."),                              # trailing space stripped first
    ("no sentence end at all  ", "no sentence end at all"),                          # nothing to cut back to
    ("  Two. Three.", "Two. Three."),                                                 # strip again at the end
    ("", ""),
    ("One. Two. Three and", "One. Two."),                                           # the last mark, not the first
    ("One. Two! Three and", "One. Two!"),
    ("? what", "?"),                                                                  # a mark at the very start
    ("One.Two", "One."),                                                              # cut just after the mark
])
def test_unfinished_reasoning_is_cut_back_to_its_last_sentence(text, cleaned):
    assert scoring.clean_unfinished(text) == cleaned


def test_repair_prompt_appends_cleaned_reasoning_and_closes_the_think_block():
    prompt = "P\n<think>"
    assert scoring.repair_prompt(prompt, "It is. Half a") == "P\n<think>\nIt is.\n</think>"


def test_verdict_token_ids_come_from_the_leading_space_forms(tiny_tokenizer):
    tokens = VerdictTokens.from_tokenizer(tiny_tokenizer)
    assert tiny_tokenizer.decode([tokens.true_id]) == " true"
    assert tiny_tokenizer.decode([tokens.false_id]) == " false"


def test_verdict_tokens_are_encoded_without_special_tokens():
    # A tokenizer that adds a BOS token unless told not to (as Llama's and Mistral's do).
    def tokenizer(text, add_special_tokens=True):
        ids = {" true": [11, 12], " false": [21]}[text]
        return {"input_ids": ([1] if add_special_tokens else []) + ids}

    assert VerdictTokens.from_tokenizer(tokenizer) == VerdictTokens(true_id=11, false_id=21)
