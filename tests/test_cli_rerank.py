"""`rank1 rerank` end to end under real vLLM: a shell pipeline, and interrupted runs that resume
from the reasoning store."""

import json
import os
import shlex
import signal
import subprocess
import sys

import pytest
from commands import PAIRS, rerank_command, stored, wait_for_store
from conftest import REPO, SAMPLE

pytestmark = pytest.mark.engine

@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """`rank1 rerank ... -o - | tee run | rank1 eval - ...`: the run is clean on stdout, logs on stderr."""
    tmp = tmp_path_factory.mktemp("pipeline")
    rerank = shlex.join(rerank_command("-", tmp / "traces.jsonl", tmp / "store.sqlite"))
    evaluate = shlex.join([sys.executable, "-m", "rank1_cli.cli", "eval", "-", "--qrels", str(SAMPLE / "qrels.txt"),
                           "-f", "tsv", "-m", "ndcg_cut.10"])
    script = f"set -o pipefail; {rerank} 2>{tmp / 'rerank.err'} | tee {tmp / 'run.trec'} | {evaluate}"
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr + (tmp / "rerank.err").read_text()
    return tmp, proc


def test_pipeline_output_is_a_clean_run_and_evaluates(uninterrupted):
    tmp, proc = uninterrupted
    lines = (tmp / "run.trec").read_text().splitlines()
    source = (SAMPLE / "run.bm25.trec").read_text().splitlines()
    assert len(lines) == len(source)                       # keep-tail: no document lost
    for line in lines:                                     # no log line leaked into stdout
        qid, q0, docid, rank, score, tag = line.split()
        assert q0 == "Q0" and tag == "rank1"
        float(score), int(rank)
    assert {tuple(l.split()[::2][:2]) for l in lines} == {tuple(l.split()[::2][:2]) for l in source}
    [measure, qid, value] = proc.stdout.split()
    assert (measure, qid) == ("ndcg_cut_10", "all") and 0.0 < float(value) <= 1.0
    stderr = (tmp / "rerank.err").read_text()
    assert f"reranked {PAIRS} pairs of 25 queries" in stderr
    assert len((tmp / "traces.jsonl").read_text().splitlines()) == PAIRS


def test_interrupted_runs_resume_from_the_store_to_the_same_run(uninterrupted, tmp_path):
    reference, _ = uninterrupted
    output, traces, store = tmp_path / "run.trec", tmp_path / "traces.jsonl", tmp_path / "store.sqlite"
    command = rerank_command(output, traces, store, "--chunk-size", "8")
    log = open(tmp_path / "stderr.txt", "w+")

    # Ctrl-C (SIGINT to the whole process group, as a terminal sends it) after a third.
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    wait_for_store(store, PAIRS // 3, proc)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    log.seek(0)
    message = log.read()
    assert "interrupted" in message and "run the same command again to resume" in message, message
    assert "Traceback" not in message
    saved_at_interrupt = stored(store)
    assert not output.exists() and not traces.exists()          # a failed rerank leaves no output file

    # SIGKILL at two thirds: nothing can be flushed by the victim.
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for_store(store, 2 * PAIRS // 3, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    saved_at_kill = stored(store)
    assert not output.exists() and not traces.exists()

    finish = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert finish.returncode == 0, finish.stderr
    from_store = int(finish.stderr.split("store: ")[1].split()[0])
    generated = int(finish.stderr.split(" distinct prompts")[0].rsplit(" ", 1)[1])
    print(json.dumps({"saved_at_interrupt": saved_at_interrupt, "saved_at_kill": saved_at_kill,
                      "from_store": from_store, "generated": generated}), file=sys.stderr)
    # Every committed generation is reused and no pair is generated twice.
    assert from_store == saved_at_kill and generated == PAIRS - saved_at_kill
    records = [json.loads(line) for line in traces.read_text().splitlines()]
    assert len(records) == PAIRS == len({(r["qid"], r["docid"]) for r in records})   # no pair twice
    assert sum(r["origin"] == "store" for r in records) == from_store
    assert output.read_bytes() == (reference / "run.trec").read_bytes()
