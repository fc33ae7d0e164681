"""The files rank1 names for the user: the traces path derived from a run's name (rerank's
default, merge's and report's), over names with several dots, .gz, folders with dots, spaces and
non-ASCII letters."""

import pytest

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
}


@pytest.mark.parametrize("output", list(TRACES_OF))
def test_the_default_traces_replace_the_runs_suffix_in_its_own_folder(output):
    assert default_traces(output) == TRACES_OF[output]


def test_a_run_on_stdout_has_no_default_traces():
    assert default_traces("-") is None
