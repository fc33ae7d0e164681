"""`rank1 compare`: p-values as scipy computes them on the evaluator's per-query values,
corrections, intervals, wins/ties/losses, every output format, the -100 (BRIGHT) exclusion, and
agreement with PyTerrier's Experiment on sample_data's two BM25 runs."""

import io
import itertools
import json
import re
import subprocess

import numpy as np
import pytest
from conftest import RANK1, REPO, SAMPLE, table_column
from scipy import stats

from rank1_cli.errors import InputError, OptionError
from rank1_cli.evaluation.compare import FORMATS, compare_runs, format_p, write_comparison
from rank1_cli.evaluation.measures import ALL_TREC
from rank1_cli.evaluation.significance import (
    CORRECTIONS,
    TESTS,
    bonferroni,
    confidence_interval,
    holm,
    permutation_test,
    wins_ties_losses,
)
from rank1_cli.evaluation.trec_eval import evaluate_run, run_eval
from rank1_cli.io.trec import read_qrels_file, read_run_scores

BM25, NOTITLE = str(SAMPLE / "run.bm25.trec"), str(SAMPLE / "run.bm25-notitle.trec")
EXCLUDED = REPO / "tests" / "data" / "excluded"


@pytest.fixture(scope="module")
def qrels():
    return read_qrels_file(SAMPLE / "qrels.txt")


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


@pytest.fixture
def clear_win(tmp_path):
    """10 queries, one relevant document each: the baseline ranks it second everywhere, the run
    first on 8 queries; the run lacks query q9 (counted as 0)."""
    qrels = {f"q{i}": {"r": 1, "n": 0} for i in range(10)}
    base = write(tmp_path / "base.run", [f"q{i} Q0 {d} {k} {3 - k} b" for i in range(10) for k, d in ((1, "n"), (2, "r"))])
    run = write(tmp_path / "better.run", [f"q{i} Q0 {d} {k} {3 - k} r" for i in range(9)
                                          for k, d in (((1, "r"), (2, "n")) if i < 8 else ((1, "n"), (2, "r")))])
    return base, run, qrels


# --- p-values, corrections, intervals --------------------------------------------------------

SCIPY = {
    "t": lambda x, y: stats.ttest_rel(x, y).pvalue,
    "wilcoxon": lambda x, y: stats.wilcoxon(x, y).pvalue,
    "permutation": lambda x, y: stats.permutation_test(
        (x, y), lambda a, b, axis: (a - b).mean(axis=axis), permutation_type="samples", vectorized=True,
        n_resamples=2000, rng=7).pvalue,
}


@pytest.mark.parametrize("test", list(TESTS))
def test_p_values_are_scipys_on_the_evaluators_per_query_values(test, qrels):
    assert set(SCIPY) == set(TESTS)
    comparison = compare_runs(BM25, [NOTITLE], qrels, ["AP", "nDCG@10", "P@5"], test=test, correction="none",
                              rounds=2000, seed=7, wilcoxon_method="scipy")
    for measure in comparison.measures:
        base = evaluate_run(read_run_scores(BM25), qrels, [measure], complete=True)
        run = evaluate_run(read_run_scores(NOTITLE), qrels, [measure], complete=True)
        x = [run.value(measure, q) for q in run.queries]
        y = [base.value(measure, q) for q in base.queries]
        assert comparison.per_query[NOTITLE][measure] == x and comparison.per_query[BM25][measure] == y
        row = comparison.row(NOTITLE, measure)
        assert row.p_value == pytest.approx(SCIPY[test](np.array(x), np.array(y)), rel=1e-12)
        assert row.p_adjusted == row.p_value
        assert row.mean == pytest.approx(np.mean(x)) and row.delta == pytest.approx(np.mean(x) - np.mean(y))


def test_permutation_test_seed_and_rounds():
    rng = np.random.default_rng(0)
    x, y = rng.random(30), rng.random(30)
    p = permutation_test(x, y, rounds=500, seed=1)
    assert permutation_test(x, y, rounds=500, seed=1) == p
    assert permutation_test(x, y, rounds=500, seed=2) != p
    assert permutation_test(x, y, rounds=501, seed=1) != p


def test_permutation_test_is_exact_when_every_sign_flip_fits_in_the_rounds():
    d = np.array([0.3, -0.1, 0.25, 0.4, 0.05])
    flips = [np.mean(d * signs) for signs in itertools.product((1, -1), repeat=len(d))]
    expected = np.mean(np.abs(flips) >= abs(d.mean()) - 1e-12)
    assert permutation_test(d, np.zeros(5), rounds=32, seed=1) == (pytest.approx(expected), "exact")
    assert permutation_test(d, np.zeros(5), rounds=32, seed=2) == (pytest.approx(expected), "exact")


def test_holm_and_bonferroni_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])     # 0.005*4, 0.01*3, 0.03*2, max(0.04*1, 0.06)
    assert bonferroni(p) == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0] and bonferroni([0.6, 0.01]) == [1.0, 0.02]
    assert CORRECTIONS["none"].function(p) == p


def test_corrections_agree_with_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(3).random(12) ** 3
    for name in ("holm", "bonferroni"):
        assert CORRECTIONS[name].function(list(p)) == pytest.approx(multitest.multipletests(p, method=name)[1])


def test_the_correction_runs_over_every_run_and_measure(qrels, tmp_path):
    reversed_run = write(tmp_path / "reversed.run", [f"{q} Q0 {d} 1 {-s} r" for q, docs in read_run_scores(NOTITLE).items()
                                                      for d, s in docs.items()])
    measures = ["AP", "nDCG@10", "P@5"]
    plain = compare_runs(BM25, [NOTITLE, reversed_run], qrels, measures, correction="none")
    p = [row.p_value for row in plain.rows]
    assert len(p) == 6
    for name in ("holm", "bonferroni"):
        corrected = compare_runs(BM25, [NOTITLE, reversed_run], qrels, measures, correction=name)
        assert [row.p_adjusted for row in corrected.rows] == CORRECTIONS[name].function(p)
        assert [row.p_value for row in corrected.rows] == p


def test_confidence_interval_is_ttest_rels_and_follows_alpha(qrels):
    for alpha in (0.05, 0.1):
        comparison = compare_runs(BM25, [NOTITLE], qrels, ["AP"], alpha=alpha)
        x, y = comparison.per_query[NOTITLE]["AP"], comparison.per_query[BM25]["AP"]
        expected = stats.ttest_rel(x, y).confidence_interval(1 - alpha)
        row = comparison.row(NOTITLE, "AP")
        assert (row.ci_low, row.ci_high) == pytest.approx((expected.low, expected.high), rel=1e-12)
        assert row.ci_low < row.delta < row.ci_high
    assert confidence_interval([1, 2, 3], [0, 1, 2]) == (1.0, 1.0)      # constant difference: a point


def test_wins_ties_losses():
    assert wins_ties_losses([0.5, 0.2, 0.3, 0.0], [0.1, 0.2, 0.4, 0.0]) == (1, 2, 1)


def test_identical_runs_give_p_one_everywhere(qrels, tmp_path):
    copy = tmp_path / "copy.run"
    copy.write_bytes((SAMPLE / "run.bm25.trec").read_bytes())
    for test in TESTS:
        comparison = compare_runs(BM25, [str(copy)], qrels, ["AP", "P@5"], test=test)
        for row in comparison.rows:
            assert (row.p_value, row.p_adjusted, row.delta, row.ci_low, row.ci_high) == (1.0, 1.0, 0.0, 0.0, 0.0)
            assert (row.wins, row.ties, row.losses) == (0, 25, 0) and not row.significant


def test_missing_queries_count_as_zero_and_significance_is_marked(clear_win):
    base, run, qrels = clear_win
    comparison = compare_runs(base, [run], qrels, ["P@1"])
    assert comparison.missing == {base: 0, run: 1} and len(comparison.queries) == 10
    assert comparison.per_query[run]["P@1"] == [1.0] * 8 + [0.0, 0.0]
    row = comparison.row(run, "P@1")
    assert (row.wins, row.ties, row.losses) == (8, 2, 0)
    assert row.mean == 0.8 and row.baseline_mean == 0.0 and row.significant and row.p_adjusted < 0.001


def test_measures_not_averaged_over_queries_are_left_out_or_refused(qrels, caplog):
    comparison = compare_runs(BM25, [NOTITLE], qrels, ["num_q", "AP", "gm_map"])
    assert comparison.measures == ["AP"] and "num_q, gm_map" in caplog.text
    with pytest.raises(InputError, match="no measure to compare: runid, num_q are not averaged"):
        compare_runs(BM25, [NOTITLE], qrels, ["runid", "num_q"])


def test_a_run_of_other_topics_is_warned_about_without_an_option_compare_lacks(clear_win, tmp_path, caplog):
    base, _, qrels = clear_win
    other = write(tmp_path / "other.run", ["x1 Q0 r 1 1 o"])
    compare_runs(base, [other], qrels, ["P@1"])
    [warning] = [m for m in caplog.messages if other in m]
    assert warning.endswith("Check that both are for the same topics with the same query ids. Every qrels query "
                            "counts as an empty ranking (all measures 0).")
    assert "--complete" not in warning  # an option of `rank1 eval` only


@pytest.mark.parametrize("kwargs, message", [
    ({"test": "z"}, "test='z' is not one of t, wilcoxon, permutation"),
    ({"correction": "bh"}, "correction='bh' is not one of holm, bonferroni, none"),
    ({"alpha": 0.0}, "alpha='0.0' must lie strictly between 0 and 1"),
    ({"rounds": 0}, "rounds='0' must be at least 1"),
    ({"wilcoxon_method": "normal"}, "wilcoxon_method='normal' is not one of auto, exact, approx, scipy"),
])
def test_bad_options_are_named(qrels, kwargs, message):
    with pytest.raises(OptionError, match=re.escape(message)):
        compare_runs(BM25, [NOTITLE], qrels, ["AP"], **kwargs)


def test_one_judged_query_is_too_few(tmp_path):
    run = write(tmp_path / "a.run", ["q1 Q0 d 1 1 a"])
    with pytest.raises(InputError, match="a paired test needs at least 2"):
        compare_runs(run, [write(tmp_path / "b.run", ["q1 Q0 d 1 1 b"])], {"q1": {"d": 1}}, ["P@1"])


@pytest.fixture
def few_differ(tmp_path):
    """15 queries, one relevant document each, at rank 2 in the baseline; the run has it at rank 1
    on q0 and q1 (RR +0.5) and at rank 3 on q2 (RR -1/6): 3 differences, 2 of them tied, 12 zeros."""
    qrels = {f"q{i}": {"r": 1} for i in range(15)}
    base = write(tmp_path / "base.run", [f"q{i} Q0 {d} {k} {4 - k} b" for i in range(15)
                                         for k, d in ((1, "n1"), (2, "r"), (3, "n2"))])
    order = {0: ("r", "n1", "n2"), 1: ("r", "n1", "n2"), 2: ("n1", "n2", "r")}
    run = write(tmp_path / "run.run", [f"q{i} Q0 {d} {k + 1} {3 - k} r" for i in range(15)
                                       for k, d in enumerate(order.get(i, ("n1", "r", "n2")))])
    write(tmp_path / "qrels.txt", [f"{q} 0 r 1" for q in qrels])
    return base, run, qrels


def test_wilcoxon_is_exact_for_few_differing_queries_and_says_so(few_differ):
    base, run, qrels = few_differ
    rows = {method: compare_runs(base, [run], qrels, ["RR"], test="wilcoxon", wilcoxon_method=method).rows[0]
            for method in ("auto", "exact", "approx", "scipy")}
    assert (rows["auto"].wins, rows["auto"].ties, rows["auto"].losses) == (2, 12, 1)
    # the 8 sign flips of ranks 2.5, 2.5, 1: positive-rank sums 0, 1, 2.5, 2.5, 3.5, 3.5, 5, 6 around 3;
    # the observed 5 and 0, 1, 6 are at least as far from 3
    assert (rows["auto"].p_value, rows["auto"].p_method) == (pytest.approx(0.5, abs=1e-12), "exact")
    assert (rows["exact"].p_value, rows["exact"].p_method) == (pytest.approx(0.5, abs=1e-12), "exact")
    assert rows["approx"].p_method == "normal approximation" and rows["scipy"].p_method == "scipy default"
    assert rows["approx"].p_value == rows["scipy"].p_value == pytest.approx(0.2763029, abs=1e-6)


def test_cli_compare_names_the_wilcoxon_method(few_differ):
    base, run, _ = few_differ
    path = base.replace("base.run", "qrels.txt")
    proc = rank1("compare", base, run, "--qrels", path, "-m", "RR", "--test", "wilcoxon", "-f", "json")
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["wilcoxon_method"] == "auto"
    assert payload["runs"][0]["measures"]["RR"]["p_value"] == pytest.approx(0.5)
    assert payload["runs"][0]["measures"]["RR"]["p_method"] == "exact"
    proc = rank1("compare", base, run, "--qrels", path, "-m", "RR", "--test", "wilcoxon", "--wilcoxon-method", "scipy")
    assert proc.returncode == 0, proc.stderr
    table = " ".join(proc.stdout.split())
    assert "0.2763" in table and "p-values: scipy default for 1 (--wilcoxon-method scipy)." in table
    proc = rank1("compare", base, run, "--qrels", path, "--wilcoxon-method", "normal")
    assert proc.returncode == 2 and "'normal' is not one of" in proc.stderr


# --- output formats ------------------------------------------------------------------------------

def render(comparison, fmt):
    out = io.StringIO()
    write_comparison(comparison, fmt, out)
    return out.getvalue()


def test_json_has_every_field_per_run_and_measure(clear_win):
    base, run, qrels = clear_win
    comparison = compare_runs(base, [run], qrels, ["P@1", "nDCG@10"], test="wilcoxon", correction="bonferroni")
    payload = json.loads(render(comparison, "json"))
    assert payload["test"] == "wilcoxon" and payload["correction"] == "bonferroni" and payload["alpha"] == 0.05
    assert payload["queries"] == 10 and payload["missing_queries_count_as"] == 0
    assert payload["baseline"]["run"] == base and set(payload["baseline"]["measures"]) == {"P@1", "nDCG@10"}
    [entry] = payload["runs"]
    assert entry["run"] == run and entry["missing_queries"] == 1
    for measure, fields in entry["measures"].items():
        row = comparison.row(run, measure)
        assert set(fields) >= {"mean", "delta", "p_value", "p_adjusted", "wins", "ties", "losses", "ci_low", "ci_high"}
        assert fields == {f: getattr(row, f) for f in fields}


def test_markdown_and_latex_mark_significant_cells_and_say_how(clear_win, tmp_path):
    base, run, qrels = clear_win
    same = write(tmp_path / "same_as_base.run", (tmp_path / "base.run").read_text().splitlines())
    comparison = compare_runs(base, [run, same], qrels, ["P@1"], correction="holm", alpha=0.01)
    markdown = render(comparison, "markdown")
    assert "| better.run | 0.8000† |" in markdown and "| same\\_as\\_base.run | 0.0000 |" in markdown
    assert "| base.run (baseline) | 0.0000 |" in markdown
    legend = markdown.split("\n\n")[1]
    assert legend.startswith("† ") and "paired t-test" in legend and "Holm-corrected over 2 comparisons" in legend
    assert "alpha = 0.01" in legend and "counts as 0" in legend

    latex = render(comparison, "latex")
    assert r"better.run & 0.8000$^\dagger$ \\" in latex and r"same\_as\_base.run & 0.0000 \\" in latex
    assert latex.startswith(r"\begin{tabular}{lr}") and latex.rstrip().endswith(r"\end{tabular}")
    assert r"$^\dagger$ significantly different" in latex and r"$\alpha$ = 0.01" in latex and "Holm" in latex


def test_table_and_tsv(clear_win):
    base, run, qrels = clear_win
    comparison = compare_runs(base, [run], qrels, ["P@1"], test="permutation", rounds=999, seed=3)
    table = " ".join(render(comparison, "table").split())
    assert "base.run" in table and "(baseline)" in table and "+0.8000*" in table and "8/2/0" in table
    assert "paired randomisation test (999 rounds, seed 3), Holm-corrected over 1 comparison " in table
    assert "p-values: random sign flips for 1." in table
    assert "a query missing from a run counts as 0" in table and "better.run 1" in table
    lines = render(comparison, "tsv").splitlines()
    assert lines[0].split("\t") == ["run", "measure", "mean", "baseline_mean", "delta", "p_value", "p_adjusted",
                                    "significant", "wins", "ties", "losses", "ci_low", "ci_high", "p_method"]
    cells = dict(zip(lines[0].split("\t"), lines[1].split("\t")))
    assert cells["run"] == run and cells["significant"] == "true" and float(cells["mean"]) == 0.8
    assert set(FORMATS) == {"table", "tsv", "json", "markdown", "latex"}


@pytest.mark.parametrize("width", [60, 80, 200])
def test_a_narrow_table_cuts_no_value(width, qrels, tmp_path, monkeypatch):
    """At 80 columns rich cropped cells (wins/ties/losses 15/1/0 showed as `15/1/`): now headers
    wrap or are abbreviated, run names fold, and a table that cannot fit is printed wider."""
    monkeypatch.setenv("COLUMNS", str(width))
    base = write(tmp_path / "bm25-baseline-with-a-rather-long-name.trec", open(BM25).read().splitlines())
    run = write(tmp_path / "rank1-7b-budget-1024-rerank-of-bm25.trec", open(NOTITLE).read().splitlines())
    comparison = compare_runs(base, [run], qrels, ["nDCG@10", "P@5"], correction="bonferroni")
    text = render(comparison, "table")
    table = text.split("\n* p <")[0]
    for row in comparison.rows:
        for value in (row.measure, f"{row.mean:.4f}", f"{row.delta:+.4f}", f"[{row.ci_low:+.3f}, {row.ci_high:+.3f}]",
                      format_p(row.p_adjusted), f"{row.wins}/{row.ties}/{row.losses}"):
            assert value in table
    assert all(f"{mean:.4f}" in table for mean in comparison.baseline_means.values())
    names = table_column(table, 0)
    assert "bm25-baseline-with-a-rather-long-name.trec" in names and "rank1-7b-budget-1024-rerank-of-bm25.trec" in names
    assert "…" not in text
    if width >= 80:
        assert max(map(len, text.splitlines())) <= width
    if width == 80:       # no room for "p (bonferroni)": "p", and a legend says what it stands for
        assert "p = p (bonferroni)" in text


# --- BRIGHT's excluded documents (grade -100) -----------------------------------------------------

def test_excluded_documents_are_removed_from_run_and_qrels_first():
    qrels = read_qrels_file(EXCLUDED / "qrels.txt")
    by_hand = evaluate_run(read_run_scores(EXCLUDED / "run.removed-by-hand.trec"),
                           read_qrels_file(EXCLUDED / "qrels.removed-by-hand.txt"), ALL_TREC)
    dropped = evaluate_run(read_run_scores(EXCLUDED / "run.trec"), qrels, ALL_TREC)
    assert dropped.excluded == 4 and by_hand.excluded == 0 and dropped.queries == ["q1", "q2", "q3"]
    assert dropped.per_query == by_hand.per_query and dropped.summary == by_hand.summary
    # q4 has only -100 grades: kept, it is evaluated as trec_eval would (all unjudged: num_rel 0)
    kept = evaluate_run(read_run_scores(EXCLUDED / "run.trec"), qrels, ALL_TREC, keep_excluded=True)
    assert kept.excluded == 0 and kept.queries == ["q1", "q2", "q3", "q4"] and kept.value("num_rel", "q4") == 0
    assert kept.value("ndcg_cut_10") < dropped.value("ndcg_cut_10")
    assert kept.value("P_5", "q2") == 0.2 and dropped.value("P_5", "q2") == 0.2   # 1 relevant in 5 either way
    assert kept.value("recip_rank", "q2") == 0.25 and dropped.value("recip_rank", "q2") == 0.5


def test_eval_and_compare_say_how_many_documents_were_removed():
    qrels = read_qrels_file(EXCLUDED / "qrels.txt")
    run = str(EXCLUDED / "run.trec")
    out = io.StringIO()
    run_eval([run, str(EXCLUDED / "run.removed-by-hand.trec")], qrels, ["nDCG@10"], output_format="table", stdout=out)
    text = " ".join(out.getvalue().split())
    assert "graded -100" in text and "run.trec 4, run.removed-by-hand.trec 0" in text and "--keep-excluded" in text
    out = io.StringIO()
    run_eval([run], qrels, ["nDCG@10"], output_format="json", stdout=out)
    assert json.loads(out.getvalue())["runs"][0]["excluded"] == 4
    out = io.StringIO()
    run_eval([run], {qid: docs for qid, docs in qrels.items() if qid != "q4"}, ["nDCG@10"], output_format="table",
             keep_excluded=True, stdout=out)
    assert "-100" not in out.getvalue()

    comparison = compare_runs(str(EXCLUDED / "run.removed-by-hand.trec"), [run], qrels, ["nDCG@10", "AP"])
    assert comparison.excluded == {str(EXCLUDED / "run.removed-by-hand.trec"): 0, run: 4}
    assert all(row.delta == 0 and row.p_value == 1.0 for row in comparison.rows)
    assert "run.trec 4" in " ".join(render(comparison, "table").split())


# --- agreement with PyTerrier -------------------------------------------------------------------

def test_agrees_with_pyterrier_experiment(qrels, tmp_path):
    pd = pytest.importorskip("pandas")
    pt = pytest.importorskip("pyterrier")
    pytest.importorskip("statsmodels")

    def frame(path):
        return pd.DataFrame([(q, d, s) for q, docs in read_run_scores(path).items() for d, s in docs.items()],
                            columns=["qid", "docno", "score"])

    reversed_run = write(tmp_path / "reversed.run", [f"{q} Q0 {d} 1 {-s} r" for q, docs in read_run_scores(NOTITLE).items()
                                                      for d, s in docs.items()])
    qrels_frame = pd.DataFrame([(q, d, g) for q, docs in qrels.items() for d, g in docs.items()],
                               columns=["qid", "docno", "label"])
    topics = pd.DataFrame({"qid": sorted(qrels), "query": "unused"})
    names = {"AP": "map", "nDCG@10": "ndcg_cut_10", "P@5": "P_5"}
    for test in ("t", "wilcoxon"):
        theirs = pt.Experiment([frame(BM25), frame(NOTITLE), frame(reversed_run)], topics, qrels_frame,
                               eval_metrics=list(names.values()), baseline=0, test=test, correction="holm")
        for ours_name, theirs_name in names.items():
            # PyTerrier corrects per measure (over the runs): compare one measure at a time
            ours = compare_runs(BM25, [NOTITLE, reversed_run], qrels, [ours_name], test=test, correction="holm",
                                wilcoxon_method="scipy")
            for i, run in ((1, NOTITLE), (2, reversed_run)):
                row = ours.row(run, ours_name)
                assert row.mean == pytest.approx(theirs[theirs_name][i], abs=1e-12)
                assert row.p_value == pytest.approx(theirs[f"{theirs_name} p-value"][i], rel=1e-9, abs=1e-300)
                assert row.p_adjusted == pytest.approx(theirs[f"{theirs_name} p-value corrected"][i], rel=1e-9, abs=1e-300)
                assert (row.wins, row.losses) == (theirs[f"{theirs_name} +"][i], theirs[f"{theirs_name} -"][i])


# --- the command ----------------------------------------------------------------------------------

def rank1(*args):
    return subprocess.run([*RANK1, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_cli_compare_formats_and_errors(tmp_path):
    proc = rank1("compare", BM25, NOTITLE, "--qrels", SAMPLE / "qrels.txt", "-m", "AP", "-f", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["runs"][0]["measures"]["AP"]["p_value"] == pytest.approx(0.2114384296, abs=1e-9)
    proc = rank1("compare", BM25, NOTITLE, "--qrels", SAMPLE / "qrels.txt", "--alpha", "1.5")
    assert proc.returncode == 2 and proc.stderr == "rank1: error: --alpha 1.5 must lie strictly between 0 and 1\n"
    proc = rank1("compare", BM25, "--qrels", SAMPLE / "qrels.txt")
    assert proc.returncode == 2 and "Missing argument" in proc.stderr
    proc = rank1("compare", BM25, tmp_path / "nope.run", "--qrels", SAMPLE / "qrels.txt")
    assert proc.returncode == 2 and "nope.run" in proc.stderr and "Traceback" not in proc.stderr
    proc = rank1("compare", "--help")
    for option in ("--qrels", "--measure", "--test", "--correction", "--alpha", "--rounds", "--seed", "--wilcoxon-method",
                   "--keep-excluded", "--format", *TESTS, *CORRECTIONS, *FORMATS, "counts as 0"):
        assert option in proc.stdout, option


def test_cli_eval_removes_excluded_documents_unless_told():
    run, qrels = EXCLUDED / "run.trec", EXCLUDED / "qrels.txt"
    by_hand = rank1("eval", EXCLUDED / "run.removed-by-hand.trec", "--qrels", EXCLUDED / "qrels.removed-by-hand.txt",
                    "-m", "official", "-f", "tsv")
    dropped = rank1("eval", run, "--qrels", qrels, "-m", "official", "-f", "tsv")
    assert dropped.returncode == 0 and dropped.stdout == by_hand.stdout, dropped.stderr
    table = rank1("eval", run, "--qrels", qrels)
    assert "graded -100" in table.stdout and "run.trec 4" in " ".join(table.stdout.split())
    assert "--keep-excluded" in rank1("eval", "--help").stdout


# --- --per-query, effect sizes, calibration ---------------------------------------------------

def test_cohens_dz_by_hand():
    from rank1_cli.evaluation.significance import cohens_dz

    # differences 0.5, 0.25, 0, 0.25: mean 0.25, sd (ddof=1) sqrt((0.0625 + 0 + 0.0625 + 0) / 3)
    assert cohens_dz([1.0, 0.5, 0.25, 0.75], [0.5, 0.25, 0.25, 0.5]) == pytest.approx(0.25 / (0.125 / 3) ** 0.5)
    assert cohens_dz([0.2, 0.4], [0.6, 0.5]) == pytest.approx(-0.25 / (0.045 ** 0.5))  # d -0.4, -0.1: sd 0.2121
    assert cohens_dz([0.3, 0.3], [0.3, 0.3]) == 0.0
    assert cohens_dz([0.6, 0.4], [0.4, 0.2]) is None  # one constant difference (0.2): undefined, not 1e16


def test_per_query_tsv_has_every_query_then_the_means_effect_size_and_p(clear_win):
    from rank1_cli.evaluation.significance import cohens_dz

    base, run, qrels = clear_win
    comparison = compare_runs(base, [run], qrels, ["P@1", "RR"])
    out = io.StringIO()
    write_comparison(comparison, "tsv", out, per_query=True)
    lines = [line.split("\t") for line in out.getvalue().splitlines()]
    assert lines[0] == ["run", "measure", "query", "value", "baseline_value", "delta", "effect_size", "p_value",
                        "p_adjusted", "significant"]
    p_at_1 = [dict(zip(lines[0], line)) for line in lines[1:] if line[1] == "P@1"]
    assert [r["query"] for r in p_at_1] == [f"q{i}" for i in range(10)] + ["all"]
    assert [float(r["value"]) for r in p_at_1[:10]] == [1.0] * 8 + [0.0, 0.0]
    assert [float(r["baseline_value"]) for r in p_at_1[:10]] == [0.0] * 10
    assert all(r["effect_size"] == r["p_value"] == "" for r in p_at_1[:10])
    row = comparison.row(run, "P@1")
    summary = p_at_1[10]
    assert float(summary["value"]) == 0.8 and float(summary["delta"]) == pytest.approx(0.8)
    assert float(summary["effect_size"]) == pytest.approx(0.8 / np.std([1] * 8 + [0, 0], ddof=1))
    assert float(summary["effect_size"]) == pytest.approx(cohens_dz([1] * 8 + [0, 0], [0] * 10))
    assert float(summary["p_adjusted"]) == row.p_adjusted and summary["significant"] == "true"
    assert len(lines) == 1 + 2 * 11


def test_per_query_json_has_each_querys_values_and_the_effect_sizes(clear_win):
    base, run, qrels = clear_win
    comparison = compare_runs(base, [run], qrels, ["P@1"])
    out = io.StringIO()
    write_comparison(comparison, "json", out, per_query=True)
    payload = json.loads(out.getvalue())
    assert "Cohen's d_z" in payload["effect_size_formula"] and "ddof=1" in payload["effect_size_formula"]
    [entry] = payload["runs"]
    assert entry["per_query"]["P@1"] == {f"q{i}": 1.0 if i < 8 else 0.0 for i in range(10)}
    assert list(entry["per_query"]["P@1"]) == comparison.queries
    assert payload["baseline"]["per_query"]["P@1"] == {f"q{i}": 0.0 for i in range(10)}
    assert entry["measures"]["P@1"]["effect_size"] == pytest.approx(0.8 / np.std([1] * 8 + [0, 0], ddof=1))
    assert entry["measures"]["P@1"]["p_value"] == comparison.row(run, "P@1").p_value
    # without --per-query: neither the effect size nor the per-query values, the output as before
    plain = json.loads(render(comparison, "json"))
    assert "effect_size_formula" not in plain and "per_query" not in plain["runs"][0]
    assert "effect_size" not in plain["runs"][0]["measures"]["P@1"]


@pytest.mark.parametrize("fmt", ["table", "markdown", "latex"])
def test_per_query_is_refused_by_the_formats_that_cannot_hold_it(clear_win, fmt):
    base, run, qrels = clear_win
    comparison = compare_runs(base, [run], qrels, ["P@1"])
    with pytest.raises(OptionError, match="per_query"):
        write_comparison(comparison, fmt, io.StringIO(), per_query=True)


def test_outputs_without_the_new_options_are_those_of_the_main_line(tmp_path):
    """Byte for byte what `rank1 compare` wrote before --per-query and --traces (files in tests/data)."""
    for fmt in FORMATS:
        proc = rank1("compare", "sample_data/run.bm25.trec", "sample_data/run.bm25-notitle.trec", "--qrels",
                     "sample_data/qrels.txt", "-m", "AP", "-m", "P@5", "-f", fmt)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == (REPO / "tests" / "data" / "compare" / f"bm25.{fmt}").read_text(), fmt


def traces_file(path, pairs):
    """A traces file with (qid, docid, score) pairs; the other fields as rerank writes them."""
    lines = [json.dumps({"qid": q, "docid": d, "first_stage_rank": i + 1, "score": s,
                         "verdict": None if s is None else ("true" if s >= 0.5 else "false"), "reasoning": "",
                         "logprob_true": None, "logprob_false": None,
                         "completion": "fallback" if s is None else "stop", "output_tokens": 1, "truncated": False,
                         "model": "m", "prompt_sha256": "0" * 64, "settings": {}})
             for i, (q, d, s) in enumerate(pairs)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_calibration_of_each_runs_traces_in_json_and_table(clear_win, tmp_path):
    base, run, qrels = clear_win
    # q0..q2's two documents: r relevant (grade 1), n not (grade 0); one unjudged pair and one fallback left out
    pairs = [("q0", "r", 0.9), ("q0", "n", 0.2), ("q1", "r", 0.6), ("q1", "n", 0.7), ("q2", "r", 1.0),
             ("q2", "n", None), ("q3", "r", 0.05)]
    qrels = {**qrels, "q3": {"n": 0}}  # q3/r is now unjudged
    traces = traces_file(tmp_path / "better.traces.jsonl", pairs)
    comparison = compare_runs(base, [run], qrels, ["P@1"], traces=[traces])
    payload = json.loads(render(comparison, "json"))
    calibration = payload["runs"][0]["calibration"]
    scores, labels = [0.9, 0.2, 0.6, 0.7, 1.0], [1, 0, 1, 0, 1]
    assert calibration["pairs"] == 5 and calibration["relevant"] == 3
    assert calibration["brier"] == pytest.approx(sum((s - y) ** 2 for s, y in zip(scores, labels)) / 5)
    # bins of 0.1: (0.1, 0.2] holds 0.2 (share 0), (0.5, 0.6] 0.6 (1), (0.6, 0.7] 0.7 (0), (0.8, 0.9] 0.9 (1), (0.9, 1] 1.0 (1)
    assert calibration["ece"] == pytest.approx((0.2 + 0.4 + 0.7 + 0.1 + 0.0) / 5)
    assert "10 equal-width bins" in calibration["binning"] and len(calibration["bins"]) == 10
    assert [b["pairs"] for b in calibration["bins"]] == [0, 1, 0, 0, 0, 1, 1, 0, 1, 1]
    assert "calibration" not in payload["baseline"]
    table = " ".join(render(comparison, "table").split())
    assert "better.run ECE 0.2800, Brier" in table and "5 judged pairs, 3 relevant" in table
    with pytest.raises(OptionError, match="traces"):
        write_comparison(comparison, "tsv", io.StringIO())


def test_traces_must_be_one_per_run_and_the_runs_own(clear_win, tmp_path):
    base, run, qrels = clear_win
    traces = traces_file(tmp_path / "t.jsonl", [("q0", "r", 0.9)])
    with pytest.raises(InputError, match="one traces file per run"):
        compare_runs(base, [run, write(tmp_path / "other.run", ["q0 Q0 r 1 1 o"])], qrels, ["P@1"], traces=[traces])
    stray = traces_file(tmp_path / "stray.jsonl", [("q9", "r", 0.9)])  # the run lacks q9
    with pytest.raises(InputError, match="stray.jsonl: 1 traced pairs are not in the run"):
        compare_runs(base, [run], qrels, ["P@1"], traces=[stray])
    unjudged = traces_file(tmp_path / "u.jsonl", [("q0", "x", 0.5), ("q1", "r", None)])
    with pytest.raises(InputError, match="u.jsonl: no scored pair is judged by the qrels"):
        compare_runs(base, [write(tmp_path / "x.run", ["q0 Q0 x 1 1 o", "q1 Q0 r 2 0 o"])], qrels, ["P@1"],
                     traces=[unjudged])
    outside = traces_file(tmp_path / "bm25.jsonl", [("q0", "r", 7.5)])
    with pytest.raises(InputError, match=r"not in \[0, 1\]"):
        compare_runs(base, [run], qrels, ["P@1"], traces=[outside])


def test_cli_per_query_and_traces(clear_win, tmp_path):
    base, run, qrels_map = clear_win
    qrels = write(tmp_path / "qrels", [f"{q} 0 {d} {g}" for q, docs in qrels_map.items() for d, g in docs.items()])
    traces = traces_file(tmp_path / "t.jsonl", [("q0", "r", 0.9), ("q0", "n", 0.2)])
    proc = rank1("compare", base, run, "--qrels", qrels, "-m", "P@1", "-f", "json", "--per-query", "--traces", traces)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["runs"][0]["calibration"]["pairs"] == 2 and "effect_size" in payload["runs"][0]["measures"]["P@1"]
    proc = rank1("compare", base, run, "--qrels", qrels, "--per-query")
    assert proc.returncode == 2
    assert proc.stderr == "rank1: error: --per-query is written by the formats tsv, json, not --format table\n"
    proc = rank1("compare", base, run, "--qrels", qrels, "--traces", traces, "--traces", traces)
    assert proc.returncode == 2 and "one traces file per run" in proc.stderr
