"""rank1 from Python: load a model once, then score pairs, rerank a query's documents or a whole
run. The same scoring core and reasoning store as `rank1 rerank`, so a pair scored from Python
is never generated again by the command line, and the other way round.

    from rank1_cli import Rank1

    with Rank1("rank1-7b") as rank1:
        [j] = rank1.score([("what causes tides", "The moon's gravity pulls on the oceans.")])
        print(j.score, j.verdict, j.reasoning)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from .engines import Engine, Generation, GenerationSettings, Prompt, VerdictLogprobs, engine_options, load_engine
from .errors import QUOTE_LIMIT, EngineFailure, InputError
from .io.collection import CollectionSource
from .reasoning import prompts
from .reasoning.early_exit import DEFAULT_CONFIDENCE
from .reasoning.fitting import FittedPrompt, fit_prompts
from .reasoning.models import resolve_model
from .reasoning.scorer import Judgement, ProgressReporter, Scorer, load_scoring_model
from .reasoning.store import Store, store_path
from .workflows.rerank import RerankOptions, RerankResult, check_options, execute_rerank, prepare_rerank

DEFAULT_STORE = "default"
PAIR_FIELDS = ("query", "passage", "instruction")
PAIR_SHAPE = "each pair is (query, passage) or (query, passage, instruction) of strings, the instruction may be None"


def _type_name(value: Any) -> str:
    """'None', or the value's type with its article: "an int"."""
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _described(value: Any) -> str:
    """_type_name and the value's repr, cut short: "an int (7)"."""
    if value is None:
        return "None"
    text = repr(value)
    return f"{_type_name(value)} ({text if len(text) <= QUOTE_LIMIT else text[:QUOTE_LIMIT] + '...'})"


def checked_pairs(pairs: Any) -> list[tuple[str, str, str | None]]:
    """The (query, passage, instruction) triples of `pairs`, or an InputError naming the pair and
    field at fault: a string passed as the pairs would otherwise be read a character at a time."""
    if isinstance(pairs, (str, bytes, Mapping)) or not isinstance(pairs, Iterable):
        raise InputError(f"pairs is {_type_name(pairs)}, not a list of (query, passage) pairs: "
                         "give [(query, passage), ...]")
    checked = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence):
            raise InputError(f"pairs[{i}] is {_type_name(pair)}, not a (query, passage) pair"
                             + ("; to score one pair, pass a list of one: [(query, passage)]"
                                if isinstance(pair, str) else ""))
        if len(pair) not in (2, 3):
            raise InputError(f"pairs[{i}] has {len(pair)} item{'s' if len(pair) != 1 else ''}: {PAIR_SHAPE}")
        for j, value in enumerate(pair):
            if not isinstance(value, str) and not (j == 2 and value is None):
                raise InputError(f"pairs[{i}][{j}] ({PAIR_FIELDS[j]}) is {_described(value)}: {PAIR_SHAPE}")
        checked.append((pair[0], pair[1], pair[2] if len(pair) == 3 else None))
    return checked


def checked_documents(query: Any, documents: Any, instruction: Any) -> list[tuple[str | int, str]]:
    """(docid, text) of a docid -> text mapping, or of a sequence of texts (ids are positions);
    an InputError naming the query, instruction or document at fault."""
    if not isinstance(query, str):
        raise InputError(f"query is {_described(query)}: the query is a string")
    if instruction is not None and not isinstance(instruction, str):
        raise InputError(f"instruction is {_described(instruction)}: the instruction is a string or None")
    if isinstance(documents, Mapping):
        items = list(documents.items())
    elif isinstance(documents, Sequence) and not isinstance(documents, (str, bytes)):
        items = list(enumerate(documents))
    else:
        raise InputError(f"documents is {_type_name(documents)}, not a list of texts or a {{docid: text}} dict")
    for docid, text in items:
        if not isinstance(text, str):
            raise InputError(f"documents[{docid!r}] is {_described(text)}: each document is a string")
    return items


@contextlib.contextmanager
def _output_to(log: TextIO | None) -> Iterator[None]:
    """What the engine libraries print (transformers, vLLM, torch, their C code and worker
    processes) appended to the open file `log` while the block runs (None: left as it goes), as
    `rank1 rerank` sends it to its engine log: file descriptors 1 and 2, and Python's sys.stdout
    and sys.stderr, which need not write to them (Jupyter, pytest)."""
    if log is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {1: os.dup(1), 2: os.dup(2)}
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        log.flush()
        for target, copy in saved.items():
            os.dup2(copy, target)
            os.close(copy)


class _EngineOutputToLog:
    """An engine whose every call prints to `log`; between the generations it yields, the caller's
    own output (a progress bar) goes where it always goes."""

    def __init__(self, engine: Engine, log: TextIO) -> None:
        self._engine = engine
        self._log = log
        self.name = engine.name

    @property
    def tokenizer(self) -> Any:
        return self._engine.tokenizer

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> Iterator[tuple[int, Generation]]:
        generations = self._engine.generate(prompts, settings)
        while True:
            with _output_to(self._log):
                item = next(generations, None)
            if item is None:
                return
            yield item

    def force_verdict(self, prompts: Sequence[str], true_id: int, false_id: int) -> list[VerdictLogprobs]:
        with _output_to(self._log):
            return self._engine.force_verdict(prompts, true_id, false_id)

    def close(self) -> None:
        with _output_to(self._log):
            self._engine.close()


class Rank1:
    """A rank1 model, loaded once (its engine on the first pair the store does not have).

    model: an alias (`rank1 models`), a Hugging Face id or a local folder. backend: "vllm",
    "transformers", "openai" or "ray"; the backend's own options as keywords (tensor_parallel=2,
    device="cuda:1", base_urls=(...), replicas=4), checked now. prompt: a dataset prompt name (e.g.
    "SciFact") or a template file. store: a path, "default" (as the command line) or None (no
    store: nothing reused or kept). Defaults are the paper's settings. verbose: let the engine
    libraries print to the terminal (progress bars while loading, their warnings); otherwise what
    they print goes to `engine_log`, a temporary file deleted by close() unless an engine failure
    names it.
    """

    def __init__(self, model: str = "rank1-7b", backend: str = "vllm", *, dtype: str | None = None,
                 max_model_len: int = 16000, max_reasoning_tokens: int = 8192, prompt: str | None = None,
                 store: str | os.PathLike | None = DEFAULT_STORE, chunk_size: int = 256, recompute: bool = False,
                 verbose: bool = False, **backend_options: Any) -> None:
        self.options = RerankOptions(model=model, backend=backend, dtype=dtype, max_model_len=max_model_len,
                                     max_reasoning_tokens=max_reasoning_tokens, prompt=prompt,
                                     chunk_size=chunk_size, engine_options=engine_options(backend, **backend_options))
        check_options(self.options)
        self.template = prompts.resolve_template(prompt)
        resolved = resolve_model(model)
        # The store is checked before the tokenizer loads: a store that cannot be written fails first.
        self.store = None if store is None else Store(store_path(None if store == DEFAULT_STORE else store))
        self.engine_log: Path | None = None
        self._log_file: TextIO | None = None       # the engine log, opened once for every call that writes it
        self._keep_engine_log = False
        if not verbose:
            fd, name = tempfile.mkstemp(prefix="rank1-engine-", suffix=".log")
            self.engine_log = Path(name)
            self._log_file = os.fdopen(fd, "a", encoding="utf-8", errors="replace")
        try:
            with _output_to(self._log_file):
                self.scoring = load_scoring_model(resolved, backend, self.options.engine_options, dtype=dtype,
                                                  max_model_len=max_model_len,
                                                  max_reasoning_tokens=max_reasoning_tokens, store=self.store)
        except BaseException:
            if self.store is not None:
                self.store.close()
            self._remove_engine_log()
            raise
        self.scorer = Scorer(self.scoring.key, self.scoring.tokens, self._start_engine, store=self.store,
                             chunk_size=chunk_size, recompute=recompute)

    def _start_engine(self) -> Engine:
        with _output_to(self._log_file):
            engine = load_engine(self.scoring.backend, self.scoring.engine_config, self.scoring.engine_options)
        return engine if self._log_file is None else _EngineOutputToLog(engine, self._log_file)

    @contextlib.contextmanager
    def _engine_log_named(self) -> Iterator[None]:
        """An engine failure's message names the engine log, which is then kept."""
        try:
            yield
        except EngineFailure as exc:
            if self.engine_log is None:
                raise
            self._keep_engine_log = True
            raise EngineFailure(f"{exc} The engine's own log: {self.engine_log}") from exc

    def _remove_engine_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
        if self.engine_log is not None and not self._keep_engine_log:
            with contextlib.suppress(OSError):
                self.engine_log.unlink()

    def score(self, pairs: Iterable[tuple[str, str] | tuple[str, str, str | None]],
              progress: ProgressReporter | None = None, *, prompt: str | None = None) -> list[Judgement]:
        """A judgement per (query, passage) or (query, passage, instruction), in order.

        Each has .score (P(true) over {true, false}), .verdict, .reasoning, .completion
        ("stop", "forced" or "fallback"), .logprob_true/.logprob_false, .output_tokens and .origin.
        `prompt` (a dataset prompt name or file) replaces the model's own for these pairs.
        A pair that is not strings in that shape raises InputError naming it, before any engine starts.
        """
        return self.judge([fit.prompt for fit in self.prompts_for(pairs, prompt=prompt)], progress)

    def prompts_for(self, pairs: Iterable[tuple[str, str] | tuple[str, str, str | None]], *,
                    prompt: str | None = None) -> list[FittedPrompt]:
        """The prompts `score` judges for these pairs (.prompt, .tokens, .truncated: a passage cut to
        fit the context), with no engine; InputError as `score`. With `judge`, pairs of several
        prompts and callers are judged in one engine batch."""
        checked = checked_pairs(pairs)
        template = prompts.resolve_template(prompt) if prompt else self.template
        queries = [prompts.rank1_query(query, instruction, template) for query, _, instruction in checked]
        passages = [passage for _, passage, _ in checked]
        return fit_prompts(self.scoring.tokenizer, queries, passages, self.scoring.budget.prompt_tokens)

    def judge(self, prompt_list: Sequence[str], progress: ProgressReporter | None = None) -> list[Judgement]:
        """A judgement per prompt of `prompts_for`, in order; identical prompts are judged once, and
        every judgement is committed to the store before this returns."""
        with self._engine_log_named():
            return self.scorer.judge(prompt_list, progress)

    def rerank(self, query: str, documents: Mapping[str, str] | Sequence[str], *,
               instruction: str | None = None) -> list[tuple[str | int, Judgement]]:
        """The documents (a docid -> text mapping, or a list: ids are positions) by descending
        score; ties keep the given order. A text that is not a string raises InputError naming it."""
        items = checked_documents(query, documents, instruction)
        judgements = self.score([(query, text, instruction) for _, text in items])
        order = sorted(range(len(items)), key=lambda i: -judgements[i].score)
        return [(items[i][0], judgements[i]) for i in order]

    def rerank_run(self, run: str | os.PathLike, *, dataset: str | None = None, corpus: str | None = None,
                   queries: str | None = None, top_k: int = 100, keep_tail: bool = True, missing: str = "error",
                   instructions: str | None = None, shard: str | None = None, reason_top: int | None = None,
                   early_exit: Sequence[int] | None = None, confidence: float = DEFAULT_CONFIDENCE,
                   progress: ProgressReporter | None = None) -> RerankResult:
        """What `rank1 rerank` does with a TREC run, with this model: `.ranking` (qid -> [(docid,
        score)] in the new order; write it with `rank1_cli.io.trec.write_run`) and `.traces`.
        `reason_top`: the cascade of `rank1 rerank --reason-top`; `early_exit` (budgets ending at
        the model's reasoning budget) and `confidence`: `rank1 rerank --early-exit`."""
        options = dataclasses.replace(self.options, top_k=top_k, keep_tail=keep_tail, missing=missing,
                                      instructions=instructions, shard=shard, reason_top=reason_top,
                                      early_exit=tuple(early_exit) if early_exit else None, confidence=confidence)
        prepared = prepare_rerank(str(run), CollectionSource(dataset=dataset, corpus=corpus, queries=queries), options,
                                  self.scoring)
        with self._engine_log_named():
            return execute_rerank(prepared, self.scorer, progress)

    def close(self) -> None:
        """Stop the engine, close the store and delete the engine log (unless a failure named it)."""
        try:
            self.scorer.close()
        finally:
            if self.store is not None:
                self.store.close()
            self._remove_engine_log()

    def __enter__(self) -> "Rank1":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
