"""Compare runs with a baseline: per measure, the mean, the difference, a paired significance test
corrected for multiple testing over every (run, measure), a confidence interval of the mean
difference and win/tie/loss counts (`rank1 compare`).

Per-query values come from `evaluate.evaluate_run`, the evaluator of `rank1 eval`, with trec_eval's
-c semantics: every query of the qrels counts, and one missing from a run is an empty ranking (0).
Without it a paired test would pair different sets of queries.

Entry points: `compare_runs` (read runs, evaluate, compare), `compare_evaluations` (evaluations
already made), `write_comparison` with the formats of `FORMATS`.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import IO

from ..errors import InputError, OptionError
from .calibration import DEFAULT_BINS, Reliability, reliability
from .measures import Measure, parse_measures
from .significance import (
    CORRECTIONS,
    DEFAULT_ROUNDS,
    DEFAULT_SEED,
    DEFAULT_WILCOXON_METHOD,
    EFFECT_SIZE,
    TESTS,
    WILCOXON_METHODS,
    choose,
    cohens_dz,
    confidence_interval,
    wins_ties_losses,
)
from .trec_eval import RunEvaluation, evaluate_run, excluded_note, short_names

log = logging.getLogger(__name__)

DEFAULT_ALPHA = 0.05
MISSING_AS_ZERO = "every query of the qrels counts; a query missing from a run counts as 0 (trec_eval -c)"


@dataclass(frozen=True, slots=True)
class ComparisonRow:
    """One run against the baseline on one measure."""

    run: str
    measure: str  # the measure's label, as the user wrote it
    mean: float
    baseline_mean: float
    delta: float  # mean - baseline_mean
    p_value: float
    p_method: str  # how p_value was found: "exact", "normal approximation", "t distribution", ...
    p_adjusted: float  # after the correction over every (run, measure) of the comparison
    significant: bool  # p_adjusted < alpha
    wins: int  # queries where the run is above the baseline
    ties: int
    losses: int
    ci_low: float  # confidence interval (1 - alpha) of the mean per-query difference
    ci_high: float
    effect_size: float | None = None  # significance.cohens_dz of the per-query values; None: undefined


@dataclass(frozen=True, slots=True)
class Comparison:
    baseline: str
    runs: list[str]
    measures: list[str]  # labels, in the order asked
    queries: list[str]  # every query of the qrels, in trec_eval's order
    baseline_means: dict[str, float]  # measure -> mean
    per_query: dict[str, dict[str, list[float]]]  # run (baseline too) -> measure -> values in `queries` order
    rows: list[ComparisonRow]  # for each run, each measure
    test: str
    correction: str
    alpha: float
    rounds: int
    seed: int
    wilcoxon_method: str
    missing: dict[str, int]  # run (baseline too) -> queries of the qrels it lacks, counted as 0
    excluded: dict[str, int]  # run (baseline too) -> documents graded -100 removed from it
    keep_excluded: bool
    calibration: dict[str, Reliability] = field(default_factory=dict)  # run -> its traced scores' calibration

    @property
    def confidence(self) -> float:
        return 1 - self.alpha

    def row(self, run: str, measure: str) -> ComparisonRow:
        for row in self.rows:
            if row.run == run and row.measure == measure:
                return row
        raise KeyError((run, measure))


def comparable_measures(measures: Sequence[Measure]) -> list[Measure]:
    """The measures averaged over queries; the others (runid, num_q, counts, gm_map, relstring) are
    left out with a warning, and an error if none is left."""
    kept = [m for m in measures if m.aggregate == "mean"]
    dropped = [m.label for m in measures if m.aggregate != "mean"]
    if not kept:
        raise InputError(f"no measure to compare: {', '.join(dropped)} {'is' if len(dropped) == 1 else 'are'} not "
                         "averaged over queries; "
                         "give measures such as nDCG@10, AP, P@5, R@100")
    if dropped:
        log.warning("not compared (not means over queries): %s", ", ".join(dropped))
    return kept


def check_options(test: str, correction: str, alpha: float, rounds: int,
                  wilcoxon_method: str = DEFAULT_WILCOXON_METHOD) -> None:
    choose(TESTS, test, "test")
    choose(CORRECTIONS, correction, "correction")
    choose(WILCOXON_METHODS, wilcoxon_method, "wilcoxon_method")
    if not 0 < alpha < 1:
        raise OptionError(f"{{alpha:{alpha}}} must lie strictly between 0 and 1")
    if rounds < 1:
        raise OptionError(f"{{rounds:{rounds}}} must be at least 1")


def _check_runs(names: Sequence[str]) -> None:
    """The baseline's and the runs' names: at least one run, none given twice."""
    if len(names) < 2:
        raise InputError("give at least one run to compare with the baseline")
    twice = [name for name in names if names.count(name) > 1]
    if twice:
        raise InputError(f"the run {twice[0]!r} is given twice; compare each run once")


def compare_evaluations(baseline: RunEvaluation, runs: Sequence[RunEvaluation], *, test: str = "t",
                        correction: str = "holm", alpha: float = DEFAULT_ALPHA, rounds: int = DEFAULT_ROUNDS,
                        seed: int = DEFAULT_SEED, wilcoxon_method: str = DEFAULT_WILCOXON_METHOD,
                        missing: Mapping[str, int] | None = None, keep_excluded: bool = False) -> Comparison:
    """Compare evaluations made with `evaluate_run(..., complete=True)` on the same qrels and measures.

    The correction runs over every (run, measure) pair; `missing` (run name -> queries the run
    lacked) is only recorded for the output.
    """
    check_options(test, correction, alpha, rounds, wilcoxon_method)
    names = [baseline.name, *(ev.name for ev in runs)]
    _check_runs(names)
    measures = comparable_measures(baseline.measures)
    queries = baseline.queries
    for ev in runs:
        if ev.queries != queries or [m.label for m in ev.measures] != [m.label for m in baseline.measures]:
            raise InputError(f"{ev.name}: evaluated on other queries or measures than the baseline; evaluate "
                             "every run with the same qrels, measures and complete=True")
    if len(queries) < 2:
        raise InputError(f"the qrels have {len(queries)} judged queries; a paired test needs at least 2")

    def values(ev: RunEvaluation, m: Measure) -> list[float]:
        return [float(ev.per_query[q][m.name]) for q in queries]

    per_query = {ev.name: {m.label: values(ev, m) for m in measures} for ev in (baseline, *runs)}
    chosen = TESTS[test]
    base = per_query[baseline.name]
    p_values = []
    cells = []
    for ev in runs:
        for m in measures:
            run_values = per_query[ev.name][m.label]
            p_values.append(chosen.p_value(run_values, base[m.label], rounds=rounds, seed=seed,
                                           wilcoxon_method=wilcoxon_method))
            cells.append((ev, m, run_values))
    adjusted = CORRECTIONS[correction].function([p.value for p in p_values])
    rows = []
    for (ev, m, run_values), p, p_adj in zip(cells, p_values, adjusted):
        mean = float(ev.summary[m.name])
        baseline_mean = float(baseline.summary[m.name])
        wins, ties, losses = wins_ties_losses(run_values, base[m.label])
        low, high = confidence_interval(run_values, base[m.label], 1 - alpha)
        rows.append(ComparisonRow(run=ev.name, measure=m.label, mean=mean, baseline_mean=baseline_mean,
                                  delta=mean - baseline_mean, p_value=p.value, p_method=p.method, p_adjusted=p_adj,
                                  significant=p_adj < alpha,
                                  wins=wins, ties=ties, losses=losses, ci_low=low, ci_high=high,
                                  effect_size=cohens_dz(run_values, base[m.label])))
    return Comparison(
        baseline=baseline.name, runs=[ev.name for ev in runs], measures=[m.label for m in measures], queries=queries,
        baseline_means={m.label: float(baseline.summary[m.name]) for m in measures}, per_query=per_query,
        rows=rows, test=test, correction=correction, alpha=alpha, rounds=rounds, seed=seed,
        wilcoxon_method=wilcoxon_method, missing={name: (missing or {}).get(name, 0) for name in names},
        excluded={ev.name: ev.excluded for ev in (baseline, *runs)}, keep_excluded=keep_excluded)


def scored_pairs_calibration(pairs: Iterable[tuple[str, str, float | None]], qrels: Mapping[str, Mapping[str, int]],
                             relevance_level: int = 1, bins: int = DEFAULT_BINS, name: str = "traces"
                             ) -> Reliability | None:
    """The calibration (`calibration.reliability`) of scores read as probabilities of relevance:
    every (qid, docid, score) with a score (a fallback has none) that the qrels grade 0 or more,
    relevant when its grade is at least `relevance_level`. Unjudged pairs and negative grades
    (-100: excluded) are left out; None when no pair is left. InputError for a score outside [0, 1]."""
    scores, labels = [], []
    for qid, docid, score in pairs:
        grade = qrels.get(qid, {}).get(docid)
        if score is None or grade is None or grade < 0:
            continue
        if not 0 <= score <= 1:
            raise InputError(f"{name}: the score {score:g} of {qid}/{docid} is not in [0, 1]; calibration reads "
                             "scores as probabilities (rank1's traces)")
        scores.append(score)
        labels.append(grade >= relevance_level)
    return reliability(scores, labels, bins) if scores else None


def _traces_calibration(path: str, run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
                        relevance_level: int, run_name: str) -> Reliability:
    from ..io.text import display_name
    from ..io.traces import read_traces

    name = display_name(path)
    traces = read_traces(path)
    stray = [t for t in traces if t.docid not in run.get(t.qid, {})]
    if stray:
        raise InputError(f"{name}: {len(stray)} traced pairs are not in the run {run_name} ({stray[0].qid}/"
                         f"{stray[0].docid}, ...); give each run's own traces, in the order of the runs")
    found = scored_pairs_calibration(((t.qid, t.docid, t.score) for t in traces), qrels, relevance_level, name=name)
    if found is None:
        raise InputError(f"{name}: no scored pair is judged by the qrels, nothing to calibrate")
    return found


def compare_runs(baseline: str | os.PathLike, runs: Sequence[str | os.PathLike], qrels: Mapping[str, Mapping[str, int]],
                 measures: Sequence[str] = ("nDCG@10",), *, test: str = "t", correction: str = "holm",
                 alpha: float = DEFAULT_ALPHA, rounds: int = DEFAULT_ROUNDS, seed: int = DEFAULT_SEED,
                 wilcoxon_method: str = DEFAULT_WILCOXON_METHOD, relevance_level: int = 1, judged_only: bool = False,
                 keep_excluded: bool = False, traces: Sequence[str | os.PathLike] | None = None) -> Comparison:
    """Read and evaluate the baseline and each run (TREC runs or MTEB predictions JSON, '-' and .gz
    as in `rank1 eval`) against qrels (qid -> docid -> grade), then compare them.

    test: a name of `significance.TESTS` (t, wilcoxon, permutation; rounds and seed are the
    permutation test's, wilcoxon_method, a name of `significance.WILCOXON_METHODS`, the Wilcoxon test's). correction: a name of `significance.CORRECTIONS` (holm, bonferroni, none),
    applied over every (run, measure). alpha: the level for `significant`, and 1 - alpha the
    confidence of the interval. Every query of the qrels counts; one missing from a run counts
    as 0. Documents graded -100 are removed first unless keep_excluded (see `evaluate.drop_excluded`).
    traces: one `rank1 rerank` traces file per run, in the order of the runs: each run's calibration
    (`scored_pairs_calibration` of its traced scores, relevant at `relevance_level`).
    """
    from ..io.text import check_stdin_once
    from ..io.trec import read_run_scores

    paths = [str(baseline), *map(str, runs)]
    trace_paths = [str(path) for path in traces or ()]
    check_stdin_once([*paths, *trace_paths])
    check_options(test, correction, alpha, rounds, wilcoxon_method)
    _check_runs(paths)
    if trace_paths and len(trace_paths) != len(runs):
        raise InputError(f"give one traces file per run, in the order of the runs: {len(runs)} runs, "
                         f"{len(trace_paths)} traces files")
    parsed = comparable_measures(parse_measures(measures))
    if not any(qrels.values()):
        raise InputError("the qrels are empty")
    evaluations = []
    missing = {}
    calibration = {}
    for i, path in enumerate(paths):
        run = read_run_scores(path)
        evaluation = evaluate_run(run, qrels, parsed, relevance_level=relevance_level, complete=True,
                                  judged_only=judged_only, keep_excluded=keep_excluded, name=path)
        missing[path] = sum(1 for qid in evaluation.queries if qid not in run)
        evaluations.append(evaluation)
        if trace_paths and i > 0:
            calibration[path] = _traces_calibration(trace_paths[i - 1], run, qrels, relevance_level, path)
        del run
    comparison = compare_evaluations(evaluations[0], evaluations[1:], test=test, correction=correction, alpha=alpha,
                                     rounds=rounds, seed=seed, wilcoxon_method=wilcoxon_method, missing=missing,
                                     keep_excluded=keep_excluded)
    return replace(comparison, calibration=calibration) if calibration else comparison


# ---------------------------------------------------------------------------------------------
# Output


def describe(comparison: Comparison) -> str:
    """What was tested, in words, for legends: test, correction, alpha."""
    test = TESTS[comparison.test]
    words = test.label + (f" ({comparison.rounds} rounds, seed {comparison.seed})" if test.randomised else "")
    correction = CORRECTIONS[comparison.correction]
    n = len(comparison.rows)
    words += f", {correction.label}" + (f" over {n} comparison{'s' if n > 1 else ''} (runs x measures)"
                                        if correction.name != "none" else "")
    return f"{words}, alpha = {comparison.alpha:g}"


def p_methods_note(comparison: Comparison) -> str:
    """How the p-values were found, with counts: 'p-values: exact for 2, normal approximation for 1.'"""
    counts = Counter(row.p_method for row in comparison.rows)
    setting = f" (--wilcoxon-method {comparison.wilcoxon_method})" if comparison.test == "wilcoxon" else ""
    return f"p-values: {', '.join(f'{method} for {n}' for method, n in counts.items())}{setting}."


def notes(comparison: Comparison) -> list[str]:
    """The lines under a comparison's table: queries, how the p-values were found, those missing
    from a run, -100 documents removed."""
    names = short_names([comparison.baseline, *comparison.runs])
    notes = [f"{len(comparison.queries)} queries; {MISSING_AS_ZERO}.", p_methods_note(comparison)]
    lacking = [f"{name} {comparison.missing[run]}" for name, run in zip(names, [comparison.baseline, *comparison.runs])
               if comparison.missing[run]]
    if lacking:
        notes.append("Queries missing (counted as 0): " + ", ".join(lacking) + ".")
    excluded = excluded_note(names, [comparison.excluded[run] for run in (comparison.baseline, *comparison.runs)])
    if excluded:
        notes.append(excluded)
    if comparison.calibration:
        by_name = dict(zip(comparison.runs, names[1:]))
        first = next(iter(comparison.calibration.values()))
        notes.append(f"Calibration of the traced scores against the qrels ({first.binning}): " + "; ".join(
            f"{by_name[run]} ECE {c.ece:.4f}, Brier {c.brier:.4f} ({c.pairs:,} judged pairs, {c.relevant:,} relevant)"
            for run, c in comparison.calibration.items()) + ".")
    return notes


def format_p(value: float) -> str:
    return f"{value:.4f}" if value >= 0.0001 else f"{value:.1e}"


def write_table(comparison: Comparison, out: IO[str]) -> None:
    """A rich table: the baseline's means, then a row per run and measure with the difference
    (* when significant), its confidence interval, the corrected p-value and wins/ties/losses."""
    from rich.console import Console
    from rich.table import Table

    from ..console import print_table

    runs = [comparison.baseline, *comparison.runs]
    names = dict(zip(runs, short_names(runs)))
    confidence = f"{comparison.confidence:.0%}".replace(".0%", "%")
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("run", overflow="fold", min_width=8)
    p_header = f"p ({comparison.correction})"
    for header in ("measure", "mean", "delta", f"{confidence} CI of delta", p_header, "W/T/L"):
        table.add_column(header, justify="left" if header == "measure" else "right", no_wrap=True)
    for i, measure in enumerate(comparison.measures):
        table.add_row(names[comparison.baseline] + " (baseline)" if i == 0 else "", measure,
                      f"{comparison.baseline_means[measure]:.4f}", end_section=i + 1 == len(comparison.measures))
    for i, row in enumerate(comparison.rows):
        first_of_run = i == 0 or comparison.rows[i - 1].run != row.run
        last_of_run = i + 1 == len(comparison.rows) or comparison.rows[i + 1].run != row.run
        table.add_row(names[row.run] if first_of_run else "", row.measure, f"{row.mean:.4f}",
                      f"{row.delta:+.4f}" + ("*" if row.significant else " "),
                      f"[{row.ci_low:+.3f}, {row.ci_high:+.3f}]", format_p(row.p_adjusted),
                      f"{row.wins}/{row.ties}/{row.losses}", end_section=last_of_run)
    console = Console(file=out)
    print_table(console, table, {p_header: "p"})
    for line in (f"* p < {comparison.alpha:g}: {describe(comparison)}.", *notes(comparison)):
        console.print(line, markup=False, highlight=False)


TSV_COLUMNS = ("run", "measure", "mean", "baseline_mean", "delta", "p_value", "p_adjusted", "significant",
               "wins", "ties", "losses", "ci_low", "ci_high", "p_method")


def write_tsv(comparison: Comparison, out: IO[str]) -> None:
    out.write("\t".join(TSV_COLUMNS) + "\n")
    for row in comparison.rows:
        values = asdict(row)
        out.write("\t".join(str(values[c]).lower() if c == "significant" else str(values[c]) for c in TSV_COLUMNS)
                  + "\n")


PER_QUERY_TSV_COLUMNS = ("run", "measure", "query", "value", "baseline_value", "delta", "effect_size", "p_value",
                         "p_adjusted", "significant")


def _cell(value: object) -> str:
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


def write_per_query_tsv(comparison: Comparison, out: IO[str]) -> None:
    """`--per-query`: a row per run, measure and query (the run's value, the baseline's, their
    difference), then, as trec_eval -q does, a row with the query `all`: the means, the effect
    size (significance.EFFECT_SIZE; empty when undefined) and the p-values. The per-query rows
    leave those last four cells empty."""
    out.write("\t".join(PER_QUERY_TSV_COLUMNS) + "\n")
    base = comparison.per_query[comparison.baseline]
    for row in comparison.rows:
        values = comparison.per_query[row.run][row.measure]
        for query, value, baseline_value in zip(comparison.queries, values, base[row.measure]):
            out.write("\t".join(map(_cell, (row.run, row.measure, query, value, baseline_value,
                                             value - baseline_value, None, None, None, None))) + "\n")
        out.write("\t".join(map(_cell, (row.run, row.measure, "all", row.mean, row.baseline_mean, row.delta,
                                         row.effect_size, row.p_value, row.p_adjusted, row.significant))) + "\n")


JSON_FIELDS = ("mean", "delta", "p_value", "p_method", "p_adjusted", "significant", "wins", "ties", "losses", "ci_low",
               "ci_high")


def to_json(comparison: Comparison, *, per_query: bool = False) -> dict:
    """A JSON-ready dict: the settings, the baseline's means, then per run and measure the fields
    of JSON_FIELDS, and each run's calibration when the comparison has it. per_query: each run's
    and the baseline's value per measure and query (query id -> value, in trec_eval's order), and
    per run and measure the effect size (`effect_size_formula` says which; null when undefined)."""
    fields = (*JSON_FIELDS, "effect_size") if per_query else JSON_FIELDS

    def by_query(run: str) -> dict[str, dict[str, float]]:
        return {measure: dict(zip(comparison.queries, values)) for measure, values in comparison.per_query[run].items()}

    runs = []
    for run in comparison.runs:
        entry = {"run": run, "missing_queries": comparison.missing[run], "excluded": comparison.excluded[run],
                 "measures": {row.measure: {f: getattr(row, f) for f in fields}
                              for row in comparison.rows if row.run == run}}
        if per_query:
            entry["per_query"] = by_query(run)
        if run in comparison.calibration:
            entry["calibration"] = comparison.calibration[run].to_json()
        runs.append(entry)
    baseline = {"run": comparison.baseline, "missing_queries": comparison.missing[comparison.baseline],
                "excluded": comparison.excluded[comparison.baseline], "measures": comparison.baseline_means}
    if per_query:
        baseline["per_query"] = by_query(comparison.baseline)
    settings = {"test": comparison.test, "correction": comparison.correction, "alpha": comparison.alpha,
                "confidence": comparison.confidence, "rounds": comparison.rounds, "seed": comparison.seed,
                "wilcoxon_method": comparison.wilcoxon_method, "queries": len(comparison.queries),
                "missing_queries_count_as": 0, "keep_excluded": comparison.keep_excluded}
    if per_query:
        settings["effect_size_formula"] = EFFECT_SIZE
    return {**settings, "baseline": baseline, "runs": runs}


def write_json(comparison: Comparison, out: IO[str]) -> None:
    json.dump(to_json(comparison), out, indent=2)
    out.write("\n")


def write_per_query_json(comparison: Comparison, out: IO[str]) -> None:
    json.dump(to_json(comparison, per_query=True), out, indent=2)
    out.write("\n")


def _paper_rows(comparison: Comparison, mark: str, escape: Callable[[str], str]) -> list[list[str]]:
    """Cells of a paper table: a row per run (baseline first), a column per measure, `mark` after
    a mean that differs significantly from the baseline's."""
    names = [escape(n) for n in short_names([comparison.baseline, *comparison.runs])]
    rows = [[f"{names[0]} (baseline)", *(f"{comparison.baseline_means[m]:.4f}" for m in comparison.measures)]]
    for name, run in zip(names[1:], comparison.runs):
        rows.append([name, *(f"{r.mean:.4f}" + (mark if r.significant else "")
                             for r in (comparison.row(run, m) for m in comparison.measures))])
    return rows


def _legend(comparison: Comparison) -> str:
    return (f"significantly different from the baseline (p < {comparison.alpha:g} after correction): "
            f"{describe(comparison)}; {len(comparison.queries)} queries, a query missing from a run counts as 0.")


def _markdown_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def write_markdown(comparison: Comparison, out: IO[str]) -> None:
    header = ["run", *map(_markdown_escape, comparison.measures)]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * len(comparison.measures)]
    lines += ["| " + " | ".join(cells) + " |" for cells in _paper_rows(comparison, "†", _markdown_escape)]
    out.write("\n".join(lines) + f"\n\n† {_legend(comparison)}\n")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def write_latex(comparison: Comparison, out: IO[str]) -> None:
    """A booktabs tabular; the legend is its last row."""
    columns = len(comparison.measures) + 1
    lines = [r"\begin{tabular}{l" + "r" * len(comparison.measures) + "}", r"\toprule",
             " & ".join(["Run", *map(_latex_escape, comparison.measures)]) + r" \\", r"\midrule"]
    rows = _paper_rows(comparison, r"$^\dagger$", _latex_escape)
    lines.append(" & ".join(rows[0]) + r" \\")
    lines += [" & ".join(cells) + r" \\" for cells in rows[1:]]
    legend = _latex_escape(_legend(comparison)).replace("alpha = ", r"$\alpha$ = ")
    lines += [r"\bottomrule",
              rf"\multicolumn{{{columns}}}{{l}}{{\footnotesize $^\dagger$ {legend}}} \\",
              r"\end{tabular}"]
    out.write("\n".join(lines) + "\n")


@dataclass(frozen=True, slots=True)
class OutputFormat:
    name: str
    help: str
    write: Callable[[Comparison, IO[str]], None]
    write_per_query: Callable[[Comparison, IO[str]], None] | None = None  # --per-query; None: not offered
    calibration: bool = False  # writes the runs' calibration when the comparison has it


FORMATS: dict[str, OutputFormat] = {f.name: f for f in (
    OutputFormat("table", "for people, a row per run and measure with mean, delta, its CI, corrected p, wins/ties/losses",
                 write_table, calibration=True),
    OutputFormat("tsv", "a header line, then a row per run and measure (full precision); with --per-query a row per "
                        "run, measure and query, then its row 'all' with the effect size and p-values",
                 write_tsv, write_per_query_tsv),
    OutputFormat("json", "for scripts, per run and measure mean, delta, p_value, p_method, p_adjusted, significant, "
                         "wins, ties, losses, ci_low, ci_high (with --per-query effect_size and the per-query values; "
                         "with --traces each run's calibration)", write_json, write_per_query_json, calibration=True),
    OutputFormat("markdown", "paper-ready, a row per run and a column per measure, † marks significance", write_markdown),
    OutputFormat("latex", "paper-ready booktabs tabular, $^\\dagger$ marks significance", write_latex),
)}


def check_output(output_format: str, *, per_query: bool = False, calibration: bool = False) -> OutputFormat:
    """The format, once it is known to write what was asked: --per-query, calibration (--traces)."""
    chosen = choose(FORMATS, output_format, "output_format")
    if per_query and chosen.write_per_query is None:
        offered = ", ".join(f.name for f in FORMATS.values() if f.write_per_query)
        raise OptionError(f"{{per_query}} is written by the formats {offered}, not {{output_format:{output_format}}}")
    if calibration and not chosen.calibration:
        offered = ", ".join(f.name for f in FORMATS.values() if f.calibration)
        raise OptionError(f"{{traces}} (calibration) is written by the formats {offered}, "
                          f"not {{output_format:{output_format}}}")
    return chosen


def write_comparison(comparison: Comparison, output_format: str = "table", out: IO[str] | None = None, *,
                     per_query: bool = False) -> None:
    """Write `comparison` in a format of FORMATS; per_query: each query's values and the effect
    sizes (tsv, json)."""
    import sys

    writer = check_output(output_format, per_query=per_query, calibration=bool(comparison.calibration))
    stream = out if out is not None else sys.stdout
    (writer.write_per_query if per_query else writer.write)(comparison, stream)
    stream.flush()

