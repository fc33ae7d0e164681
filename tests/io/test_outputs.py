"""The files rank1 writes and names: a traces file being replaced keeps its reasoning (through
the CLI: test_cli_store.py); the traces path derived from a run's name (rerank's default,
merge's and report's), over names with several dots, .gz, folders with dots, spaces and
non-ASCII letters."""

import contextlib
import re

import pytest
from store_samples import KEY, SETTINGS, sha, trace_line

from rank1_cli.errors import InputError
from rank1_cli.io.outputs import default_traces
from rank1_cli.reasoning.store import Store, StoredGeneration
from rank1_cli.reasoning.store_admin import keep_replaced_traces


def traces_file(tmp_path, count=3, **changes):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(trace_line(i, **changes) + "\n" for i in range(count)))
    return path


def test_the_replaced_traces_go_into_the_store_and_what_is_there_stays(tmp_path):
    path, store = traces_file(tmp_path), tmp_path / "s.sqlite"
    with Store(store) as opened:
        opened.put_many(KEY, [StoredGeneration(sha(1), "fallback", None, None, None, 0, "mine")])
    with Store(store) as opened:
        report = keep_replaced_traces(str(path), opened, lambda: pytest.fail("asked only without a store"))
    assert (report.lines, report.added, report.already) == (3, 2, 1)
    with Store(store) as opened:
        assert opened.count() == 3
        assert [g.reasoning for g in opened.get_many(KEY, [sha(i) for i in range(3)]).values()] == \
            ["reasoning 0.", "mine", "reasoning 2."]


def test_without_a_store_traces_the_rerank_writes_again_may_be_replaced(tmp_path):
    path = traces_file(tmp_path)
    assert keep_replaced_traces(str(path), None, lambda: {(KEY, sha(i)) for i in range(3)}) is None
    with pytest.raises(InputError) as error:
        keep_replaced_traces(str(path), None, lambda: {(KEY, sha(0)), (KEY, sha(1))})
    assert str(error.value) == (
        f"{path} holds 1 generations of rank1 traces that this rerank would replace and not write again; with "
        f"--no-store they would be lost. To keep them: rerank with a store (without --no-store: they are imported "
        f"into it first), move {path} away, or name another --traces")


@pytest.mark.parametrize("store", [True, False])
def test_traces_no_store_can_take_are_never_replaced(tmp_path, store):
    old = {k: v for k, v in SETTINGS.items() if k not in ("model_revision", "engine")}
    path = traces_file(tmp_path, settings=old)
    with pytest.raises(InputError) as error, contextlib.ExitStack() as stack:
        opened = stack.enter_context(Store(tmp_path / "s.sqlite")) if store else None
        keep_replaced_traces(str(path), opened, lambda: {(KEY, sha(i)) for i in range(3)})
    assert str(error.value) == (
        f"{path} holds rank1 traces that this rerank would replace, and they cannot be imported into a store "
        f"({path}:1: not a rank1 trace: the settings do not say which model revision and engine made it (traces of "
        "an older rank1-cli): name the model they were made with (--model)). To keep them: import them with "
        f"`rank1 store import {path} --model M` (M: the model that made them) and move the file away, or name "
        "another --traces")
    if store:                   # the store is checked before the traces: it may exist, holding nothing
        with Store(tmp_path / "s.sqlite") as opened:
            assert opened.count() == 0
    else:
        assert not (tmp_path / "s.sqlite").exists()


def test_nothing_to_keep_without_a_traces_file(tmp_path):
    def unasked():
        pytest.fail("no traces file: nothing to ask")
    assert keep_replaced_traces(None, None, unasked) is None
    assert keep_replaced_traces("-", None, unasked) is None
    assert keep_replaced_traces(str(tmp_path / "new.jsonl"), None, unasked) is None
    assert not (tmp_path / "s.sqlite").exists()


# A run's name -> the traces path rerank writes beside it (and merge and report read back).
TRACES_OF = {
    "rank1.trec": "rank1.traces.jsonl",
    "rank1": "rank1.traces.jsonl",
    "rank1.3.trec": "rank1.3.traces.jsonl",
    "bm25.dl19.trec.gz": "bm25.dl19.traces.jsonl",
    "rank1.trec.gz": "rank1.traces.jsonl",
    "runs.v2/out": "runs.v2/out.traces.jsonl",
    "runs.v2/rank1.3.trec": "runs.v2/rank1.3.traces.jsonl",
    "/abs/runs.v2/x.run": "/abs/runs.v2/x.traces.jsonl",
    "my runs/rank1 final.trec": "my runs/rank1 final.traces.jsonl",
    "résultats/rünk·1 (ß).trec": "résultats/rünk·1 (ß).traces.jsonl",
    "./-": "-.traces.jsonl",                       # a file named '-', not stdout
    # Only a run's own suffix (and .gz) is replaced; any other part of the name may be what tells
    # two runs apart.
    "rank1.trec.3": "rank1.trec.3.traces.jsonl",
    "rank1.trec.3.gz": "rank1.trec.3.traces.jsonl",
    "rank1.dl19": "rank1.dl19.traces.jsonl",
    "rank1.TREC": "rank1.traces.jsonl",
    "results.txt": "results.traces.jsonl",
    "bm25.tsv": "bm25.traces.jsonl",
    "bm25.res": "bm25.traces.jsonl",
    ".trec": ".trec.traces.jsonl",
}


@pytest.mark.parametrize("output", list(TRACES_OF))
def test_the_default_traces_replace_the_runs_suffix_in_its_own_folder(output):
    assert default_traces(output) == TRACES_OF[output]


def test_a_run_on_stdout_has_no_default_traces():
    assert default_traces("-") is None


# A job array names its outputs by the task's number; no two of its shards may share a traces file
# (each would replace the other's), and no traces file may be another shard's run.
JOB_ARRAYS = ["shards/rank1.{i}.trec", "shards/rank1.trec.{i}", "shards/{i}.trec", "shards/{i}", "shards/{i}/rank1.trec",
              "shards/rank1.{i}.trec.gz", "shards/rank1.trec.{i}.gz", "shards/rank1-{i}", "shards.v{i}/rank1.trec",
              "rank1.dl{i}", "rank1.{i}"]


@pytest.mark.parametrize("pattern", JOB_ARRAYS)
def test_no_two_outputs_of_a_job_array_share_a_default_traces_file(pattern):
    outputs = [pattern.format(i=i) for i in range(1, 13)]
    traces = [default_traces(output) for output in outputs]
    assert len(set(traces)) == len(outputs), sorted(traces)
    assert not set(traces) & set(outputs)


@pytest.mark.parametrize("output", [".", "/", "runs/.."])
def test_a_folder_has_no_default_traces_and_says_so(output):
    with pytest.raises(InputError, match=f"^{re.escape(output)}: a folder, not a run file; give the traces with --traces$"):
        default_traces(output)


# --- never writing to a file it reads, never replacing a file it did not write -------------------

def test_an_output_naming_an_input_or_another_output_is_refused_whoever_spells_it(tmp_path, monkeypatch):
    from rank1_cli.io.outputs import check_outputs

    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 1 1 bm25\n")
    (tmp_path / "link.trec").symlink_to(run)
    monkeypatch.chdir(tmp_path)
    for spelling in (str(run), "run.trec", "./sub/../run.trec", "link.trec"):
        with pytest.raises(InputError) as error:
            check_outputs([("output run", spelling)], [("corpus", None), ("first-stage run", str(run))])
        assert str(error.value) == (f"{spelling}: the output run would overwrite the first-stage run, which this "
                                    "command reads; rank1 never writes to a file it reads, so choose another path")
    with pytest.raises(InputError) as error:
        check_outputs([("output run", "new.trec"), ("traces", "-"), ("traces", "./new.trec")], [])
    assert str(error.value) == "new.trec: named both as the output run and as the traces; give them different paths"
    check_outputs([("output run", "-"), ("traces", None), ("traces", "new.traces.jsonl")],
                  [("first-stage run", "-"), ("queries", str(run))])           # stdin/stdout and None: skipped


def test_a_traces_output_replaces_only_rank1_traces(tmp_path):
    from rank1_cli.io.outputs import check_traces_target

    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"my": "notes"}\n')
    with pytest.raises(InputError) as error:
        check_traces_target(str(notes))
    assert str(error.value) == (f"{notes}: exists and is not a rank1 traces file; it is left as it is. Choose another "
                                "path for the traces, or move that file away")
    traces = tmp_path / "old.traces.jsonl"
    traces.write_text(trace_line(0) + "\n")
    for fine in (None, "-", str(traces), str(tmp_path / "new.traces.jsonl")):
        check_traces_target(fine)
