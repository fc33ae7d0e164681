import functools
import math
from decimal import Decimal, localcontext

import pytest

from rank1_cli.reasoning import scoring
from rank1_cli.reasoning.scoring import VerdictTokens


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


# ---------------------------------------------------------------------------------------------
# Numeric extremes: a confident verdict gives logprob gaps of tens or hundreds of nats

GAPS = [i / 4 for i in range(-3200, 3201)]  # logprob_false - logprob_true, -800 to 800 nats


@functools.cache
def exact_score(gap: float) -> Decimal:
    """1 / (1 + e^gap) to 40 digits: the reference the double result is held to."""
    with localcontext() as context:
        context.prec = 40
        return 1 / (1 + Decimal(gap).exp())


def score_of_gap(gap: float) -> float:
    # both logprobs as a model gives them (<= 0), chosen so that lf - lt is `gap` exactly
    return scoring.relevance_score(min(0.0, -gap), min(0.0, gap))


def test_score_is_within_two_ulps_of_the_exact_value_from_minus_to_plus_800_nats():
    """What "where the doubles allow it" means here: the score is the exact value rounded to a
    double, give or take 2 units in the last place of that double (math.ulp: 2.2e-16 near 1, 5e-324
    among the subnormals below 2.2e-308). So it is 1.0 only within 2 ulps of 1 (gaps below about
    -37 nats) and 0.0 only where the exact value is below 1e-323 (gaps beyond about 744 nats);
    nothing representable collapses to 0."""
    for gap in GAPS:
        exact = exact_score(gap)
        score = score_of_gap(gap)
        assert abs(Decimal(score) - exact) <= 2 * Decimal(math.ulp(float(exact))), (gap, score, float(exact))
    assert score_of_gap(700.0) == pytest.approx(float(exact_score(700.0)), rel=1e-15)  # 9.9e-305
    assert score_of_gap(708.0) == pytest.approx(float(exact_score(708.0)), rel=1e-15)  # normal, 3.3e-308
    assert 0 < score_of_gap(744.0) < 2.2250738585072014e-308  # subnormal, still above 0
    assert score_of_gap(746.0) == 0.0 and score_of_gap(800.0) == 0.0  # below half the least subnormal
    assert score_of_gap(-36.0) < 1.0 and score_of_gap(-38.0) == 1.0


def test_score_order_is_strict_wherever_the_exact_scores_are_more_than_four_ulps_apart():
    """Non-increasing in the gap everywhere; strictly decreasing between two gaps whose exact scores
    differ by more than 4 ulps (2 for each score's error). On a grid of quarter nats that is every
    step from -34 to 741.5 nats: a ranking's order is lost only where doubles cannot hold it."""
    fine = [i / 32 for i in range(-25600, 25601)]
    scores = [score_of_gap(g) for g in fine]
    assert all(a >= b for a, b in zip(scores, scores[1:]))
    guaranteed = []
    for low, high in zip(GAPS, GAPS[1:]):
        exact_low, exact_high = exact_score(low), exact_score(high)
        if exact_low - exact_high > 4 * Decimal(math.ulp(float(exact_low))):
            assert score_of_gap(low) > score_of_gap(high), (low, high)
            guaranteed.append(low)
    assert guaranteed == [g for g in GAPS[:-1] if -34.0 <= g <= 741.5]
