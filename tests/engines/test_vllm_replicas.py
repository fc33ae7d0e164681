"""--data-parallel: engine replicas in worker processes, placed on their own GPUs or cores."""

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path

import pytest
from commands import PAIRS, rerank_command, stored, wait_for_store
from conftest import REPO, SAMPLE

from rank1_cli.engines.base import Generation, GenerationSettings, VerdictLogprobs
from rank1_cli.engines.vllm_replicas import Placement, VllmReplicas, _serve, plan_replicas
from rank1_cli.errors import InputError

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


def wait_for_replicas(parent: int, count: int, timeout: float = 30) -> list[int]:
    deadline = time.time() + timeout
    while len(found := replica_pids(parent)) < count and time.time() < deadline:
        time.sleep(0.1)
    assert len(found) == count, f"expected {count} replica processes under pid {parent}, found {found}"
    return found


@pytest.mark.engine
def test_replicas_score_like_one_engine_and_a_killed_parent_or_replica_loses_nothing(tmp_path, single_engine_traces):
    output, traces, store = tmp_path / "run.trec", tmp_path / "traces.jsonl", tmp_path / "store.sqlite"
    command = rerank_command(output, traces, store, "--data-parallel", "2", "--chunk-size", "8")

    # SIGKILL of rank1 alone (the OOM killer, `kill -9 PID`): its replicas notice and exit.
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_for_store(store, PAIRS // 5, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert session_is_gone(proc.pid, 60)

    # SIGKILL of one replica: the run stops with a clear error and what is saved. The kill lands as
    # soon as the replicas report ready (--verbose logs it), while their first pass is under way:
    # waiting for stored pairs instead raced the run, because a replica's whole share is one vLLM
    # batch whose pairs all finish on the same step.
    log = open(tmp_path / "stderr.txt", "w+")
    proc = subprocess.Popen([*command, "--verbose"], cwd=REPO, stdout=subprocess.PIPE, stderr=log,
                            start_new_session=True)
    deadline = time.time() + 600
    while "vLLM replicas ready" not in Path(log.name).read_text() and time.time() < deadline:
        assert proc.poll() is None, "rerank ended before its replicas were ready"
        time.sleep(0.05)
    victim = wait_for_replicas(proc.pid, 2)[-1]
    os.kill(victim, signal.SIGKILL)
    proc.wait(timeout=180)
    assert proc.returncode == 1
    log.seek(0)
    message = log.read()
    failure = re.search(rf"rank1: error: the vllm engine failed: RuntimeError: replica \d of 2 \(pid {victim}\) "
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
    assert got.keys() == single_engine_traces.keys()
    assert max(abs(got[k] - single_engine_traces[k][0]) for k in got) < 1e-3   # same scores as one engine
    assert session_is_gone(finish.pid, 30)


# --- how pairs are shared out (stand-in replicas: the real serving loop, a scripted engine) ------

class ScriptedReplicaEngine:
    """Finishes up to `per_step` queued prompts per step, `delay` seconds per step; records what it got."""

    def __init__(self, per_step: int, delay: float = 0.0):
        self.per_step, self.delay = per_step, delay
        self.received: list[list[int]] = []       # each `generate` message's indices, in arrival order
        self.most_queued = 0
        self.verdict_prompts: list[str] = []

    def stream(self, settings):
        engine = self

        class Stream:
            def __init__(self):
                self.queue = deque()

            @property
            def pending(self):
                return bool(self.queue)

            def add(self, items):
                engine.received.append([i for i, _ in items])
                self.queue.extend(items)
                engine.most_queued = max(engine.most_queued, len(self.queue))

            def step(self):
                time.sleep(engine.delay)
                done = [self.queue.popleft() for _ in range(min(engine.per_step, len(self.queue)))]
                return [(i, Generation(f"reasoning for {p}", 3, "stop", "</think> true", {1: -0.1, 2: -2.0}))
                        for i, p in done]

            def abort(self):
                self.queue.clear()

        return Stream()

    def force_verdict(self, prompts, true_id, false_id):
        self.verdict_prompts.extend(prompts)
        return [VerdictLogprobs(-float(len(p)), -1.0) for p in prompts]


class ResultQueue(queue.Queue):
    def cancel_join_thread(self):
        pass


class ThreadWorker:
    """What VllmReplicas needs of a worker process, over a thread running the real `_serve` loop."""

    pid = None

    def __init__(self, rank, engine, inbox, results):
        self.thread = threading.Thread(target=_serve, args=(rank, engine, inbox, results), daemon=True)
        self.thread.start()

    def is_alive(self):
        return self.thread.is_alive()


def stand_in_replicas(engines, window):
    replicas = VllmReplicas.__new__(VllmReplicas)
    replicas._config, replicas._tokenizer, replicas._call, replicas._next_check = None, None, 0, 0.0
    replicas._results = ResultQueue()
    replicas._inboxes = [queue.Queue() for _ in engines]
    replicas._window = [window] * len(engines)
    replicas._workers = [ThreadWorker(rank, engine, inbox, replicas._results)
                         for rank, (engine, inbox) in enumerate(zip(engines, replicas._inboxes))]
    return replicas


SETTINGS = GenerationSettings(max_tokens=8, stop=("</think> true", "</think> false"))


def test_a_small_batch_is_split_evenly_in_run_order():
    engines = [ScriptedReplicaEngine(per_step=4), ScriptedReplicaEngine(per_step=4)]
    replicas = stand_in_replicas(engines, window=16)
    try:
        prompts = [f"p{i}" for i in range(5)]
        results = dict(replicas.generate(prompts, SETTINGS))
        assert [engine.received for engine in engines] == [[[0, 1, 2]], [[3, 4]]]
        assert {i: g.text for i, g in results.items()} == {i: f"reasoning for p{i}" for i in range(5)}
        # the repair pass: contiguous shares, answers back in prompt order
        verdicts = replicas.force_verdict(["a", "bb", "ccc", "dddd", "eeeee"], 1, 2)
        assert [engine.verdict_prompts for engine in engines] == [["a", "bb", "ccc"], ["dddd", "eeeee"]]
        assert [v.logprob_true for v in verdicts] == [-1.0, -2.0, -3.0, -4.0, -5.0]
    finally:
        replicas.close()


def test_pairs_go_out_in_run_order_as_replicas_finish_never_more_than_their_window():
    # Replica 1 is four times slower: it must get fewer pairs, and neither may hold more than its
    # window (two scheduler batches), so both finish about together.
    engines = [ScriptedReplicaEngine(per_step=4, delay=0.002), ScriptedReplicaEngine(per_step=4, delay=0.008)]
    replicas = stand_in_replicas(engines, window=8)
    try:
        prompts = [f"p{i}" for i in range(200)]
        results = list(replicas.generate(prompts, SETTINGS))
    finally:
        replicas.close()
    assert sorted(i for i, _ in results) == list(range(200))                 # each pair once
    sent = [i for engine in engines for batch in engine.received for i in batch]
    assert sorted(sent) == list(range(200))
    for engine in engines:
        got = [i for batch in engine.received for i in batch]
        assert got == sorted(got)                                             # in run order
        assert engine.most_queued <= 8
        assert all(batch == list(range(batch[0], batch[-1] + 1)) for batch in engine.received)  # contiguous
    fast, slow = (sum(len(b) for b in engine.received) for engine in engines)
    assert engines[0].received[0] == list(range(8)) and engines[1].received[0] == list(range(8, 16))
    assert fast > 2 * slow, (fast, slow)
