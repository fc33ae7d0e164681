"""The scoring core: prompts in, rank1 judgements out, every generation kept in the store.

`Scorer.judge(prompts)` looks every prompt up in the reasoning store first; only the misses go
to the engine, which is loaded on first need (a rerank whose pairs are all stored never loads a
model). Generations are committed to the store in chunks as they stream back; reasoning that
did not finish is stored as "pending" and then repaired in one batched pass (the reference's
repair: cut to the last sentence, close with `\\n</think>`, force one verdict token). Results
live in memory; the store is the only thing that persists them.

The prompt side (`size_budget`, `fit_prompts`) is in `fitting`, steps a front end takes before any
engine exists.

Front ends (`rank1 rerank`, `rank1 merge`, the bench) sit on top; engines and the store below.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..engines import default_dtype, load_engine
from ..engines.base import Engine, EngineConfig, Generation, GenerationSettings, Prompt
from ..errors import EngineFailure, InputError, OptionError
from . import prompts
from .fitting import Budget, load_tokenizer, model_context, size_budget
from .models import ResolvedModel, model_revision
from .scoring import FALLBACK_SCORE, VerdictTokens, relevance_score, repair_prompt, verdict_from_stop, verdict_logprobs
from .store import PENDING, GenerationKey, Store, StoredGeneration, StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScoringModel:
    """A rank1 model ready to score with, no engine loaded yet: its tokenizer, verdict tokens,
    sized budget, store key, and what its engine will be started with."""

    model: ResolvedModel
    backend: str
    tokenizer: Any
    tokens: VerdictTokens
    budget: Budget
    key: GenerationKey
    engine_config: EngineConfig
    engine_options: Any

    def scorer(self, store: Store | None, *, chunk_size: int = 256, recompute: bool = False) -> "Scorer":
        """A scorer whose engine is started on first need."""
        return Scorer(self.key, self.tokens, lambda: load_engine(self.backend, self.engine_config, self.engine_options),
                      store=store, chunk_size=chunk_size, recompute=recompute)


def load_scoring_model(model: ResolvedModel, backend: str, engine_options: Any, *, dtype: str | None,
                       max_model_len: int, max_reasoning_tokens: int, store: Store | None = None) -> ScoringModel:
    """Size the budget to the model's context, load the tokenizer, and derive the store key
    (`store` keeps a local folder's file digests, so its weights are read once)."""
    budget = size_budget(max_model_len, max_reasoning_tokens, model_context(model))
    tokenizer = load_tokenizer(model)
    tokens = VerdictTokens.from_tokenizer(tokenizer)
    if tokens.true_id == tokens.false_id:
        raise InputError(f"{model.spec}: ' true' and ' false' start with the same token; not a rank1 model")
    dtype = dtype or default_dtype(backend)
    key = GenerationKey(model.spec, model_revision(model, store), backend, dtype, budget.max_reasoning_tokens,
                        budget.max_model_len)
    config = EngineConfig(model=model.path, dtype=dtype, max_model_len=budget.max_model_len)
    return ScoringModel(model, backend, tokenizer, tokens, budget, key, config, engine_options)


# --- judgements ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Judgement:
    """rank1's verdict on one prompt."""

    prompt_sha256: str
    score: float
    verdict: str | None            # "true" / "false"; None for a fallback
    reasoning: str
    logprob_true: float | None
    logprob_false: float | None
    completion: str                # "stop" | "forced" | "fallback"
    output_tokens: int
    origin: str                    # "engine" (made now) | "store" (made before)


@dataclass(slots=True)
class ScoringStats:
    prompts: int = 0               # distinct prompts judged
    from_store: int = 0            # of which finished in the store already
    generated: int = 0             # sent to the engine
    repaired: int = 0              # unfinished reasoning given a forced verdict (or a fallback)
    output_tokens: int = 0         # generated now
    load_seconds: float = 0.0      # starting the engine
    engine_seconds: float = 0.0
    repair_seconds: float = 0.0


class ProgressReporter:
    """What the scorer tells a progress bar; this base class shows nothing."""

    def start(self, total: int, completed: int, description: str) -> None: ...
    def advance(self, n: int) -> None: ...
    def stop(self) -> None: ...


def judgement_of(stored: StoredGeneration, origin: str) -> Judgement:
    if stored.completion == "fallback" or stored.logprob_true is None or stored.logprob_false is None:
        score = FALLBACK_SCORE
    else:
        score = relevance_score(stored.logprob_true, stored.logprob_false)
    return Judgement(stored.prompt_sha256, score, stored.verdict, stored.reasoning, stored.logprob_true,
                     stored.logprob_false, stored.completion, stored.output_tokens, origin)


def stored_from_generation(sha: str, generation: Generation, tokens: VerdictTokens) -> StoredGeneration:
    """A finished record when the reasoning ended with `</think> true|false` and both verdict
    logprobs, else a pending one (to be repaired). The reference scored any output whose last
    position happened to list both tokens, a budget cut-off included: its unchecked finish_reason."""
    found = verdict_logprobs(generation.last_logprobs, tokens)
    verdict = verdict_from_stop(generation.stop_reason)
    if found is None or verdict is None:
        return StoredGeneration(sha, PENDING, None, None, None, generation.output_tokens, generation.text,
                                generation.token_ids)
    lt, lf = found
    return StoredGeneration(sha, "stop", verdict, lt, lf, generation.output_tokens, generation.text,
                            generation.token_ids)


def unreasoned(sha: str) -> StoredGeneration:
    """Budget 0: no reasoning at all. The reference's repair of an empty reasoning (the prompt, then
    `\n\n</think>`) forces the verdict, one prefill and one token per prompt."""
    return StoredGeneration(sha, PENDING, None, None, None, 0, "", ())


class Scorer:
    """Judges prompts with one rank1 model: the store first, the engine for the misses.

    `engine_factory` is called at most once, when the first miss needs an engine. With
    `recompute`, stored results are ignored and replaced by the new ones. With a reasoning budget
    of 0 nothing is generated: every miss goes straight to the batched forced verdict.
    """

    def __init__(self, key: GenerationKey, tokens: VerdictTokens, engine_factory: Callable[[], Engine], *,
                 store: Store | None = None, chunk_size: int = 256, recompute: bool = False) -> None:
        if chunk_size < 1:
            raise OptionError(f"{{chunk_size}} must be at least 1, found {chunk_size}")
        self.key = key
        self.tokens = tokens
        self.store = store
        self.chunk_size = chunk_size
        self.recompute = recompute
        self._engine_factory = engine_factory
        self._engine: Engine | None = None
        self.stats = ScoringStats()

    def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    def sibling(self, key: GenerationKey, *, recompute: bool = False) -> "Scorer":
        """A scorer for other settings of the same model (another reasoning budget) that shares this
        one's engine, started on the first need of either, and its stats, so that the work of every
        budget a policy or a sweep uses is counted. Close this scorer, not the sibling."""
        sibling = Scorer(key, self.tokens, self._start_engine, store=self.store, chunk_size=self.chunk_size,
                         recompute=recompute)
        sibling.stats = self.stats
        return sibling

    def judge(self, prompt_list: Sequence[str], progress: ProgressReporter | None = None) -> list[Judgement]:
        """One judgement per prompt (identical prompts are judged once)."""
        progress = progress or ProgressReporter()
        shas = {prompt: prompts.prompt_sha256(prompt) for prompt in prompt_list}
        by_sha = {sha: prompt for prompt, sha in shas.items()}
        self.stats.prompts += len(by_sha)
        known = self.stored(list(by_sha))
        done = {sha: judgement_of(g, "store") for sha, g in known.items() if g.completion != PENDING}
        self.stats.from_store += len(done)
        pending = {sha: g for sha, g in known.items() if g.completion == PENDING}
        missing = [sha for sha in by_sha if sha not in known]

        progress.start(len(by_sha), len(done), f"reasoning with {self.key.model}")
        try:
            if missing and self.key.max_reasoning_tokens == 0:
                pending.update({sha: unreasoned(sha) for sha in missing})
            elif missing:
                made = self.generate([by_sha[sha] for sha in missing], missing, progress)
                done.update({sha: judgement_of(g, "engine") for sha, g in made.items() if g.completion != PENDING})
                pending.update({sha: g for sha, g in made.items() if g.completion == PENDING})
            if pending:
                repaired = self.repair(pending, by_sha)
                origin = {sha: "store" if sha in known else "engine" for sha in pending}
                done.update({sha: judgement_of(g, origin[sha]) for sha, g in repaired.items()})
                progress.advance(len(repaired))
        finally:
            progress.stop()
        return [done[shas[prompt]] for prompt in prompt_list]

    def _save(self, records: list[StoredGeneration]) -> None:
        if self.store is not None and records:
            self.store.put_many(self.key, records, replace=self.recompute)

    def saved_hint(self) -> str:
        if self.store is None:
            return " Nothing was saved (no store)."
        saved = self.store.count(self.key)
        return (f" The store {self.store.path} holds {saved} generations of this model and settings; run the same "
                "command again to resume.")

    def stored(self, shas: Sequence[str], *, with_token_ids: bool = False) -> dict[str, StoredGeneration]:
        """What the store holds for these prompt hashes under this scorer's key (nothing with `recompute`)."""
        if self.store is None or self.recompute:
            return {}
        return self.store.get_many(self.key, shas, with_token_ids=with_token_ids)

    def generate(self, prompt_list: Sequence[Prompt], shas: list[str], progress: ProgressReporter, *,
                 max_tokens: int | None = None,
                 record: Callable[[str, Generation], StoredGeneration] | None = None) -> dict[str, StoredGeneration]:
        """Generate for every prompt (text, or token ids: a continuation) and store each record as it
        comes: finished, or pending its repair. `max_tokens` defaults to the reasoning budget;
        `record` turns (prompt hash, generation) into the stored record (default: as generated)."""
        settings = GenerationSettings(max_tokens=max_tokens or self.key.max_reasoning_tokens,
                                      stop=prompts.STOP_STRINGS, logprobs=20)
        record = record or (lambda sha, generation: stored_from_generation(sha, generation, self.tokens))
        made: dict[str, StoredGeneration] = {}
        buffer: list[StoredGeneration] = []

        def flush() -> None:
            self._save(buffer)
            progress.advance(sum(1 for g in buffer if g.completion != PENDING))
            buffer.clear()

        engine = self._start_engine()
        started = time.perf_counter()
        try:
            for index, generation in engine.generate(prompt_list, settings):
                made_record = record(shas[index], generation)
                made[made_record.prompt_sha256] = made_record
                buffer.append(made_record)
                self.stats.generated += 1
                self.stats.output_tokens += generation.output_tokens
                if len(buffer) >= self.chunk_size:
                    flush()
            flush()
        except KeyboardInterrupt:
            flush()
            raise
        except StoreError:
            raise
        except (InputError, EngineFailure):
            flush()
            raise
        except Exception as exc:
            flush()
            raise EngineFailure(f"the {engine.name} engine failed: {type(exc).__name__}: {str(exc)[:500]}."
                                + self.saved_hint()) from exc
        finally:
            seconds = time.perf_counter() - started
            self.stats.engine_seconds += seconds
        if self.store is not None:
            self.store.record_engine_run(self.key, len(made), sum(g.output_tokens for g in made.values()), seconds)
        return made

    def _start_engine(self) -> Engine:
        if self._engine is not None:
            return self._engine
        started = time.perf_counter()
        try:
            self._engine = self._engine_factory()
            return self._engine
        except (InputError, KeyboardInterrupt):
            raise
        except Exception as exc:  # out of memory, a model the engine cannot run, a replica that failed ...
            raise EngineFailure(f"the {self.key.engine} engine could not start: {type(exc).__name__}: "
                                f"{str(exc)[:500]}") from exc
        finally:
            self.stats.load_seconds += time.perf_counter() - started

    def repair(self, pending: dict[str, StoredGeneration], by_sha: dict[str, str]) -> dict[str, StoredGeneration]:
        """Force a verdict for every unfinished reasoning in one batched pass (as the reference does);
        store and return them."""
        started = time.perf_counter()
        order = list(pending)
        repair_prompts = [repair_prompt(by_sha[sha], pending[sha].reasoning) for sha in order]
        engine = self._start_engine()
        try:
            verdicts = engine.force_verdict(repair_prompts, self.tokens.true_id, self.tokens.false_id)
        except (KeyboardInterrupt, InputError):
            raise
        except Exception as exc:
            raise EngineFailure(f"the {engine.name} engine failed in the repair pass: {type(exc).__name__}: "
                                f"{str(exc)[:500]}." + self.saved_hint()) from exc
        repaired: dict[str, StoredGeneration] = {}
        for sha, found in zip(order, verdicts):
            old = pending[sha]
            lt, lf = found.logprob_true, found.logprob_false
            if lt is None or lf is None:
                record = StoredGeneration(sha, "fallback", None, lt, lf, old.output_tokens, old.reasoning, old.token_ids)
            else:
                record = StoredGeneration(sha, "forced", "true" if lt >= lf else "false", lt, lf, old.output_tokens,
                                          old.reasoning, old.token_ids)
            repaired[sha] = record
        self._save(list(repaired.values()))
        self.stats.repaired += len(repaired)
        self.stats.repair_seconds += time.perf_counter() - started
        return repaired
