"""--data-parallel: engine replicas in worker processes, placed on their own GPUs or cores."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, SAMPLE, TINY_MODEL
from rank1_cli.engines.vllm_replicas import Placement, plan_replicas
from rank1_cli.errors import InputError
from test_cli_rerank import PAIRS, TOP_K, rerank_command, stored, wait_for_store


# --- placement (no engine) -------------------------------------------------------------------

def test_each_replica_gets_its_own_gpus():
    assert plan_replicas(2, 2, ["0", "1", "2", "3"], [0]) == [Placement(gpus=("0", "1")), Placement(gpus=("2", "3"))]
    assert plan_replicas(3, 1, ["4", "6", "7"], [0]) == [Placement(gpus=(g,)) for g in ("4", "6", "7")]


def test_too_few_gpus_is_an_input_error_naming_the_count():
    with pytest.raises(InputError, match=r"data_parallel 2 x tensor_parallel 2 needs 4 GPUs; 3 visible \(0,1,2\)") as error:
        plan_replicas(2, 2, ["0", "1", "2"], [0])
    assert error.value.for_command_line().startswith("--data-parallel 2 x --tensor-parallel 2 needs 4 GPUs")


def test_on_cpu_the_cores_are_shared_out():
    assert plan_replicas(2, 1, None, [0, 1, 2, 3, 4]) == [Placement(cpus=(0, 1)), Placement(cpus=(2, 3))]
    assert plan_replicas(2, 1, None, [0, 1])[1].describe() == "CPU cores 1"
    with pytest.raises(InputError, match="needs a CPU core per replica; this process may use 2"):
        plan_replicas(3, 1, None, [0, 1])
    with pytest.raises(InputError, match="tensor_parallel above 1 needs GPUs"):
        plan_replicas(2, 2, None, [0, 1, 2, 3])


# --- two real replicas on tiny-rank1 ---------------------------------------------------------

def scores(traces: Path) -> dict[tuple[str, str], float]:
    return {(r["qid"], r["docid"]): r["score"] for r in map(json.loads, traces.read_text().splitlines())}


@pytest.fixture(scope="module")
def single_engine_scores(vllm_engine):
    from rank1_cli.collection import CollectionSource
    from rank1_cli.rerank import RerankOptions, prepare_rerank, rerank_with_engine

    prepared = prepare_rerank(str(SAMPLE / "run.bm25.trec"),
                              CollectionSource(corpus=str(SAMPLE / "corpus.jsonl"), queries=str(SAMPLE / "queries.tsv")),
                              RerankOptions(model=str(TINY_MODEL), top_k=TOP_K, dtype="float32", max_model_len=4096,
                                            max_reasoning_tokens=64))
    result = rerank_with_engine(prepared, vllm_engine)
    return {key: trace.score for key, trace in result.traces.items()}


def session_is_gone(sid: int, timeout: float) -> bool:
    """No live process is left in the session rank1 was started in (replicas run in their own
    process groups, and vLLM's engine processes below them)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            state, session = fields[0], int(fields[3])
            if session == sid and state != "Z":
                alive.append(stat.parent.name)
        if not alive:
            return True
        time.sleep(0.2)
    return False


def replica_pids(parent: int) -> list[int]:
    """The parent's worker processes (multiprocessing spawn children, not its resource tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    found = []
    for pid in map(int, children):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            found.append(pid)
    return sorted(found)


@pytest.mark.engine
def test_replicas_score_like_one_engine_and_a_killed_parent_or_replica_loses_nothing(tmp_path, single_engine_scores):
    output, traces, store = tmp_path / "run.trec", tmp_path / "traces.jsonl", tmp_path / "store.sqlite"
    command = rerank_command(output, traces, store, "--data-parallel", "2", "--chunk-size", "8")

    # SIGKILL of rank1 alone (the OOM killer, `kill -9 PID`): its replicas notice and exit.
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_for_store(store, PAIRS // 5, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert session_is_gone(proc.pid, 60)

    # SIGKILL of one replica: the run stops with a clear error and what is saved.
    log = open(tmp_path / "stderr.txt", "w+")
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    wait_for_store(store, 2 * PAIRS // 5, proc)
    victim = replica_pids(proc.pid)[-1]
    os.kill(victim, signal.SIGKILL)
    assert proc.wait(timeout=180) == 1
    log.seek(0)
    message = log.read()
    # The kill lands while pairs are generated or, on a fast round, during the repair pass.
    failure = re.search(rf"rank1: error: the vllm engine failed(?: in the repair pass)?: RuntimeError: replica \d of 2 \(pid {victim}\) "
                        r"stopped unexpectedly \(exit code -9\)\. The store .* holds (\d+) generations of this "
                        r"model and settings; run the same command again to resume", " ".join(message.split()))
    assert failure, message
    assert "Traceback" not in message
    assert not output.exists() and not traces.exists()
    assert session_is_gone(proc.pid, 60)   # the other replica and every engine process exited
    saved = int(failure.group(1))
    assert saved == stored(store)
    assert PAIRS // 5 <= saved <= PAIRS

    # The same command resumes; here into a pipeline: only the run reaches stdout.
    finish = subprocess.Popen(rerank_command("-", traces, store, "--data-parallel", "2", "--chunk-size", "8"), cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    stdout, stderr = finish.communicate(timeout=900)
    assert finish.returncode == 0, stderr
    assert f"store: {saved} pairs from" in " ".join(stderr.split())
    lines = stdout.splitlines()
    assert len(lines) == len((SAMPLE / "run.bm25.trec").read_text().splitlines())
    assert all(re.fullmatch(r"\S+ Q0 \S+ \d+ \S+ rank1", line) for line in lines)
    got = scores(traces)
    assert got.keys() == single_engine_scores.keys()
    assert max(abs(got[k] - single_engine_scores[k]) for k in got) < 1e-3   # same scores as one engine
    assert session_is_gone(finish.pid, 30)
