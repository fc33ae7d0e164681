"""Evaluation measure names: trec_eval's names and families, and the names people write.

Pure parsing, no evaluator imported. `parse_measures(["nDCG@10", "map", "P.5,10"])` gives one
`Measure` per output column. Each keeps the spelling the user typed for display (`label`: "nDCG@10")
and says how to compute it: the trec_eval measure behind it (`name`: "ndcg_cut_10", the key
trec_eval prints), the pytrec_eval request (`request`: "ndcg_cut.10") or, for measures trec_eval 10.0
has but pytrec_eval lacks or computes differently (and for Judged@k, RR@k), `backend == "python"`.

Accepted:
  * trec_eval names, optionally with parameters: `map`, `ndcg_cut.10`, `P.5,10`, `recall.100`,
    `iprec_at_recall.0.1,0.5`, `utility.2,-1,0,0`, `ndcg.1=3,2=9`, `relstring.20`, `rbp.p=0.8`;
    the printed form with `_` works too (`ndcg_cut_10`, `P_5`, `iprec_at_recall_0.10`);
    case-insensitive (trec_eval's names do not collide when lower-cased).
  * families: `official` (what plain `trec_eval` prints), `all_trec` (what `-m all_trec` prints),
    `set` (trec_eval's set-based measures).
  * common spellings, case-insensitive: nDCG@k, nDCG, AP, MAP, AP@k, P@k, R@k, Recall@k, RR, MRR,
    RR@k, MRR@k, Success@k, IPrec@r, Judged@k, NumQ, NumRet, NumRel, NumRelRet.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import InputError

# Parameter styles of a family:
#   none  - no parameters
#   cut   - integer cutoffs (ranks), one output per cutoff: P_5, P_10
#   fcut  - fractional cutoffs, one output per cutoff: iprec_at_recall_0.10
#   raw   - a parameter string, one output named family_<params>: utility_2,-1,0,0
CUT_DEFAULT = (5, 10, 15, 20, 30, 100, 200, 500, 1000)
RECALL_POINTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True, slots=True)
class Family:
    """One trec_eval measure (or one we add), as trec_eval defines and prints it."""

    name: str
    description: str
    kind: str = "float"  # float (4 decimals) | int | str (runid) | quoted (relstring)
    aggregate: str = "mean"  # mean | sum | gmean | count (num_q) | runid | none (per query only)
    params: str = "none"  # none | cut | fcut | raw
    defaults: tuple = ()
    backend: str = "trec"  # trec: pytrec_eval computes it; python: computed in rank1_cli.evaluation.trec_eval
    per_query: bool = True  # printed per query by trec_eval -q
    trec: bool = True  # a trec_eval 10.0 measure (False: our own, e.g. Judged@k)


_FAMILY_LIST = (
    # In trec_eval 10.0's order (measures.c), which is the order `trec_eval -m all_trec` prints.
    Family("runid", "run tag (6th column of the run)", kind="str", aggregate="runid", per_query=False),
    Family("num_q", "number of queries evaluated", kind="int", aggregate="count", per_query=False),
    Family("num_ret", "documents retrieved (summed over queries)", kind="int", aggregate="sum"),
    Family("num_rel", "relevant documents in the qrels (summed)", kind="int", aggregate="sum"),
    Family("num_rel_ret", "relevant documents retrieved (summed)", kind="int", aggregate="sum"),
    Family("map", "mean average precision"),
    Family("gm_map", "geometric mean of AP (AP floored at 0.00001)", aggregate="gmean", per_query=False),
    Family("Rprec", "precision after R documents, R = number of relevant documents"),
    Family("bpref", "binary preference"),
    Family("recip_rank", "reciprocal rank of the first relevant document"),
    Family("iprec_at_recall", "interpolated precision at recall levels", params="fcut",
           defaults=RECALL_POINTS, backend="python"),
    Family("P", "precision at cutoffs", params="cut", defaults=CUT_DEFAULT),
    Family("relstring", "relevance grades of the top N documents as a string (per query only)",
           kind="quoted", aggregate="none", params="raw", backend="python"),
    Family("recall", "recall at cutoffs", params="cut", defaults=CUT_DEFAULT),
    Family("infAP", "inferred AP (grade -1 marks pooled but unjudged documents)"),
    Family("gm_bpref", "geometric mean of bpref", aggregate="gmean", per_query=False),
    Family("Rprec_mult", "precision after R*x documents", params="fcut",
           defaults=(0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0)),
    Family("utility", "utility a*relret + b*nonrelret + c*relnotret + d*nonrelnotret", params="raw"),
    Family("11pt_avg", "interpolated precision averaged over 11 recall points", params="raw",
           backend="python"),
    Family("binG", "binary gain (Sakai)"),
    Family("G", "gain (Sakai)"),
    Family("ndcg", "nDCG over the whole ranking (gains = grades, or ndcg.1=3,2=9)", params="raw"),
    Family("ndcg_rel", "nDCG averaged over relevant documents"),
    Family("Rndcg", "nDCG at R"),
    Family("ndcg_cut", "nDCG at cutoffs", params="cut", defaults=CUT_DEFAULT),
    Family("map_cut", "AP at cutoffs", params="cut", defaults=CUT_DEFAULT),
    Family("relative_P", "precision at cutoffs relative to the best possible", params="cut",
           defaults=CUT_DEFAULT),
    Family("success", "1 if a relevant document is in the top k", params="cut", defaults=(1, 5, 10)),
    Family("set_P", "precision of the whole retrieved set"),
    Family("set_relative_P", "relative precision of the retrieved set"),
    Family("set_recall", "recall of the whole retrieved set"),
    Family("set_map", "set precision times set recall"),
    Family("set_F", "F1 of the retrieved set"),
    Family("num_nonrel_judged_ret", "judged non-relevant documents retrieved (summed)", kind="int",
           aggregate="sum"),
    Family("rbp", "rank-biased precision (p=0.9, or rbp.p=0.8)", params="raw", backend="python"),
    Family("rbp_resid", "RBP residual: weight of unjudged and unretrieved ranks", backend="python"),
    Family("unj", "fraction of unjudged documents in the top k", params="cut", defaults=(5, 10, 20),
           backend="python"),
    # Not trec_eval measures: computed in Python on trec_eval's ranking.
    Family("Judged", "fraction of the top k with any qrels entry (ir_measures' Judged@k)",
           params="cut", backend="python", trec=False),
    Family("RR", "reciprocal rank of the first relevant document within the top k", params="cut",
           backend="python", trec=False),
)

FAMILIES: dict[str, Family] = {f.name: f for f in _FAMILY_LIST}
_TREC_FAMILIES_CI = {f.name.lower(): f for f in _FAMILY_LIST if f.trec}

# trec_eval 10.0's nicknames (measures.c).
OFFICIAL = ("runid", "num_q", "num_ret", "num_rel", "num_rel_ret", "map", "gm_map", "Rprec", "bpref",
            "recip_rank", "iprec_at_recall", "P")
ALL_TREC = tuple(f.name for f in _FAMILY_LIST if f.trec)
SET = ("runid", "num_q", "num_ret", "num_rel", "num_rel_ret", "utility", "set_P", "set_relative_P",
       "set_recall", "set_map", "set_F")
GROUPS: dict[str, tuple[str, ...]] = {"official": OFFICIAL, "all_trec": ALL_TREC, "set": SET}

DEFAULT_MEASURES = ("nDCG@10", "Judged@10")
"""A suggestion for the CLI when no measure is given."""


@dataclass(frozen=True, slots=True)
class Measure:
    """One output column: what the user asked for and how to compute it."""

    label: str  # what the user sees (the user's spelling, or trec_eval's printed name)
    name: str  # canonical key of the value: trec_eval's printed name ("ndcg_cut_10"), or "Judged@10"
    family: str  # Family.name
    param: int | float | str | None = None  # the cutoff, or the raw parameter string

    @property
    def spec(self) -> Family:
        return FAMILIES[self.family]

    @property
    def backend(self) -> str:
        return self.spec.backend

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def aggregate(self) -> str:
        return self.spec.aggregate

    @property
    def per_query(self) -> bool:
        """Has a value per query (trec_eval -q prints it)."""
        return self.spec.per_query

    @property
    def summary(self) -> bool:
        """Has a value for the whole run (trec_eval's `all` line)."""
        return self.spec.aggregate != "none"


# ---------------------------------------------------------------------------------------------
# Parameters


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"{what}: {text!r} is not a finite number")
    return value


def _cutoffs(family: str, params: str, original: str) -> tuple[int, ...]:
    values = set()
    for part in params.split(","):
        number = _number(part.strip(), f"measure {original!r}")
        cutoff = int(number)  # trec_eval reads cutoffs with atol: 23.4 -> 23
        if cutoff <= 0:
            raise InputError(f"measure {original!r}: cutoffs must be positive integers, found {part!r}")
        values.add(cutoff)
    return tuple(sorted(values))


def _fcutoffs(family: str, params: str, original: str) -> tuple[float, ...]:
    values = set()
    for part in params.split(","):
        value = _number(part.strip(), f"measure {original!r}")
        if value < 0:
            raise InputError(f"measure {original!r}: values must not be negative, found {part!r}")
        if family == "iprec_at_recall" and value > 1:
            raise InputError(f"measure {original!r}: recall levels lie in [0, 1], found {part!r}")
        values.add(value)
    return tuple(sorted(values))


def _check_raw(family: str, params: str, original: str) -> None:
    """Validate a raw parameter string the way trec_eval would read it (pytrec_eval is silent)."""
    parts = params.split(",")
    if family == "utility":
        if len(parts) != 4:
            raise InputError(f"measure {original!r}: utility takes 4 numbers a,b,c,d (utility.2,-1,0,0)")
        for part in parts:
            _number(part, f"measure {original!r}")
    elif family in ("ndcg", "rbp"):
        example = "ndcg.1=3,2=9" if family == "ndcg" else "rbp.p=0.8"
        for part in parts:
            key, sep, value = part.partition("=")
            if not sep:
                raise InputError(f"measure {original!r}: parameters are name=value pairs ({example})")
            _number(value, f"measure {original!r}")
            if family == "ndcg" and not re.fullmatch(r"[+-]?\d+", key):
                raise InputError(f"measure {original!r}: gains are grade=gain pairs ({example})")
            if family == "rbp":
                if key != "p":
                    raise InputError(f"measure {original!r}: rbp takes one parameter p ({example})")
                if not 0 < float(value) < 1:
                    raise InputError(f"measure {original!r}: rbp's p lies strictly between 0 and 1")
    elif family == "11pt_avg":
        _fcutoffs("11pt_avg", params, original)
    elif family == "relstring":
        if len(parts) != 1:
            raise InputError(f"measure {original!r}: relstring takes one length (relstring.20)")
        length = _number(parts[0], f"measure {original!r}")
        if length < 1:
            raise InputError(f"measure {original!r}: the length must be at least 1")


def rbp_p(param: str | None) -> float:
    """RBP's persistence from rbp's parameter string (trec_eval's default 0.9)."""
    if not param:
        return 0.9
    return float(param.partition("=")[2])


def pt_avg_points(param: str | None) -> tuple[float, ...]:
    """Recall levels of 11pt_avg (default the 11 points 0.0 .. 1.0)."""
    if not param:
        return RECALL_POINTS
    return tuple(sorted(float(p) for p in param.split(",")))


def relstring_length(param: str | None) -> int:
    return 10 if not param else int(float(param))


def format_fcut(value: float) -> str:
    return f"{value:.2f}"


def _family_measures(family: Family, params: str | None, original: str, label: str | None
                     ) -> list[Measure]:
    """The output columns of one family with (or without) parameters."""
    name = family.name
    if family.params == "none":
        if params is not None:
            raise InputError(f"measure {original!r}: {name} takes no parameters")
        return [Measure(label or name, name, name)]
    if family.params == "raw":
        if params is None:
            return [Measure(label or name, name, name)]
        _check_raw(name, params, original)
        printed = f"{name}_{params}"
        return [Measure(label or printed, printed, name, params)]
    if params is None:
        if not family.defaults:
            raise InputError(f"measure {original!r} needs a cutoff, e.g. {name}@10")
        values = family.defaults
    elif family.params == "cut":
        values = _cutoffs(name, params, original)
    else:
        values = _fcutoffs(name, params, original)
    out = []
    for value in values:
        if not family.trec:
            printed = f"{name}@{value}"
        elif family.params == "cut":
            printed = f"{name}_{value}"
        else:
            printed = f"{name}_{format_fcut(value)}"
        out.append(Measure(label if (label and len(values) == 1) else printed, printed, name, value))
    return out


# ---------------------------------------------------------------------------------------------
# Names people write


_ALIASES: tuple[tuple[re.Pattern[str], str, bool], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), family, takes_param)
    for pattern, family, takes_param in (
        (r"ndcg@(\d+)", "ndcg_cut", True),
        (r"m?ap@(\d+)", "map_cut", True),
        (r"m?ap", "map", False),
        (r"p@(\d+)", "P", True),
        (r"(?:r|recall)@(\d+)", "recall", True),
        (r"m?rr", "recip_rank", False),
        (r"m?rr@(\d+)", "RR", True),
        (r"success@(\d+)", "success", True),
        (r"iprec@([0-9.]+)", "iprec_at_recall", True),
        (r"judged@(\d+)", "Judged", True),
        (r"judged", "Judged", False),
        (r"unj@(\d+)", "unj", True),
        (r"numq", "num_q", False),
        (r"numret", "num_ret", False),
        (r"numrel", "num_rel", False),
        (r"numrelret", "num_rel_ret", False),
    )
)

ALIAS_HELP = ("nDCG@k, nDCG, AP, MAP, AP@k, P@k, R@k, Recall@k, RR, MRR, RR@k, MRR@k, Success@k, "
              "IPrec@r, Judged@k, Unj@k, NumQ, NumRet, NumRel, NumRelRet")


def known_names() -> str:
    """One paragraph listing what parse_measures accepts (for error messages and --help)."""
    trec = ", ".join(f.name for f in _FAMILY_LIST if f.trec)
    return (f"trec_eval measures (add .PARAMS, e.g. ndcg_cut.10, P.5,10): {trec}; "
            f"families: {', '.join(GROUPS)}; other names (case-insensitive): {ALIAS_HELP}")


_CUTOFF_ALIASES = {"ndcg", "ap", "map", "p", "r", "recall", "rr", "mrr", "success", "judged", "unj"}


def _unknown(original: str) -> InputError:
    prefix, at, cutoff = original.strip().partition("@")
    if at and prefix.lower() in _CUTOFF_ALIASES:
        return InputError(f"measure {original!r}: the cutoff after '@' must be a positive integer, "
                          f"e.g. {prefix}@10")
    if at and prefix.lower() == "iprec":
        return InputError(f"measure {original!r}: the recall level after '@' must be a number in "
                          f"[0, 1], e.g. IPrec@0.5")
    candidates = [f.name for f in _FAMILY_LIST if f.trec] + list(GROUPS) + [
        "nDCG@10", "AP", "MAP", "P@10", "R@100", "Recall@100", "RR", "MRR", "RR@10", "Judged@10"]
    close = difflib.get_close_matches(original, candidates, n=3, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in candidates}
        close = [lowered[c] for c in difflib.get_close_matches(original.lower(), list(lowered), n=3,
                                                               cutoff=0.6)]
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return InputError(f"unknown measure {original!r}.{hint} Known: {known_names()}")


def _parse_trec(text: str) -> tuple[Family, str | None, str] | None:
    """`name`, `name.params` or `name_params` (trec_eval's printed form) -> (family, params, name
    as typed)."""
    base, dot, params = text.partition(".")
    family = _TREC_FAMILIES_CI.get(base.lower())
    if family is not None:
        return family, (params if dot else None), base
    lowered = text.lower()
    for name in sorted(_TREC_FAMILIES_CI, key=len, reverse=True):
        if lowered.startswith(name + "_"):
            rest = text[len(name) + 1:]
            if rest and (rest[0].isdigit() or rest[0] in ".-+"):
                return _TREC_FAMILIES_CI[name], rest, text[:len(name)]
    return None


def parse_measure(text: str) -> list[Measure]:
    """One name as typed -> its output columns. Raises InputError for unknown names."""
    original = text
    text = text.strip()
    if not text:
        raise InputError("empty measure name")
    group = GROUPS.get(text.lower())
    if group is not None:
        return [m for name in group for m in _family_measures(FAMILIES[name], None, original, None)]
    parsed = _parse_trec(text)
    if parsed is not None:
        family, params, typed = parsed
        if params is not None and not params:
            raise InputError(f"measure {original!r}: empty parameter list after '.'")
        # trec_eval's spelling shows trec_eval's printed names; another spelling is kept as typed
        return _family_measures(family, params, original, None if typed == family.name else text)
    for pattern, family_name, takes_param in _ALIASES:
        match = pattern.fullmatch(text)
        if match:
            return _family_measures(FAMILIES[family_name], match.group(1) if takes_param else None,
                                    original, text)
    raise _unknown(original)


def split_measure_list(text: str) -> list[str]:
    """Split a comma-separated list of names, keeping trec_eval parameter lists together.

    "nDCG@10,P.5,10,map" -> ["nDCG@10", "P.5,10", "map"]: a piece that starts like a number
    (digit, '.', '-', '+') continues the parameters of the name before it.
    """
    out: list[str] = []
    for piece in text.split(","):
        piece = piece.strip()
        continues = piece[:1].isdigit() or piece[:1] in (".", "-", "+")
        if out and piece and continues and ("." in out[-1] or "_" in out[-1]):
            out[-1] = f"{out[-1]},{piece}"
        elif piece:
            out.append(piece)
    return out


def parse_measures(names: Iterable[str]) -> list[Measure]:
    """Names as typed (each may be a comma-separated list) -> output columns, duplicates removed.

    Order: as given, families expanded in trec_eval's order. Raises InputError (listing the known
    names) for anything unknown, and for two different parameter strings of one trec_eval measure
    that takes a parameter string (ndcg, utility: trec_eval computes one of each per run).
    """
    out: list[Measure] = []
    seen: set[str] = set()
    raw_params: dict[str, str | None] = {}
    for item in names:
        for text in split_measure_list(item):
            for measure in parse_measure(text):
                family = measure.spec
                if family.params == "raw" and family.backend == "trec":
                    previous = raw_params.setdefault(family.name, measure.param)  # type: ignore[arg-type]
                    if previous != measure.param:
                        raise InputError(
                            f"measure {text!r}: {family.name} can be computed with one parameter "
                            f"string per evaluation, already have {previous or 'the default'!r}")
                if measure.label in seen:
                    continue
                seen.add(measure.label)
                out.append(measure)
    if not out:
        raise InputError(f"no measure given. Known: {known_names()}")
    return out


def pytrec_requests(measures: Sequence[Measure]) -> set[str]:
    """The measure strings to give pytrec_eval for the `trec`-backend measures (merged cutoffs)."""
    cuts: dict[str, set] = {}
    plain: set[str] = set()
    for m in measures:
        family = m.spec
        if family.backend != "trec" or family.name in ("num_q", "runid"):
            continue
        if family.params in ("cut", "fcut"):
            cuts.setdefault(family.name, set()).add(m.param)
        elif family.params == "raw" and m.param is not None:
            plain.add(f"{family.name}.{m.param}")
        else:
            plain.add(family.name)
    for name, values in cuts.items():
        plain.add(f"{name}." + ",".join(repr(v) if isinstance(v, float) else str(v) for v in sorted(values)))
    return plain


def pytrec_key(measure: Measure) -> str:
    """The key pytrec_eval returns for a `trec`-backend measure (raw parameters are not in it)."""
    return measure.family if measure.spec.params == "raw" else measure.name
