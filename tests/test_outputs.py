"""The files rank1 names for the user: the traces path derived from a run's name (rerank's
default, merge's and report's), over names with several dots, .gz, folders with dots, spaces and
non-ASCII letters."""

import re

import pytest

from rank1_cli.errors import InputError
from rank1_cli.outputs import default_traces

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
