"""Evaluation: trec_eval 10.0 conformance, option semantics, Python-computed measures, output."""

import io
import json
import logging
import math
import random
import subprocess
from pathlib import Path

import pytest
from conftest import RANK1, REPO, table_column

from rank1_cli.errors import InputError
from rank1_cli.evaluation.measures import ALL_TREC
from rank1_cli.evaluation.trec_eval import (
    NONPOOL,
    UNJUDGED,
    evaluate_run,
    format_tsv,
    format_value,
    interpolated_precision,
    judged_at,
    ranked_relevance,
    relstring,
    run_eval,
)
from rank1_cli.io.trec import read_qrels_file, read_run_scores

# trec_eval's own test files (usnistgov/trec_eval test/, with its licence), vendored in the repository
CONFORMANCE = REPO / "tests" / "data" / "trec_eval"


@pytest.fixture(scope="module")
def data() -> Path:
    assert CONFORMANCE.is_dir(), (
        f"trec_eval conformance data not found at {CONFORMANCE} (tests/data/trec_eval in the repository)")
    return CONFORMANCE


def read_results(path: Path) -> dict[str, dict[str, float]]:
    """A TREC run as trec_eval reads it: the first 6 columns, anything after them ignored.

    (results.trunc has trailing words on each line, which rank1_cli.io.trec.read_run_scores rejects.)
    """
    run: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        qid, _, docid, _, score, _ = line.split()[:6]
        run.setdefault(qid, {}).setdefault(docid, float(score))
    return run


def cells(text: str) -> dict[tuple[str, str], str]:
    out = {}
    for line in text.splitlines():
        measure, qid, value = line.split("\t")
        key = (measure.rstrip(), qid)
        assert key not in out, f"duplicate line for {key}"
        out[key] = value
    return out


# trec_eval -m all_trec -m relstring.20: relstring's parameter replaces the default one
ALL_TREC_RELSTRING_20 = ["relstring.20" if name == "relstring" else name for name in ALL_TREC]

MEAS_PARAMS = ["iprec_at_recall..10,.20,.25,.75,.50", "P.5,7,3", "recall.20,2000", "Rprec_mult.5.0,0.2,0.35",
               "utility.2,-1,0,0", "11pt_avg..25,.5,.75", "ndcg.1=3,2=9,4=4.5", "ndcg_cut.10,20,23.4",
               "success.2,5,20"]

# name: (expected output, qrels, results, options, measures, per_query, number of cells)
SUITES = {
    "out.test": ("out.test", "qrels.test", "results.test", {}, ["official"], False, 30),
    "out.test.a": ("out.test.a", "qrels.test", "results.test", {}, ["all_trec"], False, 99),
    "out.test.aq": ("out.test.aq", "qrels.test", "results.test", {}, ["all_trec"], True, 387),
    "out.test.aqc": ("out.test.aqc", "qrels.test", "results.trunc", {"complete": True}, ["all_trec"], True, 387),
    "out.test.aql": ("out.test.aql", "qrels.rel_level", "results.test", {"relevance_level": 2},
                     ALL_TREC_RELSTRING_20, True, 387),
    "out.test.meas_params": ("out.test.meas_params", "qrels.test", "results.test", {}, MEAS_PARAMS, True, 88),
}

# Cells where our output differs from trec_eval 10.0's: none. (pytrec_eval alone differs on a few
# iprec_at_recall / 11pt_avg cells, see PYTREC_EVAL_DIFFERS; those measures are computed in Python.)
KNOWN_EXCEPTIONS: dict[str, set[tuple[str, str]]] = {name: set() for name in SUITES}


def evaluate_suite(data: Path, name: str):
    expected_file, qrels_file, results_file, options, measures, per_query, _ = SUITES[name]
    evaluation = evaluate_run(read_results(data / results_file), read_qrels_file(data / qrels_file), measures,
                              runid="STANDARD", **options)
    return format_tsv(evaluation, per_query=per_query), (data / expected_file).read_text()


@pytest.mark.parametrize("name", list(SUITES))
def test_conformance_every_cell(data, name, caplog):
    got_text, expected_text = evaluate_suite(data, name)
    got, expected = cells(got_text), cells(expected_text)
    assert len(expected) == SUITES[name][-1]
    differing = {key for key in expected if got.get(key) != expected[key]}
    assert differing == KNOWN_EXCEPTIONS[name], {key: (expected[key], got.get(key)) for key in differing}
    assert set(got) == set(expected), "lines trec_eval does not print"


@pytest.mark.parametrize("name", list(SUITES))
def test_conformance_byte_identical_output(data, name):
    got_text, expected_text = evaluate_suite(data, name)
    assert got_text == expected_text


# pytrec_eval-terrier 0.5.x bundles trec_eval 9, which turns a recall level x into a number of relevant
# documents as int(x * num_rel + 0.9); trec_eval 10.0 uses lround(x * num_rel). They differ where the
# fractional part of x * num_rel is in [0.1, 0.5): 301 has 474 relevant (0.1 * 474 = 47.4: 48 vs 47),
# 302 has 77 (0.6 * 77 = 46.2: 47 vs 46); with -l2 other queries. These cells (and the means over
# them) are why rank1_cli computes iprec_at_recall and 11pt_avg itself.
PYTREC_EVAL_DIFFERS = {
    "out.test.aq": {("iprec_at_recall_0.10", "301"), ("iprec_at_recall_0.60", "302"), ("11pt_avg", "302"),
                    ("iprec_at_recall_0.10", "all"), ("iprec_at_recall_0.60", "all"), ("11pt_avg", "all")},
    "out.test.aqc": {("iprec_at_recall_0.10", "301")},  # the mean over 3 queries rounds the same
    "out.test.aql": {("iprec_at_recall_0.10", "301"), ("iprec_at_recall_0.60", "302"),
                     ("iprec_at_recall_0.90", "303"), ("11pt_avg", "301"), ("11pt_avg", "302"),
                     ("11pt_avg", "303"), ("iprec_at_recall_0.10", "all"), ("iprec_at_recall_0.60", "all"),
                     ("iprec_at_recall_0.90", "all"), ("11pt_avg", "all")},
}


@pytest.mark.parametrize("name", list(PYTREC_EVAL_DIFFERS))
def test_pytrec_eval_alone_differs_exactly_on_the_known_cells(data, name):
    """Fails if pytrec_eval starts matching trec_eval 10.0 (then drop the Python iprec/11pt_avg)."""
    import pytrec_eval

    expected_file, qrels_file, results_file, options, _, _, _ = SUITES[name]
    level = options.get("relevance_level", 1)
    qrels = read_qrels_file(data / qrels_file)
    run = read_results(data / results_file)
    if options.get("complete"):
        run.update({qid: {} for qid in qrels if qid not in run})
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"iprec_at_recall", "11pt_avg"}, relevance_level=level)
    values = evaluator.evaluate(run)
    got = {}
    for qid, row in values.items():
        for key, value in row.items():
            value = 0.0 if math.isnan(value) else value  # empty ranking (trec_eval 10 prints 0)
            got[(key, qid)] = value
    for key in {k for k, _ in got}:
        per_query = [v for (k, q), v in got.items() if k == key]
        got[(key, "all")] = sum(per_query) / len(per_query)
    expected = cells((data / expected_file).read_text())
    compared = {k for k in expected if k in got}
    assert len(compared) == (12 * (len(values) + 1))
    differing = {k for k in compared if f"{got[k]:6.4f}" != expected[k]}
    assert differing == PYTREC_EVAL_DIFFERS[name]


def test_trec_eval_9_rounding_reproduces_pytrec_eval(data):
    """The explanation above, checked: with int(x + 0.9) our iprec_at_recall equals pytrec_eval's."""
    import pytrec_eval

    qrels = read_qrels_file(data / "qrels.rel_level")
    run = read_results(data / "results.test")
    points = [i / 10 for i in range(11)]
    for level in (1, 2, 3):
        ours_10, ours_9, theirs = [], [], []
        values = pytrec_eval.RelevanceEvaluator(qrels, {"iprec_at_recall"}, relevance_level=level).evaluate(run)
        for qid in sorted(run):
            rels = ranked_relevance(run[qid], qrels[qid])
            num_rel = sum(1 for g in qrels[qid].values() if g >= level)
            ours_9 += interpolated_precision(rels, num_rel, level, points, rounding=lambda x: int(x + 0.9))
            ours_10 += interpolated_precision(rels, num_rel, level, points)
            theirs += [values[qid][f"iprec_at_recall_{p:.2f}"] for p in points]
        assert ours_9 == pytest.approx(theirs, abs=1e-12)
        assert ours_10 != pytest.approx(theirs, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# The ranking trec_eval evaluates, and measures computed on it


def test_ranking_ties_break_by_docid_descending_and_scores_are_c_doubles():
    qrel = {"a": 1, "b": 0, "c": -1, "m": 1}
    # 1.0 and 1.00000001 are one C float but two doubles: trec_eval 10.0 ranks z above a.
    # m and a tie exactly: docid descending puts m first.
    docs = {"a": 1.0, "z": 0.99999999, "m": 1.0, "b": 0.5, "c": 2.0}
    assert ranked_relevance(docs, qrel) == [UNJUDGED, 1, 1, NONPOOL, 0]
    assert ranked_relevance(docs, qrel, depth=2) == [UNJUDGED, 1]
    assert ranked_relevance(docs, qrel, judged_only=True) == [1, 1, 0]


# Near ties, checked against trec_eval 10.0 built from source (tests/data/near_ties/README.md).
NEAR_TIES = REPO / "tests" / "data" / "near_ties"
NEAR_TIE_SUITES = {"out.pair": ("qrels.pair", "run.pair"), "out.random1": ("qrels.near_ties", "run.random1"),
                   "out.random2": ("qrels.near_ties", "run.random2"),
                   "out.random3": ("qrels.near_ties", "run.random3")}


@pytest.mark.parametrize("name", list(NEAR_TIE_SUITES))
def test_near_ties_rank_as_trec_eval_10_reads_doubles(name):
    qrels, run = NEAR_TIE_SUITES[name]
    proc = subprocess.run([*RANK1, "eval", str(NEAR_TIES / run), "--qrels", str(NEAR_TIES / qrels), "-m", "all_trec",
                           "-q", "-f", "tsv"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    expected = (NEAR_TIES / name).read_text()
    got, want = cells(proc.stdout), cells(expected)
    assert {k: (want[k], got.get(k)) for k in want if got.get(k) != want[k]} == {}
    assert proc.stdout == expected


# Negative grades, checked against trec_eval 10.0 built from source (tests/data/negative_grades/README.md):
# trec_eval treats every grade below 0 alike, but crashes on a query graded only below -1, so its outputs
# are for the same qrels with those grades written -1 (qrels.minus1).
NEGATIVE = REPO / "tests" / "data" / "negative_grades"
NEGATIVE_SUITES = {"out.negative.aq": ("run.negative", []), "out.negative.aqJ": ("run.negative", ["-J"]),
                   "out.negative.aqc": ("run.negative.trunc", ["-c"]),
                   "out.negative.aql": ("run.negative", ["-l", "2"])}


def rank1_eval_tsv(run: Path, qrels: Path, *options: str) -> subprocess.CompletedProcess:
    """`rank1 eval -m all_trec -q` in a subprocess: a crash in pytrec_eval's C code fails one test, not the suite."""
    return subprocess.run([*RANK1, "eval", str(run), "--qrels", str(qrels), "--keep-excluded", *options,
                           "-m", "all_trec", "-q", "-f", "tsv"], capture_output=True, text=True, cwd=REPO)


@pytest.mark.parametrize("name", list(NEGATIVE_SUITES))
def test_grades_below_minus_one_give_trec_eval_10s_numbers(name):
    run, options = NEGATIVE_SUITES[name]
    proc = rank1_eval_tsv(NEGATIVE / run, NEGATIVE / "qrels.negative", *options)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr}"
    expected = (NEGATIVE / name).read_text()
    got, want = cells(proc.stdout), cells(expected)
    differing = {key: (want[key], got.get(key)) for key in want if got.get(key) != want[key]}
    # -J leaves q2 and q3 no document: trec_eval divides 0 by 0, rank1 counts 0 (and warns, test below)
    nan = {key for key, value in want.items() if value == "  -nan"}
    assert set(differing) == nan, differing
    assert len(nan) == (36 if name == "out.negative.aqJ" else 0)
    assert all(got[key] == "0.0000" for key in nan if key[1] != "all")
    assert set(got) == set(want)
    if not differing:
        assert proc.stdout == expected


@pytest.mark.parametrize("qrels", ["qrels.negative", "qrels.minus1"])
def test_a_query_graded_only_below_zero_evaluated_first_gets_its_trec_eval_values(tmp_path, qrels):
    # q2 and q3 have no grade >= 0. First in trec_eval 10.0's (or pytrec_eval's) loop such a query makes it
    # stop, crash or print 0 for everything; these are the values trec_eval gives it after another query.
    lines = [line for line in (NEGATIVE / "run.negative").read_text().splitlines() if line.split()[0] in ("q2", "q3")]
    run = tmp_path / "run.q2q3"
    run.write_text("\n".join(lines) + "\n")
    proc = rank1_eval_tsv(run, NEGATIVE / qrels)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr}"
    want = {key: value for key, value in cells((NEGATIVE / "out.negative.aq").read_text()).items()
            if key[1] in ("q2", "q3")}
    assert {key: value for key, value in cells(proc.stdout).items() if key[1] != "all"} == want


def test_judged_only_empty_ranking_counts_0_where_trec_eval_prints_nan_and_says_so(caplog):
    # trec_eval 10.0 -J on q2, q3 (no judged document retrieved): interpolated precision starts at 0/0, so
    # 11pt_avg and iprec_at_recall at low recall print -nan, as do the means (out.negative.aqJ).
    run, qrels = read_run_scores(NEGATIVE / "run.negative"), read_qrels_file(NEGATIVE / "qrels.negative")
    measures = ["iprec_at_recall", "11pt_avg", "map"]
    with caplog.at_level(logging.WARNING, logger="rank1_cli.evaluation.trec_eval"):
        evaluation = evaluate_run(run, qrels, measures, judged_only=True, keep_excluded=True)
        [message] = [r.getMessage() for r in caplog.records if "-nan" in r.getMessage()]
        assert "2 queries keep no document ('q2', 'q3')" in message
        assert evaluation.value("11pt_avg", "q2") == 0 and evaluation.value("iprec_at_recall_0.00", "q3") == 0
        caplog.clear()
        # -c without -J: trec_eval prints 0 for q2, missing from the run (out.negative.aqc)
        evaluate_run(read_run_scores(NEGATIVE / "run.negative.trunc"), qrels, measures, complete=True,
                     keep_excluded=True)
        evaluate_run(run, qrels, ["map", "Judged@5"], judged_only=True, keep_excluded=True)  # no 0/0 in these
    assert not [r for r in caplog.records if "-nan" in r.getMessage()]


def test_the_relevant_document_scored_higher_as_a_double_is_first():
    # a: 0.99999999 and z: 0.99999998 are one C float; as floats z (docid descending) would lead.
    evaluation = evaluate_run({"q1": {"a": 0.99999999, "z": 0.99999998}}, {"q1": {"a": 1, "z": 0}},
                              ["P@1", "RR", "Judged@1", "relstring.2"])
    assert evaluation.value("P@1", "q1") == 1.0 and evaluation.value("RR", "q1") == 1.0
    assert evaluation.value("relstring_2", "q1") == "10"


def test_python_ranking_agrees_with_pytrec_eval_on_ties():
    """P@k, RR@k from our ranking == pytrec_eval's given rank_scores, on runs full of exact ties."""
    rng = random.Random(7)
    qrels, run = {}, {}
    for q in range(60):
        qid = f"q{q}"
        docs = [f"d{rng.randrange(400)}" for _ in range(120)]
        run[qid] = {d: rng.choice([1.0, 1.0 + 1e-9, 0.5, 0.25, 3.0, 3.0000000001]) for d in docs}
        qrels[qid] = {d: rng.choice([0, 1, 2]) for d in rng.sample(sorted(set(docs)), 40)}
    ours = evaluate_run(run, qrels, ["RR@1000", "RR", "P@5", "P@20", "unj.5,20", "Judged@20"])
    import pytrec_eval

    from rank1_cli.evaluation.trec_eval import rank_scores

    theirs = pytrec_eval.RelevanceEvaluator(qrels, {"P.5,20", "recip_rank"}).evaluate(
        {qid: rank_scores(docs) for qid, docs in run.items()})
    for qid in run:
        rels = ranked_relevance(run[qid], qrels[qid])
        for k in (5, 20):
            assert sum(1 for r in rels[:k] if r >= 1) / k == pytest.approx(theirs[qid][f"P_{k}"], abs=1e-12)
            assert ours.value(f"P@{k}", qid) == pytest.approx(theirs[qid][f"P_{k}"], abs=1e-12)
        assert ours.value("RR@1000", qid) == pytest.approx(theirs[qid]["recip_rank"], abs=1e-12)
        assert ours.value("RR", qid) == pytest.approx(theirs[qid]["recip_rank"], abs=1e-12)


def test_judged_at_k_on_a_hand_made_example():
    qrels = {"q1": {"a": 2, "b": 0, "c": -1, "x": 1}, "q2": {"a": 1}}
    run = {
        # top 4: a (judged), n1 (not in qrels), b (judged 0), c (grade -1: still has a qrels entry)
        "q1": {"a": 5.0, "n1": 4.0, "b": 3.0, "c": 2.0, "n2": 1.0},
        "q2": {"a": 2.0, "n": 1.0},  # shorter than k: over the 2 retrieved, as ir_measures
    }
    ev = evaluate_run(run, qrels, ["Judged@4", "Judged@10", "unj.4"])
    assert ev.value("Judged@4", "q1") == pytest.approx(3 / 4)
    assert ev.value("Judged@10", "q1") == pytest.approx(3 / 5)
    assert ev.value("unj_4", "q1") == pytest.approx(2 / 4)  # trec_eval: grade -1 counts as unjudged
    assert ev.value("Judged@10", "q2") == pytest.approx(1 / 2)
    assert ev.value("Judged@4") == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert judged_at([], 10) == 0.0


def test_rr_at_k_only_looks_at_the_top_k():
    qrels = {"q1": {"r": 1}, "q2": {"r": 1}}
    run = {"q1": {"a": 3.0, "b": 2.0, "r": 1.0}, "q2": {"r": 3.0, "a": 1.0}}
    ev = evaluate_run(run, qrels, ["RR@2", "RR@3", "MRR"])
    assert [ev.value("RR@2", q) for q in ("q1", "q2")] == [0.0, 1.0]
    assert ev.value("RR@3", "q1") == pytest.approx(1 / 3)
    assert ev.value("RR@2") == pytest.approx(0.5)
    assert ev.value("MRR") == pytest.approx((1 / 3 + 1) / 2)


@pytest.mark.parametrize("alias, trec_name", [
    ("nDCG@10", "ndcg_cut_10"), ("AP", "map"), ("MAP", "map"), ("P@5", "P_5"), ("R@100", "recall_100"),
    ("Recall@30", "recall_30"), ("MRR", "recip_rank"), ("RR", "recip_rank"), ("nDCG", "ndcg"),
    ("AP@100", "map_cut_100"), ("Success@10", "success_10"), ("IPrec@0.5", "iprec_at_recall_0.50"),
    ("NumRelRet", "num_rel_ret"), ("numrel", "num_rel"), ("NumRet", "num_ret"),
])
def test_each_alias_alone_gives_trec_eval_values_of_its_measure(data, alias, trec_name):
    # Each alias evaluated on its own, against the values trec_eval 10.0 printed (out.test.aq,
    # all_trec -q): an alias mapped to another measure, or another cutoff, shows here.
    from rank1_cli.evaluation.trec_eval import format_value

    want = cells((data / "out.test.aq").read_text())
    ev = evaluate_run(read_results(data / "results.test"), read_qrels_file(data / "qrels.test"), [alias])
    (measure,) = ev.measures
    for qid in ev.queries:
        assert format_value(measure, ev.value(alias, qid)) == want[(trec_name, qid)], qid
    assert format_value(measure, ev.value(alias)) == want[(trec_name, "all")]


def test_aliases_give_the_trec_eval_values(data):
    qrels = read_qrels_file(data / "qrels.test")
    run = read_results(data / "results.test")
    ev = evaluate_run(run, qrels, ["nDCG@10", "AP", "P@5"])
    assert f"{ev.value('nDCG@10'):.4f}" == "0.3016"  # out.test.a
    assert f"{ev.value('AP'):.4f}" == "0.1785"
    assert format_tsv(ev).splitlines()[0] == "AP                    \tall\t0.1785"  # map's place in trec_eval


def test_tsv_lists_measures_in_trec_eval_order_whatever_the_order_asked(data):
    # trec_eval -m ndcg_cut.10 -m map -m P.10 qrels.test results.test (10.0 built from source) prints:
    trec_eval_10 = ("map                   \tall\t0.1785\n"
                    "P_10                  \tall\t0.3000\n"
                    "ndcg_cut_10           \tall\t0.3016\n")
    run = read_results(data / "results.test")
    ev = evaluate_run(run, read_qrels_file(data / "qrels.test"), ["ndcg_cut.10", "map", "P.10"])
    assert format_tsv(ev) == trec_eval_10


# ---------------------------------------------------------------------------------------------
# Options: -c, -J, -l


QRELS = {"q1": {"r1": 1, "r2": 2, "n1": 0}, "q2": {"r3": 1}}


def test_complete_averages_over_every_qrels_query(caplog):
    run = {"q1": {"r1": 3.0, "n1": 2.0, "u": 1.0}}  # q2 is missing from the run
    plain = evaluate_run(run, QRELS, ["num_q", "num_rel", "P@2", "map", "gm_map", "relstring"])
    full = evaluate_run(run, QRELS, ["num_q", "num_rel", "P@2", "map", "gm_map", "relstring"], complete=True)
    assert plain.value("num_q") == 1 and full.value("num_q") == 2
    assert plain.queries == ["q1"] and full.queries == ["q1", "q2"]
    assert plain.value("num_rel") == 2 and full.value("num_rel") == 3  # q2's relevant document counts
    assert plain.value("P@2") == 0.5 and full.value("P@2") == 0.25
    assert plain.value("map") == pytest.approx(0.5) and full.value("map") == pytest.approx(0.25)
    assert full.value("map", "q2") == 0.0 and full.value("relstring", "q2") == ""
    assert full.value("gm_map") == pytest.approx(math.exp((math.log(0.5) + math.log(1e-5)) / 2))
    assert "1 of the 2 qrels queries are not in the run and are left out" in caplog.text


def test_judged_only_drops_unjudged_documents_first():
    run = {"q1": {"u1": 9.0, "u2": 8.0, "r1": 7.0, "n1": 6.0, "r2": 5.0}}
    plain = evaluate_run(run, QRELS, ["P@1", "num_ret", "RR", "RR@2", "Judged@2", "relstring"])
    judged = evaluate_run(run, QRELS, ["P@1", "num_ret", "RR", "RR@2", "Judged@2", "relstring"],
                          judged_only=True)
    assert (plain.value("P@1"), judged.value("P@1")) == (0.0, 1.0)
    assert (plain.value("num_ret"), judged.value("num_ret")) == (5, 3)
    assert (plain.value("RR"), judged.value("RR")) == (pytest.approx(1 / 3), 1.0)
    assert (plain.value("RR@2"), judged.value("RR@2")) == (0.0, 1.0)
    assert (plain.value("Judged@2"), judged.value("Judged@2")) == (0.0, 1.0)
    assert (plain.value("relstring", "q1"), judged.value("relstring", "q1")) == ("--102", "102")


def test_relevance_level_sets_the_least_relevant_grade():
    run = {"q1": {"r1": 3.0, "r2": 2.0}}
    one = evaluate_run(run, QRELS, ["P@1", "num_rel", "RR", "nDCG@2"])
    two = evaluate_run(run, QRELS, ["P@1", "num_rel", "RR", "nDCG@2"], relevance_level=2)
    assert (one.value("P@1"), two.value("P@1")) == (1.0, 0.0)
    assert (one.value("num_rel"), two.value("num_rel")) == (2, 1)
    assert two.value("RR") == 0.5
    assert one.value("nDCG@2") == two.value("nDCG@2")  # graded gains ignore -l
    with pytest.raises(InputError, match="at least 1"):
        evaluate_run(run, QRELS, ["map"], relevance_level=0)


def test_no_common_query_warns_and_explains_complete(caplog):
    with caplog.at_level(logging.WARNING, logger="rank1_cli.evaluation.trec_eval"):
        ev = evaluate_run({"301": {"d": 1.0}}, QRELS, ["nDCG@10", "num_q"], name="my.run")
    assert ev.value("num_q") == 0 and ev.value("nDCG@10") == 0.0
    [record] = [r for r in caplog.records if r.name == "rank1_cli.evaluation.trec_eval"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "my.run: no query of the run is in the qrels" in message
    assert "'301'" in message and "'q1'" in message and "--complete" in message and "trec_eval -c" in message


def test_queries_not_in_the_qrels_are_counted_and_ignored(caplog):
    run = {"q1": {"r1": 1.0}, "q2": {"r3": 1.0}, "x1": {"a": 1.0}, "x2": {"a": 1.0}}
    ev = evaluate_run(run, QRELS, ["P@1", "num_q"])
    assert ev.value("num_q") == 2 and ev.value("P@1") == 1.0
    assert "2 of the run's 4 queries are not in the qrels and were ignored ('x1', 'x2')" in caplog.text


# ---------------------------------------------------------------------------------------------
# Output and the CLI entry point


def test_tsv_lines_are_byte_identical_to_trec_eval(data):
    qrels = read_qrels_file(data / "qrels.test")
    run = read_results(data / "results.test")
    ev = evaluate_run(run, qrels, ["num_rel_ret", "map", "P.5", "relstring", "utility", "ndcg_cut.10"],
                      runid="STANDARD")
    wanted = {"map", "P_5", "ndcg_cut_10", "num_rel_ret", "utility", "relstring"}
    expected = [line for line in (data / "out.test.aq").read_text().splitlines(keepends=True)
                if line.split("\t")[0].rstrip() in wanted]
    got = format_tsv(ev, per_query=True).splitlines(keepends=True)
    # trec_eval prints in its own measure order; we print in the order asked, which is the same here
    assert got == expected
    assert "num_rel_ret           \t301\t71\n" in got and "relstring             \t303\t'0000000000'\n" in got


def write_run(path: Path, lines: list[str]) -> str:
    path.write_text("".join(f"{line}\n" for line in lines))
    return str(path)


def test_run_eval_tsv_json_and_table(tmp_path, data):
    a = write_run(tmp_path / "a.run", ["q1 Q0 r1 1 3 sysA", "q1 Q0 n1 2 2 sysA", "q2 Q0 r3 1 1 sysA"])
    b = write_run(tmp_path / "b.run", ["q1 Q0 n1 1 3 sysB", "q1 Q0 r1 2 2 sysB"])

    out = io.StringIO()
    run_eval([a], QRELS, ["runid", "num_q", "P@1", "nDCG@10"], stdout=out, output_format="tsv", per_query=True)
    assert out.getvalue() == (
        "P@1                   \tq1\t1.0000\n"
        "nDCG@10               \tq1\t0.3801\n"  # 1 / (2 + 1/log2(3)): gains are the grades
        "P@1                   \tq2\t1.0000\n"
        "nDCG@10               \tq2\t1.0000\n"
        "runid                 \tall\tsysA\n"
        "num_q                 \tall\t2\n"
        "P@1                   \tall\t1.0000\n"
        "nDCG@10               \tall\t0.6900\n"
    )

    out = io.StringIO()
    evaluations = run_eval([a, b], QRELS, ["P@1", "num_q"], stdout=out, output_format="json")
    payload = json.loads(out.getvalue())
    assert [r["run"] for r in payload["runs"]] == [a, b]
    assert payload["runs"][0]["measures"] == {"P@1": 1.0, "num_q": 2}
    assert payload["runs"][1]["measures"] == {"P@1": 0.0, "num_q": 1}
    assert payload["complete"] is False and evaluations[1].value("P@1") == 0.0

    out = io.StringIO()
    run_eval([a, b], QRELS, ["nDCG@10", "P@1"], stdout=out)  # auto: a table for several runs
    table = out.getvalue()
    assert "nDCG@10" in table and "P@1" in table
    rows = [line for line in table.splitlines() if "a.run" in line or "b.run" in line]
    assert len(rows) == 2 and "0.6900" in rows[0] and "1.0000" in rows[0] and "0.0000" in rows[1]

    out = io.StringIO()
    run_eval([a, b], QRELS, ["P@1"], stdout=out, output_format="table", per_query=True)
    assert sum(1 for line in out.getvalue().splitlines() if " q1 " in f" {line} ") == 2

    out = io.StringIO()
    run_eval([a, b], QRELS, ["P@1"], stdout=out, output_format="tsv")
    assert out.getvalue() == (f"{'run':<22}\tall\t{a}\nP@1                   \tall\t1.0000\n"
                              f"{'run':<22}\tall\t{b}\nP@1                   \tall\t0.0000\n")


def test_run_eval_reads_the_conformance_run_like_trec_eval(data):
    out = io.StringIO()
    run_eval([str(data / "results.test")], read_qrels_file(data / "qrels.test"), ["official"], stdout=out)
    assert out.getvalue() == (data / "out.test").read_text()


def test_run_eval_checks_measures_and_format_before_reading_runs(tmp_path):
    with pytest.raises(InputError, match="unknown measure 'nope'"):
        run_eval([str(tmp_path / "missing.run")], QRELS, ["nope"])
    with pytest.raises(InputError, match="unknown output format"):
        run_eval([str(tmp_path / "missing.run")], QRELS, ["map"], output_format="csv")
    with pytest.raises(InputError, match="no such file"):
        run_eval([str(tmp_path / "missing.run")], QRELS, ["map"])


def test_read_run_scores_and_evaluate_agree_with_a_file_round_trip(tmp_path, data):
    run = read_run_scores(data / "results.test")
    qrels = read_qrels_file(data / "qrels.test")
    assert evaluate_run(run, qrels, ["map"]).value("map") == pytest.approx(0.1785, abs=5e-5)


def test_run_eval_refuses_stdin_twice():
    with pytest.raises(InputError, match="stdin"):
        run_eval(["-", "-"], {"q": {"d": 1}}, ["P@1"], stdout=io.StringIO())


def test_runid_is_the_last_lines_tag_as_in_trec_eval_10(tmp_path):
    run = write_run(tmp_path / "mixed.run", ["q1 Q0 r1 1 3 first", "q1 Q0 n1 2 2 middle", "q2 Q0 r3 1 1 last",
                                             "# a comment at the end"])
    out = io.StringIO()
    run_eval([run], QRELS, ["runid"], stdout=out, output_format="tsv")
    # what `trec_eval -m runid` (10.0, built from source) prints for these qrels and run
    assert out.getvalue() == "runid                 \tall\tlast\n"


def test_the_table_for_people_row_by_row(tmp_path):
    # Two runs with one file name: the table shows their paths. Per query, then each run's `all`
    # row in bold, a line between runs; numbers right-aligned, strings left; runid in `all` only.
    from rich.console import Console

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    a = write_run(tmp_path / "a" / "x.run", ["q1 Q0 r1 1 3 sysA", "q1 Q0 n1 2 2 sysA", "q2 Q0 r3 1 1 sysA"])
    b = write_run(tmp_path / "b" / "x.run", ["q1 Q0 n1 1 3 sysB", "q1 Q0 r1 2 2 sysB"])
    out = io.StringIO()
    run_eval([a, b], QRELS, ["runid", "P@1", "num_ret", "relstring.2"], stdout=out, output_format="table",
             per_query=True, console=Console(file=out, width=200))
    w = len(a)
    assert out.getvalue().splitlines() == [
        f"{'run':<{w}} ┃ query ┃ runid ┃    P@1 ┃ num_ret ┃ relstring_2",
        f"{'━' * (w + 1)}╇━━━━━━━╇━━━━━━━╇━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━━",
        f"{a} │ q1    │       │ 1.0000 │       2 │ '10'       ",
        f"{a} │ q2    │       │ 1.0000 │       1 │ '1'        ",
        f"{a} │ all   │ sysA  │ 1.0000 │       3 │            ",
        f"{'─' * (w + 1)}┼───────┼───────┼────────┼─────────┼────────────",
        f"{b} │ q1    │       │ 0.0000 │       2 │ '01'       ",
        f"{b} │ all   │ sysB  │ 0.0000 │       2 │            ",
    ]
    bold = io.StringIO()
    run_eval([a, b], QRELS, ["P@1"], stdout=bold, output_format="table", per_query=True,
             console=Console(file=bold, width=200, force_terminal=True, color_system="standard"))
    lines = bold.getvalue().splitlines()
    assert [line.startswith(f"\x1b[1m{a}") for line in lines[2:5]] == [False, False, True]
    # file names alone when they tell the runs apart; a narrow terminal folds the names, not the numbers
    b2 = write_run(tmp_path / "b" / "y.run", ["q1 Q0 n1 1 3 sysB"])
    short = io.StringIO()
    run_eval([a, b2], QRELS, ["P@1"], stdout=short, output_format="table", console=Console(file=short, width=200))
    assert [line.split()[0] for line in short.getvalue().splitlines()[2:]] == ["x.run", "y.run"]
    narrow = io.StringIO()
    run_eval([a, b], QRELS, ["P@1", "nDCG@10"], stdout=narrow, output_format="table",
             console=Console(file=narrow, width=40))
    text = narrow.getvalue()
    assert "1.0000" in text and "0.0000" in text and "nDCG@10" in text
    assert max(len(line) for line in text.splitlines()) <= 40


def test_json_values_are_typed_and_per_query_values_by_query(tmp_path):
    a = write_run(tmp_path / "a.run", ["q1 Q0 r1 1 3 sysA", "q1 Q0 n1 2 2 sysA", "q2 Q0 r3 1 1 sysA"])
    out = io.StringIO()
    run_eval([a], QRELS, ["runid", "num_ret", "P@1", "relstring.2"], stdout=out, output_format="json",
             per_query=True, relevance_level=2, judged_only=True)
    assert out.getvalue().endswith("}\n")
    assert json.loads(out.getvalue()) == {
        "relevance_level": 2, "complete": False, "judged_only": True, "keep_excluded": False,
        "runs": [{"run": a, "runid": "sysA", "num_q": 2,
                  "measures": {"runid": "sysA", "num_ret": 3, "P@1": 0.0},
                  "per_query": {"q1": {"num_ret": 2, "P@1": 0.0, "relstring_2": "10"},
                                "q2": {"num_ret": 1, "P@1": 0.0, "relstring_2": "1"}}}]}


def test_runid_of_stdin_is_empty_and_comments_and_blank_lines_are_skipped(tmp_path):
    from rank1_cli.evaluation.trec_eval import read_runid

    assert read_runid("-") == ""
    run = tmp_path / "r.run"
    run.write_text("q1 Q0 d 1 1 first\nq1 Q0 e 2 0.5 second\n\n# comment\n   \n")
    assert read_runid(str(run)) == "second"
    run.write_text("q1 Q0 d 1 1\n")
    assert read_runid(str(run)) == ""
    import gzip

    (tmp_path / "r.run.gz").write_bytes(gzip.compress(b"q1 Q0 d 1 1 zipped\n"))
    assert read_runid(str(tmp_path / "r.run.gz")) == "zipped"


def test_interpolated_precision_by_hand():
    # relevant at ranks 1, 3, 6 of 6; 4 relevant in all: precision 1, 2/3, 1/2 at those ranks
    assert interpolated_precision([1, 0, 1, 0, 0, 1], 4, 1, [0.0, 0.25, 0.5, 0.75, 1.0]) == \
        [1.0, 1.0, pytest.approx(2 / 3), 0.5, 0.0]                  # recall 1.0 is never reached
    assert interpolated_precision([1, 0, 1, 0, 0, 1], 4, 1, [0.0, 0.05, 0.25]) == [1.0, 1.0, 1.0]
    # -l 2: grade 1 is not relevant; relevant at ranks 1 and 4
    assert interpolated_precision([2, 1, 0, 2], 2, 2, [0.0, 0.5, 1.0]) == [1.0, 1.0, 0.5]
    assert interpolated_precision([], 2, 1, [0.0, 1.0]) == [0.0, 0.0]


def test_relstring_marks_each_kind_of_grade():
    assert relstring([9, 10, 0, NONPOOL, UNJUDGED, -5, 3], 6) == "9>0-.<"
    assert relstring([1, 2], 20) == "12"


def test_rbp_takes_its_persistence_from_its_parameter():
    ev = evaluate_run({"q": {"a": 3, "b": 2, "c": 1}}, {"q": {"a": 1, "c": 1}},
                      ["rbp.p=0.5", "rbp", "iprec_at_recall.1"])
    assert ev.value("rbp_p=0.5") == pytest.approx(0.5 * (1 + 0.25))    # (1 - p) * sum of p^(rank - 1)
    assert ev.value("rbp") == pytest.approx(0.1 * (1 + 0.81))           # trec_eval's default p = 0.9
    assert ev.value("iprec_at_recall_1.00") == pytest.approx(2 / 3)     # recall level 1 itself is allowed


def test_warnings_name_at_most_three_queries(caplog):
    qrels = {"q1": {"a": 1}}
    with caplog.at_level("WARNING", logger="rank1_cli"):
        evaluate_run({"q1": {"a": 1.0}, "x3": {"a": 1.0}, "x1": {"a": 1.0}, "x2": {"a": 1.0}}, qrels, ["P@1"],
                     name="r")
        evaluate_run({"q1": {"a": 1.0}, "x3": {"a": 1.0}, "x1": {"a": 1.0}, "x2": {"a": 1.0}, "x4": {"a": 1.0}},
                     qrels, ["P@1"], name="r")
    assert [r.getMessage() for r in caplog.records] == [
        "r: 3 of the run's 4 queries are not in the qrels and were ignored ('x1', 'x2', 'x3')",
        "r: 4 of the run's 5 queries are not in the qrels and were ignored ('x1', 'x2', 'x3', ...)"]


def test_edge_queries_measure_zero_without_crashing():
    # a query judged only with negative grades; a run with no query of the qrels
    ev = evaluate_run({"q1": {"a": 2.0, "b": 1.0}}, {"q1": {"a": -1, "b": -1}}, ["rbp", "rbp.p=0.5", "gm_map", "P@1"])
    assert (ev.value("rbp"), ev.value("rbp_p=0.5"), ev.value("P@1")) == (0.0, 0.0, 0.0)
    empty = evaluate_run({"x": {"a": 1.0}}, {"q1": {"a": 1}}, ["gm_map", "map"])
    assert (empty.value("gm_map"), empty.value("map"), empty.runid) == (0.0, 0.0, "")


def test_rank_scores_count_down_from_the_number_of_documents():
    from rank1_cli.evaluation.trec_eval import rank_scores

    for n in (3, 40, 2, 100, 1):
        docs = {f"d{i:03d}": float(n - i) for i in range(n)}
        assert rank_scores(docs) == {f"d{i:03d}": float(n - i) for i in range(n)}, n
    assert rank_scores({"b": 1.0, "a": 1.0, "c": 2.0}) == {"c": 3.0, "b": 2.0, "a": 1.0}   # ties: docid descending


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "rank1_cli.evaluation.trec_eval"]


def test_every_warning_about_unmatched_queries_is_whole_and_names_the_run(caplog):
    with caplog.at_level(logging.WARNING, logger="rank1_cli.evaluation.trec_eval"):
        evaluate_run({"301": {"d": 1.0}}, QRELS, ["P@1"])
        evaluate_run({"301": {"d": 1.0}}, QRELS, ["P@1"], complete=True)
        evaluate_run({"q1": {"r1": 1.0}}, QRELS, ["P@1"], name="a.run")
        evaluate_run({"q1": {"r1": 1.0}}, QRELS, ["P@1"], complete=True, name="a.run")
    assert _warnings(caplog) == [
        "run: no query of the run is in the qrels (run: '301'; qrels: 'q1', 'q2'). Check that both are for the "
        "same topics with the same query ids. Nothing is evaluated: every mean is 0 (--complete, like trec_eval "
        "-c, would count each qrels query as an empty ranking).",
        "run: no query of the run is in the qrels (run: '301'; qrels: 'q1', 'q2'). Check that both are for the "
        "same topics with the same query ids. Every qrels query counts as an empty ranking (all measures 0).",
        "a.run: 1 of the 2 qrels queries are not in the run and are left out of the means ('q2'); --complete "
        "(trec_eval -c) counts them as empty rankings",
        "a.run: 1 of the 2 qrels queries are not in the run; they count as empty rankings, every measure 0",
    ]


def test_no_measures_is_an_error_and_counts_are_ints():
    run = {"q1": {"r1": 3.0, "n1": 2.0}, "q2": {"r3": 1.0}}
    with pytest.raises(InputError, match="^no measure given. Known: trec_eval measures"):
        evaluate_run(run, QRELS, [])
    default = evaluate_run(run, QRELS, ["official"])
    assert [type(default.value(m)) for m in ("num_ret", "num_rel", "num_rel_ret", "map")] == [int, int, int, float]
    assert type(default.value("num_ret", "q1")) is int
    with pytest.raises(InputError) as error:
        evaluate_run(run, QRELS, ["map"], relevance_level=0)
    assert str(error.value) == "relevance level must be at least 1 (got 0); grades below it count as non-relevant"


def test_more_queries_than_one_pytrec_eval_call_takes_are_all_evaluated():
    from rank1_cli.evaluation.trec_eval import EVAL_CHUNK

    n = 2 * EVAL_CHUNK + 3
    qrels = {f"q{i}": {"r": 1} for i in range(n)}
    run = {f"q{i}": {"r": 2.0, "n": 1.0} for i in range(n)}
    ev = evaluate_run(run, qrels, ["P@1", "num_q"])
    assert ev.value("num_q") == n and ev.value("P@1") == 1.0
    assert ev.value("P@1", f"q{n - 1}") == 1.0


# The table `rank1 eval` prints for people: a golden rendering at 80 and at 200 columns. Two runs
# with dotted names, numbers of every kind (means, a count, the run tag), and a document graded
# -100 in each run, so that the note under the table shows too.
TABLE_QRELS = {"q1": {"r1": 1, "r2": 2, "n1": 0, "x1": -100}, "q2": {"r3": 1, "n2": 0, "r4": 1}}
TABLE_RUNS = {
    "bm25.dl19.trec": ["q1 Q0 r1 1 3.0 bm25", "q1 Q0 x1 2 2.5 bm25", "q1 Q0 n1 3 2.0 bm25",
                       "q1 Q0 r2 4 1.0 bm25", "q2 Q0 n2 1 2.0 bm25", "q2 Q0 r3 2 1.0 bm25"],
    "rank1-7b.dl19.trec": ["q1 Q0 r2 1 0.99 rank1", "q1 Q0 r1 2 0.75 rank1", "q1 Q0 x1 3 0.5 rank1",
                           "q1 Q0 n1 4 1e-30 rank1", "q2 Q0 r3 1 1.0 rank1", "q2 Q0 n2 2 0.0 rank1"],
}
TABLE_MEASURES = ["nDCG@10", "AP", "P@5", "R@100", "RR", "Judged@10", "num_q", "runid"]
TABLE_AT = {
    200: [
        "run                ┃ nDCG@10 ┃     AP ┃    P@5 ┃  R@100 ┃     RR ┃ Judged@10 ┃ num_q ┃ runid",
        "━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━╇━━━━━━━━╇━━━━━━━━╇━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━╇━━━━━━",
        "bm25.dl19.trec     │  0.5735 │ 0.5417 │ 0.3000 │ 0.7500 │ 0.7500 │    1.0000 │     2 │ bm25 ",
        "rank1-7b.dl19.trec │  0.8066 │ 0.7500 │ 0.3000 │ 0.7500 │ 1.0000 │    1.0000 │     2 │ rank1",
        "Documents graded -100 (excluded from evaluation) were removed from the runs first, as BRIGHT's "
        "scorer does: bm25.dl19.trec 1, rank1-7b.dl19.trec 1; --keep-excluded keeps them.",
    ],
    # 80 columns: the run names fold; every number stays whole on its row; the note wraps
    80: [
        "run    ┃ nDCG@10 ┃     AP ┃    P@5 ┃  R@100 ┃     RR ┃ Judged@10 ┃ num_q ┃ runid",
        "━━━━━━━╇━━━━━━━━━╇━━━━━━━━╇━━━━━━━━╇━━━━━━━━╇━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━╇━━━━━━",
        "bm25.d │  0.5735 │ 0.5417 │ 0.3000 │ 0.7500 │ 0.7500 │    1.0000 │     2 │ bm25 ",
        "l19.tr │         │        │        │        │        │           │       │      ",
        "ec     │         │        │        │        │        │           │       │      ",
        "rank1- │  0.8066 │ 0.7500 │ 0.3000 │ 0.7500 │ 1.0000 │    1.0000 │     2 │ rank1",
        "7b.dl1 │         │        │        │        │        │           │       │      ",
        "9.trec │         │        │        │        │        │           │       │      ",
        "Documents graded -100 (excluded from evaluation) were removed from the runs ",
        "first, as BRIGHT's scorer does: bm25.dl19.trec 1, rank1-7b.dl19.trec 1; ",
        "--keep-excluded keeps them.",
    ],
}


@pytest.mark.parametrize("columns", sorted(TABLE_AT))
def test_the_eval_table_as_rendered_at_80_and_200_columns(tmp_path, monkeypatch, columns):
    from rank1_cli.evaluation.trec_eval import format_value

    paths = [write_run(tmp_path / name, lines) for name, lines in TABLE_RUNS.items()]
    monkeypatch.setenv("COLUMNS", str(columns))  # the width rich gives a console that is not a terminal
    out = io.StringIO()
    evaluations = run_eval(paths, TABLE_QRELS, TABLE_MEASURES, stdout=out)  # as `rank1 eval` calls it
    lines = out.getvalue().splitlines()
    assert lines == TABLE_AT[columns]
    assert max(len(line) for line in lines) <= columns
    # every value is whole, in its run's first row, in the column of its measure
    header = [cell.strip() for cell in lines[0].split("┃")]
    rows = [line for line in lines if line.startswith(("bm25", "rank1"))]
    for evaluation, row in zip(evaluations, rows):
        cells = dict(zip(header, (cell.strip() for cell in row.split("│"))))
        assert {m.label: cells[m.label] for m in evaluation.measures} == {
            m.label: format_value(m, evaluation.value(m)) for m in evaluation.measures}


@pytest.mark.parametrize("width", [60, 80, 200])
def test_a_narrow_table_cuts_no_value(width, tmp_path, monkeypatch):
    """Many measures on a narrow output: every value whole (rich cropped them), the table wider
    than the output when it must be."""
    monkeypatch.setenv("COLUMNS", str(width))
    a = write_run(tmp_path / "bm25-baseline-with-a-rather-long-name.run", ["q1 Q0 r1 1 3 sysA", "q2 Q0 r3 1 1 sysA"])
    b = write_run(tmp_path / "rank1-7b-budget-1024-rerank.run", ["q1 Q0 n1 1 3 sysB", "q1 Q0 r1 2 2 sysB"])
    measures = ["P@1", "P@10", "nDCG@10", "map", "recip_rank", "num_ret"]
    out = io.StringIO()
    evaluations = run_eval([a, b], QRELS, measures, stdout=out, output_format="table")
    text = out.getvalue()
    for ev in evaluations:
        for m in ev.measures:
            assert m.label in text and format_value(m, ev.summary[m.name]) in text
    assert "…" not in text
    assert table_column(text, 0).endswith("bm25-baseline-with-a-rather-long-name.runrank1-7b-budget-1024-rerank.run")
    if width >= 80:
        assert max(map(len, text.splitlines())) <= width
