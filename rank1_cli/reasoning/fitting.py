"""Fitting prompts to the context, before any engine exists: how the context is split between the
prompt, the reasoning and the repair (`size_budget`), and each prompt built with its passage (never
its query) cut by tokens to fit (`fit_prompts`). Pure but for reading the model's tokenizer and
context length (`load_tokenizer`, `model_context`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import InputError, OptionError
from . import prompts
from .models import ResolvedModel

log = logging.getLogger(__name__)

# Tokens kept free beyond the reasoning budget: the repair prompt adds "\n" + "\n</think>"
# around the reasoning and then generates one more token.
REPAIR_MARGIN = 8
MIN_PROMPT_TOKENS = 256
TOKENIZE_CHUNK = 1024


@dataclass(frozen=True, slots=True)
class Budget:
    """How the context is shared: prompt tokens + reasoning tokens + the repair margin."""

    max_model_len: int
    max_reasoning_tokens: int

    @property
    def prompt_tokens(self) -> int:
        return self.max_model_len - self.max_reasoning_tokens - REPAIR_MARGIN


def check_lengths(max_model_len: int, max_reasoning_tokens: int) -> None:
    smallest = MIN_PROMPT_TOKENS + REPAIR_MARGIN + 1
    if max_model_len < smallest:
        raise OptionError(f"{{max_model_len}} must be at least {smallest} tokens (a prompt of {MIN_PROMPT_TOKENS}, "
                          f"one reasoning token and the repair's {REPAIR_MARGIN}), found {max_model_len}")
    if max_reasoning_tokens < 0:
        raise OptionError(f"{{max_reasoning_tokens}} must be at least 0 (0: no reasoning, the verdict is forced at "
                          f"once), found {max_reasoning_tokens}")


def size_budget(max_model_len: int, max_reasoning_tokens: int, model_context: int | None) -> Budget:
    """Check the two lengths and fit them to the model's context (with a warning when changed)."""
    check_lengths(max_model_len, max_reasoning_tokens)
    if model_context and max_model_len > model_context:
        log.warning("max_model_len %d exceeds the model's context of %d tokens; using %d",
                    max_model_len, model_context, model_context)
        max_model_len = model_context
    reasoning = max_reasoning_tokens
    if max_model_len - reasoning - REPAIR_MARGIN < MIN_PROMPT_TOKENS:
        reasoning = max_model_len - REPAIR_MARGIN - MIN_PROMPT_TOKENS
        log.warning("max_reasoning_tokens %d leaves no room for a prompt in %d tokens of context; using %d",
                    max_reasoning_tokens, max_model_len, reasoning)
    return Budget(max_model_len, reasoning)


def load_tokenizer(model: ResolvedModel):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model.path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{model.spec}: cannot load its tokenizer ({str(exc)[:300]})") from None


def model_context(model: ResolvedModel) -> int | None:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model.path)
    except (OSError, ValueError):
        return model.info.context if model.info else None
    return getattr(config, "max_position_embeddings", None)


class FittedPrompt(NamedTuple):
    prompt: str
    truncated: bool                # the passage was cut to fit
    tokens: int                    # the prompt's length in tokens


def fit_prompts(tokenizer, queries: Sequence[str], passages: Sequence[str], budget: int) -> list[FittedPrompt]:
    """Build prompts; a prompt over `budget` tokens has its passage (only) cut by tokens to fit.

    Returns one FittedPrompt per pair. Identical (query, passage) pairs are built once.
    """
    index: dict[tuple[str, str], int] = {}
    for pair in zip(queries, passages):
        index.setdefault(pair, len(index))
    unique = list(index)
    built = [prompts.build_prompt(q, p) for q, p in unique]
    lengths: list[int] = []
    # verbose=False: no warning that a text is longer than the model's maximum; it is cut here
    for start in range(0, len(built), TOKENIZE_CHUNK):  # in chunks: all token ids at once cost GBs
        lengths.extend(len(ids) for ids in tokenizer(built[start:start + TOKENIZE_CHUNK], verbose=False)["input_ids"])
    fitted = []
    for prompt, length, (query, passage) in zip(built, lengths, unique):
        if length <= budget:
            fitted.append(FittedPrompt(prompt, False, length))
            continue
        passage_ids = tokenizer(passage, add_special_tokens=False, verbose=False)["input_ids"]
        keep = max(0, len(passage_ids) - (length - budget))
        while True:
            cut = prompts.build_prompt(query, tokenizer.decode(passage_ids[:keep]))
            cut_length = len(tokenizer(cut, verbose=False)["input_ids"])
            if cut_length <= budget or keep == 0:
                break
            keep = max(0, keep - 8)
        if cut_length > budget:
            raise OptionError(f"the query alone exceeds the prompt budget of {budget} tokens: {query[:80]!r}...; "
                              "raise {max_model_len} or lower {max_reasoning_tokens}")
        fitted.append(FittedPrompt(cut, True, cut_length))
    return [fitted[index[pair]] for pair in zip(queries, passages)]
