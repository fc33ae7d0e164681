"""Splitting a rerank by query (--shard I/N) and merging the shards back (rank1 merge).

The rerank here runs the real pipeline (prepare_rerank / rerank_with_engine on the sample data) with
a deterministic stand-in engine, so a merged sharded rerank must equal the unsharded one byte for
byte; test_openai_engine.py does the same through real vLLM servers.
"""

import gzip
import hashlib
import json
import os
import subprocess
import sys

import pytest
from conftest import RANK1, REPO, SAMPLE, TINY_MODEL

from rank1_cli.engines import Generation, VerdictLogprobs
from rank1_cli.errors import InputError
from rank1_cli.io.collection import CollectionSource
from rank1_cli.io.traces import read_traces, write_traces
from rank1_cli.io.trec import read_run, write_run
from rank1_cli.reasoning import prompts
from rank1_cli.reasoning.store import Store
from rank1_cli.workflows.rerank import RerankOptions, prepare_rerank, rerank_with_engine
from rank1_cli.workflows.shard import merge_shards, parse_shard, shard_of, shard_queries

QIDS = [f"q{i:02d}" for i in range(1, 26)]


# --- the split -----------------------------------------------------------------------------

@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 25, 40])
def test_every_query_is_in_exactly_one_shard(count):
    shards = [shard_queries(QIDS, i, count) for i in range(1, count + 1)]
    assert sum(len(s) for s in shards) == len(QIDS)
    assert set().union(*shards) == set(QIDS)


def test_the_split_is_sha1_of_the_qid_not_python_hash():
    # Pinned: a job array spread over machines must agree on it forever.
    expected = {qid: 1 + int.from_bytes(hashlib.sha1(qid.encode()).digest()[:8], "big") % 4 for qid in QIDS}
    assert {qid: shard_of(qid, 4) for qid in QIDS} == expected
    assert [shard_of(q, 4) for q in ("q01", "q02", "q03", "q04", "q05", "q06", "q07", "q08")] == [2, 4, 4, 2, 1, 3, 1, 3]
    assert shard_of("Ω-query", 3) == 1 + int.from_bytes(hashlib.sha1("Ω-query".encode()).digest()[:8], "big") % 3


def test_the_split_is_the_same_in_every_python_process():
    code = ("from rank1_cli.workflows.shard import shard_queries; "
            f"print(sorted(shard_queries({QIDS!r}, 2, 3)))")
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        outputs.add(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                   env=env, cwd=REPO).stdout)
    assert len(outputs) == 1
    assert outputs.pop().strip() == str(sorted(shard_queries(QIDS, 2, 3)))


def test_shards_are_roughly_balanced_on_many_queries():
    qids = [f"query-{i}" for i in range(4000)]
    sizes = [len(shard_queries(qids, i, 8)) for i in range(1, 9)]
    assert min(sizes) > 400 and max(sizes) < 600


@pytest.mark.parametrize("spec, expected", [("1/4", (1, 4)), ("4/4", (4, 4)), (" 2 / 8 ", (2, 8)), ("1/1", (1, 1))])
def test_parse_shard(spec, expected):
    assert parse_shard(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("0/4", "numbered from 1"), ("5/4", "between 1 and 4"), ("1/0", "at least 1"), ("2-4", "expected I/N"),
    ("a/b", "expected I/N"), ("", "expected I/N"), ("-1/4", "expected I/N"),
])
def test_bad_shard_specs_say_what_is_expected(spec, message):
    with pytest.raises(InputError, match=message):
        parse_shard(spec)


def test_shard_queries_rejects_an_index_out_of_range():
    with pytest.raises(InputError):
        shard_queries(QIDS, 0, 4)


def test_rerank_refuses_a_bad_shard_before_any_model_loads():
    with pytest.raises(InputError, match="numbered from 1"):
        prepare_rerank(str(SAMPLE / "run.bm25.trec"), source(),
                       RerankOptions(model=str(TINY_MODEL), top_k=2, max_model_len=4096, shard="0/4"))


# --- rerank shards through the real pipeline -----------------------------------------------

class HashEngine:
    """Deterministic stand-in: each prompt's score is a function of the prompt alone; prompts
    whose hash is divisible by 5 'run out of budget' and go through the repair pass."""

    name = "hash"

    def __init__(self, true_id, false_id):
        self.true_id, self.false_id = true_id, false_id

    @staticmethod
    def _digest(prompt):
        return hashlib.sha1(prompt.encode()).digest()

    def generate(self, prompts_, settings):
        for i, prompt in enumerate(prompts_):
            d = self._digest(prompt)
            if d[2] % 5 == 0:
                yield i, Generation("thinking, unfinished", settings.max_tokens, "length", None, None)
                continue
            lt, lf = -d[0] / 40, -d[1] / 40
            stop = prompts.STOP_TRUE if lt >= lf else prompts.STOP_FALSE
            yield i, Generation("reasoning " + d.hex()[:8], 7, "stop", stop,
                                {self.true_id: lt, self.false_id: lf, 11: -0.01})

    def force_verdict(self, prompts_, true_id, false_id):
        return [VerdictLogprobs(-self._digest(p)[3] / 30, -self._digest(p)[4] / 30) for p in prompts_]

    def close(self):
        pass


def source():
    return CollectionSource(corpus=str(SAMPLE / "corpus.jsonl"), queries=str(SAMPLE / "queries.tsv"))


def rerank_to_files(run_path, out_dir, name, top_k=3, shard=None, **options):
    """What `rank1 rerank RUN -o OUT [--shard I/N]` does: returns (run path, traces path)."""
    out_run, out_traces = out_dir / f"{name}.trec", out_dir / f"{name}.traces.jsonl"
    job = prepare_rerank(str(run_path), source(),
                         RerankOptions(model=str(TINY_MODEL), top_k=top_k, dtype="float32", max_model_len=4096,
                                       max_reasoning_tokens=64, shard=f"{shard[0]}/{shard[1]}" if shard else None,
                                       **options))
    result = rerank_with_engine(job, HashEngine(job.tokens.true_id, job.tokens.false_id))
    write_traces(out_traces, result.traces.values())
    write_run(out_run, result.ranking, job.options.tag)
    return out_run, out_traces


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """The sample run reranked whole, and in 3 shards."""
    out = tmp_path_factory.mktemp("shards")
    run = str(SAMPLE / "run.bm25.trec")
    whole = rerank_to_files(run, out, "whole")
    parts = [rerank_to_files(run, out, f"part{i}", shard=(i, 3)) for i in (1, 2, 3)]
    return out, whole, parts


def test_merged_shards_equal_the_unsharded_rerank_byte_for_byte(sharded, tmp_path):
    _, (whole_run, whole_traces), parts = sharded
    merged_run, merged_traces = tmp_path / "merged.trec", tmp_path / "merged.traces.jsonl"
    summary = merge_shards([r for r, _ in parts], [t for _, t in parts], merged_run, merged_traces,
                           first_stage=str(SAMPLE / "run.bm25.trec"))
    assert merged_run.read_text() == whole_run.read_text()
    assert merged_traces.read_text() == whole_traces.read_text()
    assert summary.shards == 3 and summary.queries == 25 and summary.traces == 75
    assert any(t.completion == "forced" for t in read_traces(merged_traces))   # the repair path is in it


def test_merge_without_the_first_stage_run_has_the_same_content(sharded, tmp_path):
    _, (whole_run, whole_traces), parts = sharded
    merged_run, merged_traces = tmp_path / "m.trec", tmp_path / "m.traces.jsonl"
    merge_shards([r for r, _ in reversed(parts)], [t for _, t in reversed(parts)], merged_run, merged_traces)
    assert sorted(merged_run.read_text().splitlines()) == sorted(whole_run.read_text().splitlines())
    assert sorted(merged_traces.read_text().splitlines()) == sorted(whole_traces.read_text().splitlines())
    assert read_run(merged_run) == read_run(whole_run)


def test_each_shard_holds_only_its_queries_and_says_which_it_is(sharded):
    _, _, parts = sharded
    seen = []
    for i, (run, traces) in enumerate(parts, start=1):
        qids = set(read_run(run))
        assert qids == shard_queries(QIDS, i, 3)
        assert {t.settings["shard"] for t in read_traces(traces)} == {f"{i}/3"}
        seen.extend(qids)
    assert sorted(seen) == QIDS


def test_merge_reports_a_missing_shard(sharded, tmp_path):
    _, _, parts = sharded
    with pytest.raises(InputError, match=r"shard 2/3 is missing; merge needs the output of every shard"):
        merge_shards([parts[0][0], parts[2][0]], [parts[0][1], parts[2][1]], tmp_path / "m.trec", None)
    with pytest.raises(InputError, match=r"shard 2/3 is missing"):
        merge_shards([parts[0][0], parts[2][0]], [parts[0][1], parts[2][1]], tmp_path / "m.trec", None,
                     first_stage=str(SAMPLE / "run.bm25.trec"))
    assert not (tmp_path / "m.trec").exists()


def test_merge_reports_a_shard_given_twice(sharded, tmp_path):
    _, _, parts = sharded
    copy_run, copy_traces = tmp_path / "copy.trec", tmp_path / "copy.traces.jsonl"
    copy_run.write_text(parts[0][0].read_text())
    copy_traces.write_text(parts[0][1].read_text())
    with pytest.raises(InputError, match=r"query q\d+ is in two shards|shard 1/3 is given twice"):
        merge_shards([parts[0][0], copy_run, parts[1][0], parts[2][0]],
                     [parts[0][1], copy_traces, parts[1][1], parts[2][1]], tmp_path / "m.trec", None)
    with pytest.raises(InputError, match="given twice"):
        merge_shards([parts[0][0], parts[0][0]], [parts[0][1], parts[0][1]], tmp_path / "m.trec", None)


def test_merge_reports_a_query_in_two_shards(sharded, tmp_path):
    _, _, parts = sharded
    # Shard 2's run and traces with one query of shard 1 slipped in.
    stray_qid = sorted(read_run(parts[0][0]))[0]
    stray_lines = [l for l in parts[0][0].read_text().splitlines(keepends=True) if l.split()[0] == stray_qid]
    stray_traces = [l for l in parts[0][1].read_text().splitlines(keepends=True) if json.loads(l)["qid"] == stray_qid]
    bad_run, bad_traces = tmp_path / "bad.trec", tmp_path / "bad.traces.jsonl"
    bad_run.write_text(parts[1][0].read_text() + "".join(stray_lines))
    bad_traces.write_text(parts[1][1].read_text()
                          + "".join(l.replace('"shard": "1/3"', '"shard": "2/3"') for l in stray_traces))
    with pytest.raises(InputError, match=f"query {stray_qid} is in two shards"):
        merge_shards([parts[0][0], bad_run, parts[2][0]], [parts[0][1], bad_traces, parts[2][1]],
                     tmp_path / "m.trec", None)
    # Alone (without shard 1), the query is still caught as not belonging to shard 2.
    with pytest.raises(InputError, match=f"query {stray_qid} belongs to shard 1/3, not 2/3"):
        merge_shards([bad_run], [bad_traces], tmp_path / "m.trec", None)


def test_merge_refuses_an_unfinished_shard(sharded, tmp_path):
    _, _, parts = sharded
    records = [json.loads(l) for l in parts[1][1].read_text().splitlines()]
    records[0].update(completion="pending", score=None)
    pending = tmp_path / "pending.traces.jsonl"
    pending.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(InputError, match=r"shard 2/3 is unfinished \(1 pairs still pending\)"):
        merge_shards([p[0] for p in parts], [parts[0][1], pending, parts[2][1]], tmp_path / "m.trec", None)
    # A shard whose run was never written (it is written when the rerank completes).
    no_run = tmp_path / "empty.trec"
    no_run.write_text("")
    with pytest.raises(InputError, match="did not finish"):
        merge_shards([parts[0][0], no_run, parts[2][0]], [p[1] for p in parts], tmp_path / "m.trec", None)
    with pytest.raises(InputError, match="no such file"):
        merge_shards([parts[0][0], tmp_path / "nope.trec", parts[2][0]], [p[1] for p in parts],
                     tmp_path / "m.trec", None)


def test_merge_refuses_shards_of_different_settings_or_splits(sharded, tmp_path):
    _, _, parts = sharded
    other = tmp_path / "other.traces.jsonl"
    other.write_text(parts[2][1].read_text().replace('"max_reasoning_tokens": 64', '"max_reasoning_tokens": 99'))
    with pytest.raises(InputError, match="max_reasoning_tokens: 64 in the file, 99 now"):
        merge_shards([p[0] for p in parts], [parts[0][1], parts[1][1], other], tmp_path / "m.trec", None)
    relabelled = tmp_path / "relabelled.traces.jsonl"
    relabelled.write_text(parts[2][1].read_text().replace('"shard": "3/3"', '"shard": "3/4"'))
    with pytest.raises(InputError, match="different splits"):
        merge_shards([p[0] for p in parts], [parts[0][1], parts[1][1], relabelled], tmp_path / "m.trec", None)


def test_merge_refuses_unsharded_outputs_and_mismatched_pairs(sharded, tmp_path):
    out, (whole_run, whole_traces), parts = sharded
    with pytest.raises(InputError, match="not written by a sharded rerank"):
        merge_shards([whole_run], [whole_traces], tmp_path / "m.trec", None)
    with pytest.raises(InputError, match="the run and the traces come from different reranks"):
        merge_shards([parts[1][0], parts[0][0], parts[2][0]], [parts[0][1], parts[1][1], parts[2][1]],
                     tmp_path / "m.trec", None)
    with pytest.raises(InputError, match="2 runs but 1 traces"):
        merge_shards([parts[0][0], parts[1][0]], [parts[0][1]], tmp_path / "m.trec", None)


def test_an_empty_shard_merges(tmp_path):
    # 3 queries in 4 shards: q01 -> 2, q02 and q03 -> 4, so shards 1 and 3 get none and write empty outputs.
    run = str(SAMPLE / "run.bm25.trec")
    small = tmp_path / "small.trec"
    small.write_text("".join(l for l in open(run) if l.split()[0] in ("q01", "q02", "q03")))
    count = 4
    owners = {shard_of(q, count) for q in ("q01", "q02", "q03")}
    assert len(owners) < count                        # at least one shard is empty
    parts = [rerank_to_files(str(small), tmp_path, f"s{i}", top_k=2, shard=(i, count)) for i in range(1, count + 1)]
    whole = rerank_to_files(str(small), tmp_path, "whole", top_k=2)
    summary = merge_shards([p[0] for p in parts], [p[1] for p in parts], tmp_path / "m.trec",
                           tmp_path / "m.traces.jsonl", first_stage=str(small))
    assert (summary.shards, summary.empty_shards) == (count, count - len(owners))
    assert (tmp_path / "m.trec").read_text() == whole[0].read_text()
    assert (tmp_path / "m.traces.jsonl").read_text() == whole[1].read_text()
    # Leaving a non-empty shard out is still caught even with the empty ones given.
    full = [p for p in parts if p[0].read_text()]
    empties = [p for p in parts if not p[0].read_text()]
    with pytest.raises(InputError, match="missing"):
        merge_shards([p[0] for p in full[1:] + empties], [p[1] for p in full[1:] + empties], tmp_path / "x.trec", None,
                     first_stage=str(small))


def test_merge_imports_every_shards_reasoning_into_the_store(sharded, tmp_path):
    _, _, parts = sharded
    store = tmp_path / "store.sqlite"
    traces = [arg for _, t in parts for arg in ("--traces", str(t))]
    proc = subprocess.run([*RANK1, "merge", *[str(r) for r, _ in parts], *traces, "-o", str(tmp_path / "m.trec"),
                           "--store", str(store)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "store: 75 new generations imported" in proc.stderr
    with Store(store) as opened:
        assert opened.count() == 75


@pytest.mark.parametrize("run_name, traces_name", [("rank1.{i}.trec", "rank1.{i}.traces.jsonl"),
                                                   ("rank1.trec.{i}", "rank1.trec.{i}.traces.jsonl")])
def test_merge_finds_each_shards_traces_and_names_its_own_by_the_runs_names(run_name, traces_name, sharded, tmp_path):
    _, (whole_run, whole_traces), parts = sharded
    shards, merged = tmp_path / "shards.v2", tmp_path / "merged runs"
    shards.mkdir()
    merged.mkdir()
    for i, (run, traces) in enumerate(parts, 1):      # what `-o shards.v2/RUN_NAME` in a job array wrote
        (shards / run_name.format(i=i)).write_bytes(run.read_bytes())
        (shards / traces_name.format(i=i)).write_bytes(traces.read_bytes())
    proc = subprocess.run([*RANK1, "merge", *(str(shards / run_name.format(i=i)) for i in (1, 2, 3)),
                           "--first-stage", str(SAMPLE / "run.bm25.trec"), "-o", str(merged / "rünk1.dl19.trec.gz"),
                           "--no-store"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in merged.iterdir()) == ["rünk1.dl19.traces.jsonl", "rünk1.dl19.trec.gz"]
    assert gzip.decompress((merged / "rünk1.dl19.trec.gz").read_bytes()) == whole_run.read_bytes()
    assert (merged / "rünk1.dl19.traces.jsonl").read_bytes() == whole_traces.read_bytes()


def test_merge_takes_the_first_stage_run_as_mteb_predictions_too(sharded, tmp_path):
    _, (whole_run, _), parts = sharded
    predictions = {}
    for line in (SAMPLE / "run.bm25.trec").read_text().splitlines():
        qid, _, docid, _, score, _ = line.split()
        predictions.setdefault(qid, {})[docid] = float(score)
    first_stage = tmp_path / "bm25.json"
    first_stage.write_text(json.dumps(predictions))
    merge_shards([r for r, _ in parts], [t for _, t in parts], tmp_path / "m.trec", None, first_stage=str(first_stage))
    assert (tmp_path / "m.trec").read_text() == whole_run.read_text()



def _edited(tmp_path, source, name, edit):
    path = tmp_path / name
    path.write_text(edit(source.read_text()))
    return path


MERGE_ERRORS = {
    # name: (build (runs, traces) from the parts and tmp_path, the whole message; {r0}, {t0}, ... name the files)
    "no runs": (lambda p, tmp: ([], []), "merge needs the output runs of the shards"),
    "a traces file too few": (lambda p, tmp: ([p[0][0], p[1][0]], [p[0][1]]),
                              "merge got 2 runs but 1 traces files; give one traces file per run, in the same order"),
    "a run with 5 columns": (lambda p, tmp: ([_edited(tmp, p[0][0], "r.trec", lambda t: "q01 Q0 d001 1 0.5\n" + t),
                                              p[1][0], p[2][0]], [x[1] for x in p]),
                             "{tmp}/r.trec:1: expected 6 whitespace-separated columns 'qid Q0 docid rank score tag', "
                             "found 5: 'q01 Q0 d001 1 0.5'"),
    "a torn traces line": (lambda p, tmp: ([x[0] for x in p], [p[0][1], _edited(tmp, p[1][1], "t.jsonl",
                                                                                lambda t: t + '{"qid": "q0'), p[2][1]]),
                           "{tmp}/t.jsonl:{n}: not a trace record (a torn line: the rerank of this shard did not "
                           "finish; run it again to finish it)"),
    "no traces file": (lambda p, tmp: ([x[0] for x in p], [p[0][1], tmp / "none.jsonl", p[2][1]]),
                       "{tmp}/none.jsonl: no such traces file (the traces of shard run {r1}); pass each shard's "
                       "traces with --traces, in the order of the runs"),
    "empty traces": (lambda p, tmp: ([x[0] for x in p], [p[0][1], _edited(tmp, p[1][1], "t.jsonl", lambda t: ""),
                                                         p[2][1]]),
                     "{tmp}/t.jsonl is empty but {r1} is not: not the traces of that run"),
    "traces of two shards": (lambda p, tmp: ([x[0] for x in p], [p[0][1], _edited(
        tmp, p[1][1], "t.jsonl", lambda t: t.replace('"shard": "2/3"', '"shard": "1/3"', 1)), p[2][1]]),
        '{tmp}/t.jsonl mixes traces of several shards ("1/3", "2/3")'),
    "a bad shard label": (lambda p, tmp: ([x[0] for x in p], [p[0][1], _edited(
        tmp, p[1][1], "t.jsonl", lambda t: t.replace('"shard": "2/3"', '"shard": "2 of 3"')), p[2][1]]),
        "{tmp}/t.jsonl: bad shard label '2 of 3' in its settings"),
    "every shard empty": (lambda p, tmp: ([_edited(tmp, p[0][0], "r.trec", lambda t: "")],
                                          [_edited(tmp, p[0][1], "t.jsonl", lambda t: "")]),
                          "every shard given is empty: nothing to merge"),
    "other tags": (lambda p, tmp: ([p[0][0], _edited(tmp, p[1][0], "r.trec", lambda t: t.replace(" rank1\n", " x\n")),
                                    p[2][0]], [x[1] for x in p]),
                   "the shard runs have different tags (rank1, x); rerank every shard with the same --tag"),
}


@pytest.mark.parametrize("case", list(MERGE_ERRORS))
def test_merge_errors_say_which_file_and_what_to_do(case, sharded, tmp_path):
    _, _, parts = sharded
    build, message = MERGE_ERRORS[case]
    runs, traces = build(parts, tmp_path)
    lines = len(parts[1][1].read_text().splitlines()) + 1
    with pytest.raises(InputError) as error:
        merge_shards(runs, traces, tmp_path / "m.trec", None)
    assert str(error.value) == message.format(tmp=tmp_path, r1=parts[1][0], n=lines)
    assert not (tmp_path / "m.trec").exists()


def test_merge_says_which_shards_are_missing_and_what_they_hold(sharded, tmp_path):
    _, _, parts = sharded
    run = str(SAMPLE / "run.bm25.trec")
    cases = [
        ([0], None, "shards 2/3, 3/3 are missing; merge needs the output of every shard"),
        ([0], run, f"shards 2/3, 3/3 are missing: 16 queries of {run} belong to them"),
        ([0, 1], run, f"shard 3/3 is missing: 7 queries of {run} belong to it"),
    ]
    for given, first_stage, message in cases:
        with pytest.raises(InputError) as error:
            merge_shards([parts[i][0] for i in given], [parts[i][1] for i in given], tmp_path / "m.trec", None,
                         first_stage=first_stage)
        assert str(error.value) == message
    # the first-stage run lacks a query a shard holds
    fewer = tmp_path / "fs.trec"
    fewer.write_text("".join(line for line in open(run) if not line.startswith("q01 ")))
    with pytest.raises(InputError) as error:
        merge_shards([p[0] for p in parts], [p[1] for p in parts], tmp_path / "m.trec", None, first_stage=str(fewer))
    assert str(error.value) == f"query q01 of 1/3 ({parts[0][0]}) is not in {fewer}"


def test_merge_summary_counts_what_was_written(sharded, tmp_path):
    _, (whole_run, _), parts = sharded
    summary = merge_shards([p[0] for p in parts], [p[1] for p in parts], tmp_path / "m.trec",
                           tmp_path / "m.traces.jsonl", first_stage=str(SAMPLE / "run.bm25.trec"))
    assert (summary.shards, summary.queries, summary.run_lines, summary.traces, summary.empty_shards) == \
        (3, 25, 1250, 75, 0)
    assert len((tmp_path / "m.trec").read_text().splitlines()) == 1250


def test_merge_names_the_shard_and_file_of_what_does_not_fit(sharded, tmp_path):
    _, _, parts = sharded
    runs, traces = [p[0] for p in parts], [p[1] for p in parts]
    # Shard 2 of 3 reranked with another budget and dtype: both differences are named.
    other = _edited(tmp_path, parts[1][1], "other.traces.jsonl", lambda t: t.replace(
        '"max_reasoning_tokens": 64', '"max_reasoning_tokens": 99').replace('"dtype": "float32"', '"dtype": "float16"'))
    with pytest.raises(InputError) as error:
        merge_shards(runs, [traces[0], other, traces[2]], tmp_path / "m.trec", None)
    assert str(error.value) == (f"shard 2/3 ({runs[1]}) was made with other settings than shard 1/3 ({runs[0]}): "
                                "dtype: 'float32' in the file, 'float16' now; max_reasoning_tokens: 64 in the file, 99 now")
    relabelled = _edited(tmp_path, parts[2][1], "relabelled.traces.jsonl",
                         lambda t: t.replace('"shard": "3/3"', '"shard": "3/4"'))
    with pytest.raises(InputError) as error:
        merge_shards(runs, [traces[0], traces[1], relabelled], tmp_path / "m.trec", None)
    assert str(error.value) == f"the shards come from different splits: 1/3 ({runs[0]}), 2/3 ({runs[1]}), 3/4 ({runs[2]})"
    with pytest.raises(InputError) as error:
        merge_shards(runs[1:], traces[1:], tmp_path / "m.trec", None)
    assert str(error.value) == "shard 1/3 is missing; merge needs the output of every shard"
    # An empty shard's output besides all three: one shard more than the split has.
    empty_run, empty_traces = tmp_path / "empty.trec", tmp_path / "empty.traces.jsonl"
    empty_run.write_text("")
    empty_traces.write_text("")
    with pytest.raises(InputError) as error:
        merge_shards([*runs, empty_run], [*traces, empty_traces], tmp_path / "m.trec", None)
    assert str(error.value) == "merge got 4 shards but the split has 3"


def test_merge_reports_first_stage_queries_that_no_present_shard_holds(sharded, tmp_path):
    _, _, parts = sharded
    run = str(SAMPLE / "run.bm25.trec")
    more = tmp_path / "more.trec"
    extra = [f"x{i:02d}" for i in range(12)]
    more.write_text(open(run).read() + "".join(f"{q} Q0 d001 1 9.5 bm25\n" for q in extra))
    with pytest.raises(InputError) as error:
        merge_shards([p[0] for p in parts], [p[1] for p in parts], tmp_path / "m.trec", None, first_stage=str(more))
    assert str(error.value) == (f"12 queries of {more} are in no shard's output (e.g. x00 of shard "
                                f"{shard_of('x00', 3)}/3); were the shards made from another run?")


def test_merge_counts_the_traces_even_when_it_writes_none(sharded, tmp_path):
    _, _, parts = sharded
    summary = merge_shards([p[0] for p in parts], [p[1] for p in parts], tmp_path / "m.trec", None)
    assert (summary.queries, summary.traces) == (25, 75)


def test_merge_with_the_first_stage_refuses_a_shard_run_cut_short(sharded, tmp_path):
    _, _, parts = sharded
    lines = parts[1][0].read_text().splitlines(keepends=True)
    last_qid = lines[-1].split()[0]
    cut = _edited(tmp_path, parts[1][0], "cut.trec", lambda t: "".join(lines[:-10]))
    run = str(SAMPLE / "run.bm25.trec")
    with pytest.raises(InputError) as error:
        merge_shards([parts[0][0], cut, parts[2][0]], [p[1] for p in parts], tmp_path / "m.trec",
                     tmp_path / "m.traces.jsonl", first_stage=run)
    assert str(error.value) == (f"{cut}: query {last_qid} of shard 2/3 lacks 10 of its 50 documents in {run}: the "
                                "run was cut short or made from another first-stage run (or with --missing skip); "
                                "rerank that shard again")
    assert not (tmp_path / "m.trec").exists() and not (tmp_path / "m.traces.jsonl").exists()


def test_merge_with_the_first_stage_refuses_a_shard_without_some_of_its_top_k(sharded, tmp_path):
    # Shard 1 reranked without the tail, then its first query's third document and trace lost.
    _, _, parts = sharded
    head = tmp_path / "head.trec"
    head.write_text("".join(l for l in parts[0][0].read_text().splitlines(keepends=True) if int(l.split()[3]) <= 3))
    first_qid = head.read_text().split()[0]
    dropped = [l for l in head.read_text().splitlines(keepends=True) if l.startswith(first_qid + " ")][2]
    head.write_text(head.read_text().replace(dropped, ""))
    docid = dropped.split()[2]
    traces = _edited(tmp_path, parts[0][1], "t.jsonl", lambda t: "".join(
        l for l in t.splitlines(keepends=True) if (json.loads(l)["qid"], json.loads(l)["docid"]) != (first_qid, docid)))
    run = str(SAMPLE / "run.bm25.trec")
    merge_shards([head, parts[1][0], parts[2][0]], [traces, parts[1][1], parts[2][1]], tmp_path / "ok.trec", None)
    with pytest.raises(InputError) as error:
        merge_shards([head, parts[1][0], parts[2][0]], [traces, parts[1][1], parts[2][1]], tmp_path / "m.trec",
                     None, first_stage=run)
    assert str(error.value).startswith(f"{head}: query {first_qid} of shard 1/3 lacks 1 of its 3 documents in {run}:")
    assert not (tmp_path / "m.trec").exists()


@pytest.mark.parametrize("change, why", [
    ({"prompt_sha256": "abc"}, "prompt_sha256 must be 64 lowercase hex digits"),
    ({"score": 0.25}, "score 0.25 does not follow from its logprobs"),
    ({"completion": "done"}, "completion must be one of stop, forced, fallback, pending"),
])
def test_merge_refuses_a_traces_line_store_import_would_refuse(sharded, tmp_path, change, why):
    _, _, parts = sharded
    records = [json.loads(l) for l in parts[1][1].read_text().splitlines()]
    records[3].update(change)
    bad = tmp_path / "bad.traces.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(InputError) as error:
        merge_shards([p[0] for p in parts], [parts[0][1], bad, parts[2][1]], tmp_path / "m.trec",
                     tmp_path / "m.traces.jsonl", first_stage=str(SAMPLE / "run.bm25.trec"))
    assert str(error.value) == f"{bad}:4: not a rank1 trace: {why}"
    assert not (tmp_path / "m.trec").exists() and not (tmp_path / "m.traces.jsonl").exists()


def test_merge_through_the_cli_names_the_shards_bad_traces_line_and_writes_nothing(sharded, tmp_path):
    _, _, parts = sharded
    records = [json.loads(l) for l in parts[2][1].read_text().splitlines()]
    records[1]["prompt_sha256"] = "abc"
    bad = tmp_path / "bad.traces.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in records))
    store = tmp_path / "store.sqlite"
    proc = subprocess.run([*RANK1, "merge", *[str(r) for r, _ in parts], "--traces", str(parts[0][1]), "--traces",
                           str(parts[1][1]), "--traces", str(bad), "-o", str(tmp_path / "m.trec"), "--store",
                           str(store)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (2, f"rank1: error: {bad}:2: not a rank1 trace: prompt_sha256 must be "
                                                 "64 lowercase hex digits\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.traces.jsonl"]
