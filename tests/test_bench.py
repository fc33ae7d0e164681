"""The benchmark harness's pure parts (no engine): workload generator, scoring, summary."""

import importlib.util
import json
import math
import sys

import pytest
from conftest import REPO

from rank1_cli.io.collection import read_corpus_docs, read_queries_file
from rank1_cli.io.trec import read_run

BENCH = REPO / "bench"


def _load(name):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def throughput():
    return _load("throughput")


@pytest.fixture(scope="module")
def make_workload():
    return _load("make_workload")


def test_workload_is_deterministic_and_readable(make_workload, tmp_path):
    a = make_workload.generate(tmp_path / "a", queries=4, docs_per_query=5, passage_words=30, extra_docs=3)
    b = make_workload.generate(tmp_path / "b", queries=4, docs_per_query=5, passage_words=30, extra_docs=3)
    assert a == b
    for name in ("corpus.jsonl", "queries.tsv", "run.trec"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    run = read_run(tmp_path / "a" / "run.trec")
    assert len(run) == 4 and all(len(entries) == 5 for entries in run.values())
    assert [e.rank for e in run["Q0001"]] == [1, 2, 3, 4, 5]          # scores strictly decrease
    wanted = {e.docid for entries in run.values() for e in entries}
    docs = read_corpus_docs(tmp_path / "a" / "corpus.jsonl", wanted)
    assert set(docs) == wanted and all(len(d.text.split()) >= 30 for d in docs.values())
    assert len(read_queries_file(tmp_path / "a" / "queries.tsv")) == 4
    assert make_workload.is_current(tmp_path / "a", queries=4, docs_per_query=5, passage_words=30, extra_docs=3)
    assert not make_workload.is_current(tmp_path / "a")                # other arguments
    (tmp_path / "a" / "run.trec").write_text("changed\n")
    assert not make_workload.is_current(tmp_path / "a", queries=4, docs_per_query=5, passage_words=30, extra_docs=3)


def test_score_and_clean_up_follow_the_reference(throughput):
    assert throughput.score_from_logprobs({7: math.log(0.3), 9: math.log(0.1)}, 7, 9) == pytest.approx(0.75)
    assert throughput.score_from_logprobs({7: -1.0}, 7, 9) is None
    assert throughput.score_from_logprobs(None, 7, 9) is None
    assert throughput.score_from_logprobs({7: -1000.0, 9: 0.0}, 7, 9) == 0.0
    assert throughput.clean_unfinished("It shares words. Then the") == "It shares words."
    assert throughput.clean_unfinished("  no stop at all  ") == "no stop at all"


def test_rounds_rotate_the_mode_order(throughput):
    modes = ["bare", "rank1", "per_query", "reference"]
    orders = [throughput.rotated(modes, r) for r in range(4)]
    assert [o[0] for o in orders] == modes
    assert all(sorted(o) == sorted(modes) for o in orders)


def test_summary_medians_ratios_and_targets(throughput):
    def rank1(seconds):
        return {"seconds": seconds, "output_tokens": 1000,
                "split": {"prepare_s": 0.1, "engine_s": seconds - 0.2, "repair_s": 0.05, "finalize_s": 0.03,
                          "write_s": 0.02}}

    rounds = [
        {"bare": {"seconds": 10.0, "output_tokens": 1000}, "rank1": rank1(10.5),
         "per_query": {"seconds": 30.0, "output_tokens": 1000}, "reference": {"seconds": 12.0, "output_tokens": 1000}},
        {"bare": {"seconds": 11.0, "output_tokens": 1000}, "rank1": rank1(11.0),
         "per_query": {"seconds": 33.0, "output_tokens": 1000}, "reference": {"seconds": 13.0, "output_tokens": 1000}},
        {"bare": {"seconds": 50.0, "output_tokens": 1000}, "rank1": rank1(10.0),     # one noisy round
         "per_query": {"seconds": 31.0, "output_tokens": 1000}, "reference": {"seconds": 12.5, "output_tokens": 1000}},
    ]
    s = throughput.summarize(rounds, pairs=500)
    assert (s["bare_s"], s["rank1_s"], s["per_query_s"], s["reference_s"]) == (11.0, 10.5, 31.0, 12.5)
    assert s["rates"]["rank1"]["pairs_per_s"] == pytest.approx(500 / 10.5, abs=1e-3)
    assert s["rates"]["bare"]["generated_tokens_per_s"] == pytest.approx(1000 / 11.0, abs=1e-3)
    assert s["ratios"]["rank1_over_bare"] == pytest.approx(10.5 / 11.0, abs=1e-4)
    assert s["ratios"]["per_query_over_rank1"] == pytest.approx(31.0 / 10.5, abs=1e-4)
    assert s["targets"]["rank1_over_bare"]["met"] and s["targets"]["per_query_over_rank1"]["met"]
    assert s["targets"]["rank1_over_reference"]["met"]
    assert s["rank1_split"]["prepare_s"] == 0.1
    assert len(s["ratios_per_round"]["rank1_over_bare"]) == 3
    json.dumps(s)


def test_summary_of_a_subset_of_modes(throughput):
    s = throughput.summarize([{"bare": {"seconds": 2.0, "output_tokens": 10}}], pairs=4)
    assert s["rank1_s"] is None and s["targets"]["rank1_over_bare"]["met"] is None


def test_agreement_and_first_queries(throughput, tmp_path):
    got = throughput.agreement([0.5, None, 0.9], [0.5004, 0.2, 0.1])
    assert got["compared"] == 2 and got["within_tolerance"] == 1 and got["max_abs_diff"] == pytest.approx(0.8)
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 a 1 3 x\nq1 Q0 b 2 2 x\nq2 Q0 a 1 3 x\nq3 Q0 c 1 1 x\n")
    cut = throughput.first_queries(run, 2, tmp_path / "cut.trec")
    assert cut.read_text() == "q1 Q0 a 1 3 x\nq1 Q0 b 2 2 x\nq2 Q0 a 1 3 x\n"


def test_machine_and_command_line(throughput):
    info = throughput.machine_info()
    assert {"cpu_model", "cores", "vllm_version", "torch_version"} <= set(info)
    assert throughput.command_line([str(BENCH / "throughput.py"), "--workload", "quick"]).split()[1:] == [
        "bench/throughput.py", "--workload", "quick"]


def test_length_stats(throughput):
    assert throughput.length_stats([10, 20, 30, 40, 50, 60, 70, 80, 90, 100]) == {
        "mean": 55.0, "median": 55.0, "p90": 90, "max": 100}


def test_the_serve_load_requests_are_valid_rerank_requests_and_its_percentiles_nearest_rank():
    from rank1_cli.serve import ServeLimits, parse_rerank_request

    serve_load = _load("serve_load")
    bodies = serve_load.workload(10)
    assert len(bodies) == 25 and {len(body["documents"]) for body in bodies} == {10}
    assert all(parse_rerank_request(body, "m", ServeLimits()).top_n == 3 for body in bodies)
    assert [serve_load.percentile(list(range(1, 101)), share) for share in (0.5, 0.95, 1.0)] == [50, 95, 100]
    assert serve_load.percentile([3.0], 0.95) == 3.0
