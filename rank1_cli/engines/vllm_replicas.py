"""Data parallelism on one node: N offline vLLM engines, one per worker process.

rank1 models are dense, and for dense models vLLM's data parallelism is N independent engine
replicas (its `data_parallel_size` synchronises ranks every step for MoE models, and its offline
`LLM` refuses it in one process). So each replica here is a plain `VllmEngine` in its own
process, pinned to its own GPUs (`CUDA_VISIBLE_DEVICES`, `tensor_parallel` GPUs each) or, on
CPU, to its own cores. The parent hands out prompts in run order, keeping every replica about
two scheduler batches ahead, so replicas stay busy, end together, and same-query prompts (which
share a prefix) mostly land on the same replica.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from ..errors import OptionError
from . import CPU_MEMORY_SHARE
from .base import EngineConfig, Generation, GenerationSettings, Prompt, VerdictLogprobs

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5          # how often the parent checks that every replica is still alive
STOP_SECONDS = 20           # a replica's grace time to shut its engine down before it is killed


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one replica runs: a GPU list for CUDA_VISIBLE_DEVICES, or CPU cores to pin to."""

    gpus: tuple[str, ...] = ()
    cpus: tuple[int, ...] = ()

    def describe(self) -> str:
        return f"GPU {','.join(self.gpus)}" if self.gpus else f"CPU cores {_ranges(self.cpus)}"


def plan_replicas(replicas: int, tensor_parallel: int, gpus: Sequence[str] | None,
                  cpus: Sequence[int]) -> list[Placement]:
    """Split the visible GPUs (or, with none, the usable CPU cores) among `replicas` engines."""
    if replicas < 1:
        raise OptionError(f"{{data_parallel}} must be at least 1, found {replicas}")
    if gpus:
        needed = replicas * tensor_parallel
        if needed > len(gpus):
            raise OptionError(f"{{data_parallel}} {replicas} x {{tensor_parallel}} {tensor_parallel} needs {needed} GPUs; "
                             f"{len(gpus)} visible ({','.join(gpus)}). Lower either, or set CUDA_VISIBLE_DEVICES.")
        if needed < len(gpus):
            log.warning("using %d of the %d visible GPUs", needed, len(gpus))
        return [Placement(gpus=tuple(gpus[r * tensor_parallel:(r + 1) * tensor_parallel])) for r in range(replicas)]
    if tensor_parallel > 1:
        raise OptionError("{tensor_parallel} above 1 needs GPUs; none is visible")
    if replicas > len(cpus):
        raise OptionError(f"{{data_parallel}} {replicas} needs a CPU core per replica; this process may use {len(cpus)}")
    share = len(cpus) // replicas
    return [Placement(cpus=tuple(cpus[r * share:(r + 1) * share])) for r in range(replicas)]


def plan_replicas_here(replicas: int, tensor_parallel: int) -> list[Placement]:
    """plan_replicas for the GPUs (CUDA_VISIBLE_DEVICES or nvidia-smi) and cores this process may use."""
    from . import visible_gpus

    gpus = visible_gpus()
    return plan_replicas(replicas, tensor_parallel, gpus.split(",") if gpus else None, usable_cpus())


def usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


class VllmReplicas:
    """`config.data_parallel` VllmEngines in worker processes, behind the one Engine interface."""

    name = "vllm"

    def __init__(self, config: EngineConfig, options, engine_type: type) -> None:
        # engine_type: the one-process engine each replica runs (VllmEngine), given by the caller so
        # that the engine module imports this one and never the other way round.
        placements = plan_replicas_here(options.data_parallel, options.tensor_parallel)
        replica_options = replace(options, data_parallel=1)
        if not placements[0].gpus and not options.gpu_memory_utilization:
            # On CPU the share is of RAM, and every replica takes its own.
            replica_options = replace(replica_options, gpu_memory_utilization=CPU_MEMORY_SHARE / len(placements))
        self._config = config
        self._tokenizer = None
        self._call = 0
        # spawn, not fork: vLLM and CUDA must not inherit a forked parent's state.
        context = multiprocessing.get_context("spawn")
        self._results = context.Queue()
        self._inboxes = [context.Queue() for _ in placements]
        self._workers = [
            context.Process(target=_replica_main, name=f"rank1-replica-{rank + 1}",
                            args=(rank, engine_type, config, replica_options, placement, inbox, self._results))
            for rank, (placement, inbox) in enumerate(zip(placements, self._inboxes))
        ]
        self._window = [0] * len(placements)
        self._next_check = 0.0
        try:
            for worker in self._workers:
                worker.start()
            ready = 0
            while ready < len(self._workers):
                kind, rank, payload = self._receive()
                if kind != "ready":
                    raise RuntimeError(f"replica {rank + 1} ({placements[rank].describe()}) failed to start: {payload}")
                # Keep two scheduler batches queued per replica: enough to stay saturated, few
                # enough that the replicas finish together.
                self._window[rank] = 2 * payload
                ready += 1
        except BaseException:
            self.close()
            raise
        log.info("%d vLLM replicas ready: %s", len(placements), "; ".join(p.describe() for p in placements))

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self._config.model)
        return self._tokenizer

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> Iterator[tuple[int, Generation]]:
        self._call += 1
        call = self._call
        waiting = deque(enumerate(prompts))
        queued = [0] * len(self._workers)

        def send(rank: int, up_to: int) -> None:
            """Queue the next waiting prompts on `rank` until it holds `up_to`."""
            items = [waiting.popleft() for _ in range(min(up_to - queued[rank], len(waiting)))]
            if items:
                self._inboxes[rank].put(("generate", call, settings, items))
                queued[rank] += len(items)

        # A small batch is split evenly instead of all going to the first replica.
        even = -(-len(prompts) // len(self._workers))
        for rank in range(len(self._workers)):
            send(rank, min(self._window[rank], even))
        remaining = len(prompts)
        try:
            while remaining:
                kind, rank, payload = self._receive()
                if kind != "generated" or payload[0] != call:
                    continue
                finished = payload[1]
                queued[rank] -= len(finished)
                remaining -= len(finished)
                if self._window[rank] - queued[rank] >= max(1, self._window[rank] // 8):
                    send(rank, self._window[rank])
                yield from finished
        except BaseException:
            for inbox in self._inboxes:
                inbox.put(("abort", call))
            raise

    def force_verdict(self, prompts: Sequence[str], true_id: int, false_id: int) -> list[VerdictLogprobs]:
        if not prompts:
            return []
        self._call += 1
        call = self._call
        share = -(-len(prompts) // len(self._workers))
        sent = 0
        for rank, start in enumerate(range(0, len(prompts), share)):
            self._inboxes[rank].put(("verdict", call, list(range(start, min(start + share, len(prompts)))),
                                     list(prompts[start:start + share]), true_id, false_id))
            sent += 1
        found: dict[int, VerdictLogprobs] = {}
        while sent:
            kind, _, payload = self._receive()
            if kind == "verdicts" and payload[0] == call:
                found.update(payload[1])
                sent -= 1
        return [found[i] for i in range(len(prompts))]

    def close(self) -> None:
        workers, self._workers = getattr(self, "_workers", []), []
        for inbox, worker in zip(self._inboxes, workers):
            if worker.is_alive():
                inbox.put(("stop",))
        for worker in workers:
            if worker.pid is None:
                continue
            worker.join(STOP_SECONDS)
            if worker.is_alive():
                log.debug("replica %s did not stop in %d s; killing it", worker.name, STOP_SECONDS)
            _kill_group(worker.pid)   # with whatever vLLM processes it left behind
            worker.join(5)

    def _receive(self) -> tuple[str, int, object]:
        """The next message from a replica; an error if a replica failed or its process died."""
        while True:
            now = time.monotonic()
            if now >= self._next_check:   # also while messages flow: the others may keep sending
                self._next_check = now + POLL_SECONDS
                for rank, worker in enumerate(self._workers):
                    if not worker.is_alive():
                        _kill_group(worker.pid)   # its engine processes outlive it otherwise
                        raise RuntimeError(f"replica {rank + 1} of {len(self._workers)} (pid {worker.pid}) "
                                           f"stopped unexpectedly (exit code {worker.exitcode})")
            try:
                kind, rank, payload = self._results.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if kind == "error":
                raise RuntimeError(f"replica {rank + 1} of {len(self._workers)}: {payload}")
            return kind, rank, payload


def _replica_main(rank: int, engine_type: type, config: EngineConfig, options, placement: Placement, inbox,
                  results) -> None:
    """A worker process: one `engine_type` engine, fed prompts by the parent, streaming results back."""
    # Its own process group, so that the parent can end it together with the engine processes
    # vLLM starts (they outlive a replica that is killed). Ctrl-C reaches the parent, which stops
    # the replicas in order.
    os.setpgid(0, 0)
    if placement.gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(placement.gpus)
    elif placement.cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, placement.cpus)   # vLLM binds its threads within this set
    engine = None
    try:
        try:
            engine = engine_type(config, options)
        except Exception as exc:
            results.put(("failed", rank, f"{type(exc).__name__}: {exc}"))
            return
        results.put(("ready", rank, engine.max_num_seqs))
        _serve(rank, engine, inbox, results)
    except KeyboardInterrupt:
        pass   # the parent saw the same Ctrl-C; it saves the work and closes us
    except Exception as exc:
        results.put(("error", rank, f"{type(exc).__name__}: {exc}"))
    finally:
        if engine is not None:
            try:
                engine.close()
            except BaseException:
                pass


def _serve(rank: int, engine, inbox, results) -> None:
    parent = os.getppid()
    stream = None
    call = None
    while True:
        if os.getppid() != parent:
            # The parent was killed: free the engine rather than hold its GPUs forever, and do
            # not wait at exit to flush results nobody will read (a full pipe would block).
            results.cancel_join_thread()
            return
        idle = stream is None or not stream.pending
        try:
            message = inbox.get(timeout=POLL_SECONDS) if idle else inbox.get_nowait()
        except queue.Empty:
            message = None
        if message is not None:
            kind = message[0]
            if kind == "stop":
                results.cancel_join_thread()   # the parent has every result it wants
                return
            if kind == "abort":
                if stream is not None and message[1] == call:
                    stream.abort()
                    stream = None
                continue
            if kind == "generate":
                _, new_call, settings, items = message
                if stream is None or new_call != call:
                    if stream is not None:
                        stream.abort()
                    stream, call = engine.stream(settings), new_call
                stream.add(items)
                continue   # take every queued message before stepping
            if kind == "verdict":
                _, verdict_call, indices, prompts, true_id, false_id = message
                verdicts = engine.force_verdict(prompts, true_id, false_id)
                results.put(("verdicts", rank, (verdict_call, list(zip(indices, verdicts)))))
                continue
        if stream is not None and stream.pending:
            finished = stream.step()
            if finished:
                results.put(("generated", rank, (call, finished)))


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _ranges(cpus: Sequence[int]) -> str:
    return f"{cpus[0]}-{cpus[-1]}" if len(cpus) > 1 and list(cpus) == list(range(cpus[0], cpus[-1] + 1)) \
        else ",".join(map(str, cpus))
