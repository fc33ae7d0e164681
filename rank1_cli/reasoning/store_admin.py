"""`rank1 store`: what the store holds, importing traces into it, exporting and pruning it."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import InputError, OptionError
from ..io.text import STDIO, atomic_writer, check_stdin_once, display_name, iter_lines
from .models import model_revision, resolve_model
from .scoring import relevance_score
from .store import COMPLETIONS, GenerationKey, Store, StoredGeneration, store_path

IMPORT_BATCH = 1000
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _open(path: str | None, create: bool = True, write: bool = True) -> Store:
    return Store(store_path(path), create=create, write=write)


def check_store(path: str | None) -> None:
    """Open the store for writing and close it: for a command that writes other files before the
    store, so that a store it cannot use stops it before anything is written. A store made only for
    the check is removed again, so a command refused later leaves no file behind."""
    target = store_path(path)
    existed = target.exists()
    _open(path).close()
    if not existed:
        target.unlink(missing_ok=True)


def print_info(path: str | None, output_format: str, out: IO[str]) -> None:
    with _open(path, create=False, write=False) as store:
        info = store.info()
    if output_format == "json":
        out.write(json.dumps({"path": info.path, "bytes": info.bytes, "generations": info.generations,
                              "configurations": [{"model": c.model, **c.identity, "generations": c.generations,
                                                  "pending": c.pending} for c in info.configs]}, indent=2) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    from ..console import print_table

    per_pair = info.bytes / info.generations if info.generations else 0
    table = Table("model", "revision", "engine", "dtype", "reasoning", "context", "generations", "pending",
                  title=f"{info.path}: {info.bytes / 1e6:.1f} MB, {info.generations} generations "
                        f"({per_pair / 1e3:.1f} kB each)")
    for c in info.configs:
        table.add_row(c.model, str(c.identity["model_revision"])[:19], c.identity["engine"], c.identity["dtype"],
                      str(c.identity["max_reasoning_tokens"]), str(c.identity["max_model_len"]), str(c.generations),
                      str(c.pending))
    print_table(Console(file=out), table)


def export_store(path: str | None, output: str) -> int:
    count = 0
    with _open(path, create=False, write=False) as store, atomic_writer(output) as out:
        for record in store.export():
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def prune_store(path: str | None, model: str) -> int:
    with _open(path, create=False) as store:
        known = store.models()
        if model not in known:
            shown = ", ".join(known)[:300] or "none"
            raise InputError(f"the store {store.path} holds no generations of {model!r} (its models: {shown})")
        return store.prune(model)


@dataclass(slots=True)
class ImportReport:
    store: str
    lines: int = 0
    added: int = 0
    already: int = 0


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError
    return float(value)


def record_generation(record: dict[str, Any], fallback_key: GenerationKey | None) -> tuple[GenerationKey, StoredGeneration]:
    """The store key and generation of one traces or export line; ValueError says what is wrong."""
    sha = record.get("prompt_sha256")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise ValueError("prompt_sha256 must be 64 lowercase hex digits")
    settings = record.get("settings")
    if not isinstance(settings, dict):
        raise ValueError("no settings object")
    if "model_revision" in settings and "engine" in settings:
        try:
            key = GenerationKey.from_settings(settings)
        except (KeyError, ValueError, TypeError):
            raise ValueError("incomplete settings (model, model_revision, engine, dtype, max_reasoning_tokens, "
                             "max_model_len)") from None
    elif fallback_key is not None:
        try:
            key = GenerationKey(fallback_key.model, fallback_key.model_revision, fallback_key.engine,
                                str(settings["dtype"]), int(settings["max_reasoning_tokens"]),
                                int(settings["max_model_len"]))
        except (KeyError, ValueError, TypeError):
            raise ValueError("settings lack dtype, max_reasoning_tokens or max_model_len") from None
    else:
        raise ValueError("the settings do not say which model revision and engine made it (traces of an older "
                         "rank1-cli): name the model they were made with ({model})")
    completion = record.get("completion")
    if completion not in COMPLETIONS:
        raise ValueError(f"completion must be one of {', '.join(COMPLETIONS)}")
    verdict = record.get("verdict")
    if verdict not in ("true", "false", None):
        raise ValueError("verdict must be true, false or null")
    reasoning = record.get("reasoning")
    tokens = record.get("output_tokens")
    if not isinstance(reasoning, str) or not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
        raise ValueError("reasoning must be a string and output_tokens a count")
    try:
        lt, lf = _number(record.get("logprob_true")), _number(record.get("logprob_false"))
    except ValueError:
        raise ValueError("logprob_true and logprob_false must be numbers or null") from None
    if completion in ("stop", "forced"):
        if lt is None or lf is None or verdict is None:
            raise ValueError(f"a {completion} completion needs both logprobs and a verdict")
        score = record.get("score")
        if score is not None and (not isinstance(score, (int, float)) or abs(score - relevance_score(lt, lf)) > 1e-6):
            raise ValueError(f"score {str(score)[:30]} does not follow from its logprobs")
    token_ids = record.get("token_ids")
    if token_ids is not None:
        if not isinstance(token_ids, list) or not all(isinstance(t, int) and 0 <= t < 2**32 for t in token_ids):
            raise ValueError("token_ids must be a list of token ids")
        token_ids = tuple(token_ids)
    return key, StoredGeneration(sha, completion, verdict, lt, lf, tokens, reasoning, token_ids)


def trace_line_generation(record: Any, where: str, fallback_key: GenerationKey | None
                          ) -> tuple[GenerationKey, StoredGeneration]:
    """`record_generation` of one parsed line, as `rank1 store import` checks it; the error names
    `where` (file:line)."""
    try:
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        return record_generation(record, fallback_key)
    except ValueError as exc:
        raise OptionError(f"{where}: not a rank1 trace: {exc}") from None


def file_generations(file: str, fallback_key: GenerationKey | None
                     ) -> Iterator[tuple[GenerationKey, StoredGeneration]]:
    """Each line of a traces or export file, checked as `rank1 store import` checks it."""
    name = display_name(file)
    for lineno, line in iter_lines(file):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{name}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        yield trace_line_generation(record, f"{name}:{lineno}", fallback_key)


def import_files(files: list[str], path: str | None, *, model: str | None = None, backend: str = "vllm") -> ImportReport:
    """Check the store, then every line of every file, then store them (nothing is stored from a
    bad file)."""
    check_stdin_once(files)
    resolved = resolve_model(model) if model is not None else None
    with _open(path) as store:
        fallback = None
        if resolved is not None:
            fallback = GenerationKey(resolved.spec, model_revision(resolved, store), backend, "", 0, 0)
        return import_into(store, files, fallback)


def import_into(store: Store, files: list[str], fallback: GenerationKey | None = None) -> ImportReport:
    """Every line of `files` into an open store, checked first (nothing is stored from a bad file)."""
    batches: dict[GenerationKey, list[StoredGeneration]] = {}
    lines = 0
    for file in files:
        for key, generation in file_generations(file, fallback):
            batches.setdefault(key, []).append(generation)
            lines += 1
    report = ImportReport(str(store.path), lines)
    for key, generations in batches.items():
        for start in range(0, len(generations), IMPORT_BATCH):
            report.added += store.put_many(key, generations[start:start + IMPORT_BATCH])
    report.already = lines - report.added
    return report


def keep_replaced_traces(path: str | None, store: Store | None,
                         rewritten: Callable[[], Collection[tuple[GenerationKey, str]]]) -> ImportReport | None:
    """Before a rerank replaces the rank1 traces at `path` (the only copy of their reasoning, maybe):
    import them into the open `store` as `rank1 store import` does (generations stored already are
    kept as they are). With no store, every generation there must be one the rerank writes again
    (`rewritten()`: (configuration, prompt sha256), asked only then). Else InputError, saying how
    to keep them."""
    if path is None or path == STDIO or not Path(path).is_file():
        return None
    try:
        if store is not None:
            return import_into(store, [path])
        written = rewritten()
        lost = sum((key, generation.prompt_sha256) not in written for key, generation in file_generations(path, None))
    except InputError as exc:
        reason = exc.for_command_line() if isinstance(exc, OptionError) else str(exc)
        raise InputError(f"{path} holds rank1 traces that this rerank would replace, and they cannot be imported "
                         f"into a store ({reason}). To keep them: import them with `rank1 store import {path} "
                         "--model M` (M: the model that made them) and move the file away, or name another "
                         "--traces") from None
    if lost:
        raise InputError(f"{path} holds {lost} generations of rank1 traces that this rerank would replace and not "
                         "write again; with --no-store they would be lost. To keep them: rerank with a store "
                         f"(without --no-store: they are imported into it first), move {path} away, or name "
                         "another --traces")
    return None
