"""The one small interface every inference engine implements.

An engine turns prompt strings into greedy generations with the logprobs rank1 scores from;
everything rank1-specific (prompt, stop strings, repair, score) lives outside the engines.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Prompt = str | Sequence[int]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """What every engine needs to load a model; each engine's own settings are its `Options`."""

    model: str                      # local directory or Hugging Face id (already resolved)
    dtype: str = "auto"             # "auto", "float16", "bfloat16", "float32"
    max_model_len: int = 16000
    enable_prefix_caching: bool = True
    seed: int = 0


@dataclass(frozen=True, slots=True)
class GenerationSettings:
    """Greedy decoding settings (temperature is always 0)."""

    max_tokens: int
    stop: tuple[str, ...]
    logprobs: int = 20


@dataclass(slots=True)
class Generation:
    """One finished greedy generation.

    text: the generated text up to (not including) the stop string that ended it, special
      tokens kept (like vLLM with skip_special_tokens=False, include_stop_str_in_output=False).
    stop_reason: the stop string that ended generation, or None (budget ran out / EOS).
    last_logprobs: token id -> logprob (raw, unprocessed) of the top `logprobs` tokens at the
      last generated position, plus the generated token itself; None if the engine returned none.
    token_ids: the generated token ids (kept in the store, so a smaller reasoning budget can be
      derived later by cutting them), or None where the engine does not report them.
    """

    text: str
    output_tokens: int
    finish_reason: str              # "stop" (stop string or EOS) or "length"
    stop_reason: str | None
    last_logprobs: dict[int, float] | None
    token_ids: tuple[int, ...] | None = None   # the generated tokens, where the engine reports them


@dataclass(frozen=True, slots=True)
class VerdictLogprobs:
    """Raw logprobs of the ` true` and ` false` tokens at the next position (None if unknown)."""

    logprob_true: float | None
    logprob_false: float | None


class Engine(Protocol):
    """A loaded model. Engines import their heavy libraries (torch, vllm) only when created."""

    name: str

    @property
    def tokenizer(self) -> Any:
        """The model's Hugging Face tokenizer (used to find token ids and to truncate)."""

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> Iterator[tuple[int, Generation]]:
        """Generate greedily for every prompt; yield (prompt index, generation) as each finishes.

        A prompt is text (tokenized as the engine's tokenizer does by default) or token ids: a
        continuation, the prompt's ids followed by reasoning generated before, whose generation
        goes on exactly where that one stopped (no re-tokenized text in between).

        Results may come in any order. The engine keeps itself saturated (it decides its own
        batching); callers consume the iterator to stream results to disk.
        """

    def force_verdict(self, prompts: Sequence[str], true_id: int, false_id: int) -> list[VerdictLogprobs]:
        """For each prompt, one greedy token restricted to {true_id, false_id}; return both
        tokens' raw (unrestricted) logprobs at that position."""

    def close(self) -> None:
        """Free the model (GPU memory, worker processes)."""
