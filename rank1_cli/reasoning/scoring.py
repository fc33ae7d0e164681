"""Turning generations into rank1 scores, and the repair of unfinished reasoning (pure functions)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .prompts import STOP_FALSE, STOP_TRUE

SENTENCE_ENDS = (".", "!", "?")
FALLBACK_SCORE = 0.5


@dataclass(frozen=True, slots=True)
class VerdictTokens:
    """Token ids of ` true` and ` false`: the first token of each, encoded without special tokens."""

    true_id: int
    false_id: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "VerdictTokens":
        true_ids = tokenizer(" true", add_special_tokens=False)["input_ids"]
        false_ids = tokenizer(" false", add_special_tokens=False)["input_ids"]
        return cls(true_ids[0], false_ids[0])


def relevance_score(logprob_true: float, logprob_false: float) -> float:
    """P(true) renormalised over {true, false}: exp(lt) / (exp(lt) + exp(lf)), computed stably."""
    gap = logprob_false - logprob_true
    if gap > 0:  # exp(gap) could overflow; exp(-gap) only underflows, through the subnormals to 0
        odds = math.exp(-gap)
        return odds / (1.0 + odds)
    return 1.0 / (1.0 + math.exp(gap))


def verdict_logprobs(last_logprobs: dict[int, float] | None, tokens: VerdictTokens) -> tuple[float, float] | None:
    """(logprob_true, logprob_false) from the last position's top logprobs, or None when the
    output is incomplete (no logprobs, or either token missing from them)."""
    if not last_logprobs:
        return None
    lt = last_logprobs.get(tokens.true_id)
    lf = last_logprobs.get(tokens.false_id)
    if lt is None or lf is None:
        return None
    return lt, lf


def verdict_from_stop(stop_reason: str | None) -> str | None:
    """The verdict the model wrote: "true", "false", or None when it did not finish."""
    if stop_reason == STOP_TRUE:
        return "true"
    if stop_reason == STOP_FALSE:
        return "false"
    return None


def clean_unfinished(text: str) -> str:
    """Cut unfinished reasoning back to its last complete sentence, as the reference does.

    Strip trailing whitespace; unless it then ends in . ! or ?, cut to just after the last
    . ! or ? (when there is one); strip again.
    """
    text = text.rstrip()
    if not text.endswith(SENTENCE_ENDS):
        last = max(text.rfind(mark) for mark in SENTENCE_ENDS)
        if last >= 0:
            text = text[: last + 1]
    return text.strip()


def repair_prompt(original_prompt: str, generated_text: str) -> str:
    """The prompt that forces a verdict after unfinished reasoning."""
    return original_prompt + "\n" + clean_unfinished(generated_text) + "\n</think>"
