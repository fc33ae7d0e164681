"""Inference engines behind one interface (see `base.Engine`); each backend in its own module,
imported only when chosen."""

from __future__ import annotations

from .base import Engine, EngineConfig, Generation, GenerationSettings, VerdictLogprobs

BACKENDS = ("vllm", "transformers", "openai")


def load_engine(backend: str, config: EngineConfig, **options) -> Engine:
    """Create the engine for `backend`; heavy imports happen here, not at import time."""
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
