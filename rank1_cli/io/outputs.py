"""Guards for the files rank1 writes: it never writes to a path it reads and never replaces a file
it did not write. (Keeping the reasoning of a traces file it replaces needs the store:
`rank1_cli.reasoning.store_admin.keep_replaced_traces`.)"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import InputError
from .text import STDIO
from .traces import is_traces_file


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
