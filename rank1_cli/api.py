"""rank1 from Python: load a model once, then score pairs, rerank a query's documents or a whole
run. The same scoring core and reasoning store as `rank1 rerank`, so a pair scored from Python
is never generated again by the command line, and the other way round.

    from rank1_cli import Rank1

    with Rank1("rank1-7b") as rank1:
        [j] = rank1.score([("what causes tides", "The moon's gravity pulls on the oceans.")])
        print(j.score, j.verdict, j.reasoning)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import prompts
from .collection import CollectionSource
from .early_exit import DEFAULT_CONFIDENCE
from .engines import engine_options
from .models import resolve_model
from .rerank import RerankOptions, RerankResult, check_options, execute_rerank, prepare_rerank
from .scorer import Judgement, ProgressReporter, fit_prompts, load_scoring_model
from .store import Store, store_path

DEFAULT_STORE = "default"


class Rank1:
    """A rank1 model, loaded once (its engine on the first pair the store does not have).

    model: an alias (`rank1 models`), a Hugging Face id or a local folder. backend: "vllm",
    "transformers" or "openai"; the backend's own options as keywords (tensor_parallel=2,
    device="cuda:1", base_urls=(...)), checked now. prompt: a dataset prompt name (e.g.
    "SciFact") or a template file. store: a path, "default" (as the command line) or None (no
    store: nothing reused or kept). Defaults are the paper's settings.
    """

    def __init__(self, model: str = "rank1-7b", backend: str = "vllm", *, dtype: str | None = None,
                 max_model_len: int = 16000, max_reasoning_tokens: int = 8192, prompt: str | None = None,
                 store: str | os.PathLike | None = DEFAULT_STORE, chunk_size: int = 256, recompute: bool = False,
                 **backend_options: Any) -> None:
        self.options = RerankOptions(model=model, backend=backend, dtype=dtype, max_model_len=max_model_len,
                                     max_reasoning_tokens=max_reasoning_tokens, prompt=prompt,
                                     chunk_size=chunk_size, engine_options=engine_options(backend, **backend_options))
        check_options(self.options)
        self.template = prompts.resolve_template(prompt)
        resolved = resolve_model(model)
        # The store is checked before the tokenizer loads: a store that cannot be written fails first.
        self.store = None if store is None else Store(store_path(None if store == DEFAULT_STORE else store))
        try:
            self.scoring = load_scoring_model(resolved, backend, self.options.engine_options, dtype=dtype,
                                              max_model_len=max_model_len, max_reasoning_tokens=max_reasoning_tokens,
                                              store=self.store)
        except BaseException:
            if self.store is not None:
                self.store.close()
            raise
        self.scorer = self.scoring.scorer(self.store, chunk_size=chunk_size, recompute=recompute)

    def score(self, pairs: Iterable[tuple[str, str] | tuple[str, str, str | None]],
              progress: ProgressReporter | None = None, *, prompt: str | None = None) -> list[Judgement]:
        """A judgement per (query, passage) or (query, passage, instruction), in order.

        Each has .score (P(true) over {true, false}), .verdict, .reasoning, .completion
        ("stop", "forced" or "fallback"), .logprob_true/.logprob_false, .output_tokens and .origin.
        `prompt` (a dataset prompt name or file) replaces the model's own for these pairs.
        """
        template = prompts.resolve_template(prompt) if prompt else self.template
        queries, passages = [], []
        for pair in pairs:
            query, passage, *rest = pair
            queries.append(prompts.rank1_query(query, rest[0] if rest else None, template))
            passages.append(passage)
        fitted = fit_prompts(self.scoring.tokenizer, queries, passages, self.scoring.budget.prompt_tokens)
        return self.scorer.judge([fit.prompt for fit in fitted], progress)

    def rerank(self, query: str, documents: Mapping[str, str] | Sequence[str], *,
               instruction: str | None = None) -> list[tuple[str | int, Judgement]]:
        """The documents (a docid -> text mapping, or a list: ids are positions) by descending
        score; ties keep the given order."""
        items = list(documents.items()) if isinstance(documents, Mapping) else list(enumerate(documents))
        judgements = self.score([(query, text, instruction) for _, text in items])
        order = sorted(range(len(items)), key=lambda i: -judgements[i].score)
        return [(items[i][0], judgements[i]) for i in order]

    def rerank_run(self, run: str | os.PathLike, *, dataset: str | None = None, corpus: str | None = None,
                   queries: str | None = None, top_k: int = 100, keep_tail: bool = True, missing: str = "error",
                   instructions: str | None = None, shard: str | None = None, reason_top: int | None = None,
                   early_exit: Sequence[int] | None = None, confidence: float = DEFAULT_CONFIDENCE,
                   progress: ProgressReporter | None = None) -> RerankResult:
        """What `rank1 rerank` does with a TREC run, with this model: `.ranking` (qid -> [(docid,
        score)] in the new order; write it with `rank1_cli.trec.write_run`) and `.traces`.
        `reason_top`: the cascade of `rank1 rerank --reason-top`; `early_exit` (budgets ending at
        the model's reasoning budget) and `confidence`: `rank1 rerank --early-exit`."""
        options = dataclasses.replace(self.options, top_k=top_k, keep_tail=keep_tail, missing=missing,
                                      instructions=instructions, shard=shard, reason_top=reason_top,
                                      early_exit=tuple(early_exit) if early_exit else None, confidence=confidence)
        prepared = prepare_rerank(str(run), CollectionSource(dataset=dataset, corpus=corpus, queries=queries), options,
                                  self.scoring)
        return execute_rerank(prepared, self.scorer, progress)

    def close(self) -> None:
        """Stop the engine and close the store."""
        self.scorer.close()
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> "Rank1":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
