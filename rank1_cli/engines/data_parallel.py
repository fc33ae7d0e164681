"""N replicas of an engine on one node, each in its own process with its own slice of GPUs.

Prompts are dealt out round-robin (so long and short prompts spread evenly) and every replica
streams its finished generations back as they come; the caller sees one engine.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
from collections.abc import Iterator, Sequence

from .base import EngineConfig, Generation, GenerationSettings, VerdictLogprobs

_DONE = "done"
_ERROR = "error"


def gpu_slices(replicas: int, per_replica: int, visible: str | None) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES for each replica: consecutive groups of `per_replica` devices."""
    if visible is None:
        return [None] * replicas
    devices = [d for d in visible.split(",") if d.strip()]
    if len(devices) < replicas * per_replica:
        raise ValueError(f"--data-parallel {replicas} x --tensor-parallel {per_replica} needs "
                         f"{replicas * per_replica} GPUs; {len(devices)} are visible")
    return [",".join(devices[i * per_replica:(i + 1) * per_replica]) for i in range(replicas)]


def _replica_main(backend: str, config: EngineConfig, devices: str | None, tasks, results) -> None:
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
    from . import load_engine

    try:
        engine = load_engine(backend, config)
    except BaseException as exc:  # report, then exit: the parent raises
        results.put((_ERROR, f"{type(exc).__name__}: {exc}"))
        return
    results.put(("ready", None))
    while True:
        task = tasks.get()
        if task is None:
            break
        kind, payload = task
        try:
            if kind == "generate":
                indices, prompts, settings = payload
                for local, generation in engine.generate(prompts, settings):
                    results.put(("result", (indices[local], generation)))
            else:
                indices, prompts, true_id, false_id = payload
                verdicts = engine.force_verdict(prompts, true_id, false_id)
                for index, verdict in zip(indices, verdicts):
                    results.put(("result", (index, verdict)))
            results.put((_DONE, None))
        except BaseException as exc:
            results.put((_ERROR, f"{type(exc).__name__}: {exc}"))
    engine.close()


class DataParallelEngine:
    """`replicas` copies of a backend's engine; same interface as one."""

    def __init__(self, backend: str, config: EngineConfig, replicas: int) -> None:
        self.name = f"{backend} x{replicas}"
        self._config = config
        context = multiprocessing.get_context("spawn")
        from . import visible_gpus

        slices = gpu_slices(replicas, config.tensor_parallel, visible_gpus())
        self._results = context.Queue()
        self._tasks = [context.Queue() for _ in range(replicas)]
        self._workers = [context.Process(target=_replica_main, args=(backend, config, devices, tasks, self._results),
                                         daemon=False)  # vLLM starts processes of its own
                         for devices, tasks in zip(slices, self._tasks)]
        self._tokenizer = None
        try:
            # One at a time: vLLM engines started together race for the same start-up resources.
            for worker in self._workers:
                worker.start()
                for _ in self._collect(1, expect_results=False):
                    pass
        except BaseException:
            self.close()
            raise

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self._config.model)
        return self._tokenizer

    def _collect(self, done_needed: int, expect_results: bool = True) -> Iterator[tuple[int, object]]:
        done = 0
        while done < done_needed:
            try:
                kind, payload = self._results.get(timeout=5)
            except queue.Empty:
                dead = [w for w in self._workers if w.pid is not None and not w.is_alive()]
                if dead:
                    raise RuntimeError(f"{len(dead)} engine replica(s) died (exit code {dead[0].exitcode})") from None
                continue
            if kind == _ERROR:
                raise RuntimeError(f"an engine replica failed: {payload}")
            if kind in (_DONE, "ready"):
                done += 1
            elif expect_results:
                yield payload

    def _deal(self, count: int) -> list[list[int]]:
        return [list(range(i, count, len(self._tasks))) for i in range(len(self._tasks))]

    def generate(self, prompts: Sequence[str], settings: GenerationSettings) -> Iterator[tuple[int, Generation]]:
        shares = [share for share in self._deal(len(prompts)) if share]
        for tasks, share in zip(self._tasks, shares):
            tasks.put(("generate", (share, [prompts[i] for i in share], settings)))
        yield from self._collect(len(shares))  # type: ignore[misc]

    def force_verdict(self, prompts: Sequence[str], true_id: int, false_id: int) -> list[VerdictLogprobs]:
        shares = [share for share in self._deal(len(prompts)) if share]
        for tasks, share in zip(self._tasks, shares):
            tasks.put(("force", (share, [prompts[i] for i in share], true_id, false_id)))
        found: list[VerdictLogprobs | None] = [None] * len(prompts)
        for index, verdict in self._collect(len(shares)):
            found[index] = verdict
        return found  # type: ignore[return-value]

    def close(self) -> None:
        started = [w for w in self._workers if w.pid is not None]
        for tasks, worker in zip(self._tasks, self._workers):
            if worker.is_alive():
                tasks.put(None)
        for worker in started:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.terminate()
