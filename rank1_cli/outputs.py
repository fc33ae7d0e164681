"""Guards for the files rank1 writes: it never writes to a path it reads, never replaces a file
it did not write, and never loses the reasoning in a traces file it replaces."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError, OptionError
from .textio import STDIO
from .traces import is_traces_file

if TYPE_CHECKING:
    from .store import GenerationKey, Store
    from .store_admin import ImportReport


def _same_file(a: str, b: str) -> bool:
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        try:
            return os.path.samefile(pa, pb)
        except OSError:
            pass
    return pa.resolve() == pb.resolve()


def check_outputs(outputs: Iterable[tuple[str, str | None]], inputs: Iterable[tuple[str, str | None]]) -> None:
    """Refuse an output that is also an input, or two outputs that are one file.

    `outputs` and `inputs` are (what it is, path) pairs; None and '-' are skipped.
    """
    outs = [(what, str(p)) for what, p in outputs if p is not None and str(p) != STDIO]
    ins = [(what, str(p)) for what, p in inputs if p is not None and str(p) != STDIO]
    for what, path in outs:
        for role, source in ins:
            if _same_file(path, source):
                raise InputError(f"{path}: the {what} would overwrite the {role}, which this command reads; "
                                 "rank1 never writes to a file it reads, so choose another path")
    for i, (what, path) in enumerate(outs):
        for other, other_path in outs[i + 1:]:
            if _same_file(path, other_path):
                raise InputError(f"{path}: named both as the {what} and as the {other}; give them different paths")


RUN_SUFFIXES = (".trec", ".run", ".txt", ".tsv", ".res")


def default_traces(output: str) -> str | None:
    """The traces file that goes with run file `output` (None for stdout): its name with
    .traces.jsonl in place of a .gz and a run suffix (RUN_SUFFIXES).

    Any other suffix is kept: it may be all that tells two runs apart (rank1.trec.1, rank1.trec.2
    of a job array; rank1.dl19, rank1.dl20), and they must not share one traces file."""
    if output == STDIO:
        return None
    path = Path(output)
    if path.name in ("", ".", ".."):
        raise InputError(f"{output}: a folder, not a run file; give the traces with --traces")
    name = path.name.removesuffix(".gz")
    stem, _, suffix = name.rpartition(".")
    if stem and f".{suffix.lower()}" in RUN_SUFFIXES:
        name = stem
    return str(path.with_name(name + ".traces.jsonl"))


def check_traces_target(path: str | None) -> None:
    """A traces output may replace an earlier traces file, never any other file."""
    if path is None or path == STDIO:
        return
    p = Path(path)
    if p.is_file() and not is_traces_file(p):
        raise InputError(f"{path}: exists and is not a rank1 traces file; it is left as it is. Choose another "
                         "path for the traces, or move that file away")


def keep_replaced_traces(path: str | None, store: Store | None,
                         rewritten: Callable[[], Collection[tuple[GenerationKey, str]]]) -> ImportReport | None:
    """Before a rerank replaces the rank1 traces at `path` (the only copy of their reasoning, maybe):
    import them into the open `store` as `rank1 store import` does (generations stored already are
    kept as they are). With no store, every generation there must be one the rerank writes again
    (`rewritten()`: (configuration, prompt sha256), asked only then). Else InputError, saying how
    to keep them."""
    if path is None or path == STDIO or not Path(path).is_file():
        return None
    from .store_admin import file_generations, import_into

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
    from .store_admin import file_generations, import_files

    try:
        if store is not None:
            return import_files([path], str(store))
        lost = sum((key, generation.prompt_sha256) not in rewritten
                   for key, generation in file_generations(path, None))
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
