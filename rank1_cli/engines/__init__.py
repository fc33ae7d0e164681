"""Inference engines behind one interface (see `base.Engine`); each backend in its own module,
imported only when chosen."""

from __future__ import annotations

from .base import Engine, EngineConfig, Generation, GenerationSettings, VerdictLogprobs

BACKENDS = ("vllm", "transformers", "openai")


def visible_gpus() -> str | None:
    """The NVIDIA GPUs this process may use, as CUDA_VISIBLE_DEVICES would list them; None if none.

    Asks nvidia-smi rather than torch, so CUDA is not initialised before vLLM starts its workers.
    """
    import os
    import subprocess

    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return os.environ["CUDA_VISIBLE_DEVICES"] or None
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    count = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
    return ",".join(map(str, range(count))) if count else None


def default_dtype() -> str:
    """float16 on GPUs (the paper's setting); on CPU the model's own dtype (float16 is slow there)."""
    return "float16" if visible_gpus() else "auto"


def load_engine(backend: str, config: EngineConfig, **options) -> Engine:
    """Create the engine for `backend`; heavy imports happen here, not at import time."""
    if backend == "vllm" and config.data_parallel > 1:
        from .vllm_replicas import VllmReplicas

        return VllmReplicas(config, **options)
    if backend == "vllm":
        from .vllm_engine import VllmEngine

        return VllmEngine(config, **options)
    if backend == "transformers":
        from .transformers_engine import TransformersEngine

        return TransformersEngine(config, **options)
    if backend == "openai":
        from .openai_engine import OpenAIEngine

        return OpenAIEngine(config, **options)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Engine", "EngineConfig", "Generation", "GenerationSettings", "VerdictLogprobs", "load_engine"]
