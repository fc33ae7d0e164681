"""`rank1 fuse`: RRF and interpolation by hand, tie-safe output, option errors."""

import struct
import subprocess

import pytest
from conftest import RANK1, REPO, SAMPLE

from rank1_cli.errors import OptionError
from rank1_cli.evaluation.fusion import METHODS, NORMALISATIONS, fuse, parse_weights
from rank1_cli.evaluation.trec_eval import evaluate_run, trec_order
from rank1_cli.io.trec import read_qrels_file, read_run_scores, write_run

A = {"q": {"d1": 3.0, "d2": 2.0, "d3": 1.0}}
B = {"q": {"d3": 0.9, "d4": 0.5}, "q2": {"x": 1.0}}


def scores(ranking, qid="q"):
    return dict(ranking[qid])


def test_rrf_by_hand():
    fused = fuse([A, B], "rrf")
    assert scores(fused) == pytest.approx({"d1": 1 / 61, "d2": 1 / 62, "d3": 1 / 63 + 1 / 61, "d4": 1 / 62})
    assert [d for d, _ in fused["q"]] == ["d3", "d1", "d2", "d4"]   # d2 = d4: d2 is ranked by the first run
    assert list(fused) == ["q", "q2"]
    weighted = fuse([A, B], "rrf", weights=[2, 0.5], rrf_k=0)
    assert scores(weighted) == pytest.approx({"d1": 2, "d2": 1, "d3": 2 / 3 + 0.5, "d4": 0.25})


def test_rrf_ranks_runs_as_trec_eval_does():
    tied = {"q": {"a": 1.0, "b": 1.0, "c": 2.0}}            # trec_eval: c, then b before a (docid descending)
    assert trec_order(tied["q"]) == ["c", "b", "a"]
    assert scores(fuse([tied, {"q": {"z": 1.0}}], "rrf")) == pytest.approx(
        {"c": 1 / 61, "b": 1 / 62, "a": 1 / 63, "z": 1 / 61})


def test_interpolate_minmax_by_hand():
    fused = fuse([A, B], "interpolate", weights=[0.3, 0.7])
    # A: d1 1, d2 0.5, d3 0; B: d3 1, d4 0, and the documents B left out get B's lowest, 0
    assert scores(fused) == pytest.approx({"d1": 0.3, "d2": 0.15, "d3": 0.7, "d4": 0.0})
    assert fuse([A, B], "interpolate", normalise="minmax") == fuse([A, B], "interpolate", weights=[0.5, 0.5])
    assert scores(fused, "q2") == {"x": 0.0}         # one document: no spread to normalise


def test_interpolate_zscore_by_hand():
    fused = fuse([A, B], "interpolate", normalise="zscore", weights=[1, 1])
    sd_a = (2 / 3) ** 0.5                              # A: mean 2, population sd sqrt(2/3)
    # A: d1 +1/sd_a, d2 0, d3 -1/sd_a, and d4 (left out) A's lowest; B: d3 +1, d4 -1 (mean 0.7, sd 0.2), d1 and d2 -1
    assert scores(fused) == pytest.approx({"d1": 1 / sd_a - 1, "d2": -1, "d3": -1 / sd_a + 1, "d4": -1 / sd_a - 1})
    assert NORMALISATIONS["zscore"].function({"a": 5.0, "b": 5.0}) == {"a": 0.0, "b": 0.0}


def test_a_query_missing_from_a_run_gets_nothing_from_it():
    fused = fuse([{"q": {"a": 2.0, "b": 1.0}}, {"other": {"c": 1.0}}], "interpolate", weights=[1, 1])
    assert scores(fused) == {"a": 1.0, "b": 0.0}


def test_scores_equal_in_exact_arithmetic_are_ordered_by_the_rule_not_by_rounding():
    # RRF: 1/(60+3) + 1/(60+80) = 1/(60+24) + 1/(60+30), but in doubles the second is larger
    first = {"q": {f"a{i:03}": 100.0 - i for i in range(1, 101)}}
    second = {"q": {f"a{i:03}": 100.0 - i for i in range(1, 101)}}
    x, y = "a003", "a024"                                # ranks 3 and 24 in the first run
    second["q"][x], second["q"][y] = 100.0 - 80, 100.0 - 30
    second["q"]["a080"], second["q"]["a030"] = 100.0 - 3, 100.0 - 24
    assert 1 / 63 + 1 / 140 < 1 / 84 + 1 / 90
    order = [d for d, _ in fuse([first, second], "rrf")["q"]]
    # a080 and a030 took x's and y's places in the second run: four equal scores, in the first run's order
    assert order[order.index(x):order.index(x) + 4] == [x, y, "a030", "a080"]
    # interpolation (minmax, weights 1/2): 1/6 + 8/10 = 4/6 + 3/10, but in doubles the first is larger
    one = {"q": {"lo": 0.0, "x": 1.0, "y": 4.0, "hi": 6.0}}
    two = {"q": {"lo": 0.0, "y": 3.0, "x": 8.0, "hi": 10.0}}
    assert 0.5 * (1 / 6) + 0.5 * (8 / 10) > 0.5 * (4 / 6) + 0.5 * (3 / 10)
    fused = fuse([one, two], "interpolate")["q"]
    assert [d for d, _ in fused] == ["hi", "y", "x", "lo"]   # equal: the first run ranks y above x
    assert fused[1][1] == fused[2][1] == 29 / 60             # the nearest double of the exact score


def test_runs_with_no_query_in_common_are_fused_with_one_warning(caplog):
    with caplog.at_level("WARNING", logger="rank1_cli"):
        fused = fuse([{"1": {"a": 1.0}, "2": {"b": 1.0}}, {"x": {"a": 1.0}}], "rrf")
    assert list(fused) == ["1", "2", "x"]
    assert caplog.messages == ["the runs have no query in common (run #1 lacks 1: 'x'; run #2 lacks 2: '1', '2'); the "
                               "fused run is their union, each query fused from the runs that have it. Check that the "
                               "runs are for the same topics, with the same query ids"]


def test_runs_sharing_only_some_queries_are_fused_with_one_warning(caplog):
    with caplog.at_level("WARNING", logger="rank1_cli"):
        fuse([A, B, {"q": {"d1": 1.0}, "q3": {"d1": 1.0}}], "rrf")
    assert caplog.messages == ["2 of the 3 queries are not in every run (run #1 lacks 2: 'q2', 'q3'; run #2 lacks 1: "
                               "'q3'; run #3 lacks 1: 'q2'); each is fused from the runs that have it"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="rank1_cli"):
        fuse([A, A], "rrf")
    assert caplog.messages == []


def test_fused_runs_are_written_tie_safe(tmp_path):
    # four documents tie exactly under RRF (each first or second in one run only)
    one, two = {"q": {"a": 2.0, "b": 1.0}}, {"q": {"c": 2.0, "d": 1.0}}
    fused = fuse([one, two], "rrf")
    assert [s for _, s in fused["q"]] == [1 / 61, 1 / 61, 1 / 62, 1 / 62]
    assert [d for d, _ in fused["q"]] == ["a", "c", "b", "d"]
    # a tie between documents the runs list in another order than they rank them: the first run decides
    one, two = {"q": {"b": 1.0, "a": 2.0, "c": 0.0}}, {"q": {"b": 2.0, "a": 1.0, "c": 0.0}}
    assert fuse([one, two], "interpolate")["q"] == [("a", 0.75), ("b", 0.75), ("c", 0.0)]
    assert fuse([two, one], "interpolate")["q"] == [("b", 0.75), ("a", 0.75), ("c", 0.0)]
    path = tmp_path / "fused.trec"
    write_run(path, fused, "fused")
    written = [float(line.split()[4]) for line in path.read_text().splitlines()]
    as_floats = [struct.unpack("f", struct.pack("f", s))[0] for s in written]
    assert all(x > y for x, y in zip(written, written[1:])) and all(x > y for x, y in zip(as_floats, as_floats[1:]))
    assert trec_order(read_run_scores(path)["q"]) == ["a", "c", "b", "d"]


@pytest.mark.parametrize("call, message", [
    (lambda: fuse([A, B], "rrf", weights=[1, 2, 3]), "weights='1,2,3' gives 3 weights for 2 runs"),
    (lambda: fuse([A, B, B], "interpolate", weights=[1]), "weights='1' gives 1 weights for 3 runs"),
    (lambda: fuse([A, B], "rrf", weights=[0, 0]), "at least one above 0"),
    (lambda: fuse([A, B], "rrf", normalise="zscore"), "normalise is an option of method='interpolate', not of method='rrf'"),
    (lambda: fuse([A, B], "interpolate", rrf_k=10), "rrf_k is an option of method='rrf', not of method='interpolate'"),
    (lambda: fuse([A, B], "rrf", rrf_k=-1), "rrf_k='-1' must be a finite number >= 0"),
    (lambda: fuse([A, B], "interpolate", normalise="l2"), "normalise='l2' is not one of minmax, zscore"),
    (lambda: fuse([A, B], "borda"), "method='borda' is not one of rrf, interpolate"),
    (lambda: fuse([A], "rrf"), "at least 2 runs"),
    (lambda: parse_weights("0.3,abc"), "'abc' is not a number"),
    (lambda: parse_weights("0.3,-1"), "finite number >= 0"),
])
def test_bad_options_are_clear_errors(call, message):
    with pytest.raises(OptionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def rank1(*args):
    return subprocess.run([*RANK1, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_cli_fuse_writes_a_run_every_evaluator_reads_in_its_order(tmp_path):
    out = tmp_path / "fused.trec"
    bm25, notitle = SAMPLE / "run.bm25.trec", SAMPLE / "run.bm25-notitle.trec"
    proc = rank1("fuse", bm25, notitle, "--method", "interpolate", "--normalise", "zscore", "--weights", "0.3,0.7",
                 "-o", out, "--tag", "mix")
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    expected = fuse([read_run_scores(bm25), read_run_scores(notitle)], "interpolate", normalise="zscore",
                    weights=[0.3, 0.7])
    written = read_run_scores(out)
    assert {q: trec_order(docs) for q, docs in written.items()} == {q: [d for d, _ in r] for q, r in expected.items()}
    assert out.read_text().split("\n", 1)[0].endswith(" mix")
    qrels = read_qrels_file(SAMPLE / "qrels.txt")
    assert evaluate_run(written, qrels, ["AP"]).value("AP") > 0.6

    (tmp_path / "other.trec").write_text("zz Q0 d001 1 1.0 other\n")
    proc = rank1("fuse", bm25, tmp_path / "other.trec", "-o", tmp_path / "union.trec")
    assert proc.returncode == 0 and "WARNING" in proc.stderr and "the runs have no query in common" in proc.stderr
    proc = rank1("fuse", bm25, notitle, "--weights", "1,2,3", "-o", tmp_path / "x.trec")
    assert proc.returncode == 2
    assert proc.stderr == "rank1: error: --weights 1,2,3 gives 3 weights for 2 runs; give one per run, in the order of the runs\n"
    assert not (tmp_path / "x.trec").exists()
    proc = rank1("fuse", bm25, notitle, "--normalise", "minmax")
    assert proc.returncode == 2 and "--normalise is an option of --method interpolate, not of --method rrf" in proc.stderr
    proc = rank1("fuse", bm25, notitle, "-o", notitle)
    assert proc.returncode == 2 and "never writes to a file it reads" in proc.stderr
    proc = rank1("fuse", "--help")
    for option in ("--method", "--weights", "--normalise", "--rrf-k", "--output", "--tag", *METHODS, *NORMALISATIONS):
        assert option in proc.stdout, option
