"""The published rank1 models, by the aliases people use, and resolving a --model argument."""

from __future__ import annotations

import difflib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, OptionError


@dataclass(frozen=True, slots=True)
class ModelInfo:
    alias: str
    hf_id: str
    base: str
    params_b: float
    weights_gb: float        # approximate memory for the weights alone
    context: int             # the base model's context length in tokens
    quantization: str | None = None


def _fp16(alias: str, base: str, params_b: float, context: int = 32768) -> ModelInfo:
    return ModelInfo(alias, f"jhu-clsp/{alias}", base, params_b, round(params_b * 2.0 + 0.3, 1), context)


def _awq(model: ModelInfo) -> ModelInfo:
    # int4 weights, group 128: about a third of the fp16 memory (rank1-7b: 15.2 GB -> 5.6 GB).
    return ModelInfo(f"{model.alias}-awq", f"{model.hf_id}-awq", model.base, model.params_b,
                     round(model.params_b * 0.62 + 0.9, 1), model.context, "awq")


_BASE_MODELS = (
    _fp16("rank1-0.5b", "Qwen2.5-0.5B", 0.49),
    _fp16("rank1-1.5b", "Qwen2.5-1.5B", 1.54),
    _fp16("rank1-3b", "Qwen2.5-3B", 3.09),
    _fp16("rank1-7b", "Qwen2.5-7B", 7.62),
    _fp16("rank1-14b", "Qwen2.5-14B", 14.8),
    _fp16("rank1-32b", "Qwen2.5-32B", 32.8),
    _fp16("rank1-mistral-2501-24b", "Mistral-Small 2501 24B", 23.6),
    _fp16("rank1-llama3-8b", "Llama 3 8B", 8.03, context=8192),
)
_AWQ_OF = ("rank1-7b", "rank1-14b", "rank1-32b", "rank1-mistral-2501-24b", "rank1-llama3-8b")

MODELS: dict[str, ModelInfo] = {m.alias: m for m in _BASE_MODELS}
MODELS.update({f"{a}-awq": _awq(MODELS[a]) for a in _AWQ_OF})


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """What --model named: the path or id to load, and the alias info when it was one."""

    spec: str
    path: str
    info: ModelInfo | None


def resolve_model(spec: str) -> ResolvedModel:
    """An alias, a local model directory, or a Hugging Face id (org/name).

    Checked before any model loads: a directory must hold config.json; an unknown alias gets the
    nearest known ones suggested; with HF_HUB_OFFLINE set, a hub id must already be cached.
    """
    if spec in MODELS:
        return _hub_model(spec, MODELS[spec].hf_id, MODELS[spec])
    for info in MODELS.values():
        if spec == info.hf_id:
            return _hub_model(spec, spec, info)
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise OptionError(f"{{model}} {spec}: not a directory (expected a model folder with config.json)")
        if not (path / "config.json").is_file():
            raise OptionError(f"{{model}} {spec}: the directory has no config.json, so it is not a model folder")
        return ResolvedModel(spec, str(path.resolve()), None)
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return _hub_model(spec, spec, None)
    near = difflib.get_close_matches(spec, list(MODELS), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(near)}?" if near else ""
    raise OptionError(
        f"{{model}} {spec!r}: unknown model alias and no such directory.{hint} "
        f"`rank1 models` lists the aliases; a Hugging Face id (org/name) or a local folder also works."
    )


def _hub_model(spec: str, hf_id: str, info: ModelInfo | None) -> ResolvedModel:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(hf_id, "config.json")
        if not isinstance(cached, str):
            raise OptionError(
                f"{{model}} {spec}: {hf_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                f"download it first (huggingface-cli download {hf_id}) or pass a local folder"
            )
    return ResolvedModel(spec, hf_id, info)


FINGERPRINT_EDGE = 1 << 20   # bytes hashed at each end of a large file


def model_revision(model: ResolvedModel) -> str:
    """What identifies the weights, for the reasoning store.

    A Hugging Face model: its commit in the local cache (fetching config.json to learn it when the
    model is not cached yet, as loading it would). A local folder: a fingerprint of its files'
    names, sizes and contents (whole small files; the first and last MiB of large ones), so a
    copy of the folder matches and retrained weights do not.
    """
    path = Path(model.path)
    if path.is_dir():
        return "sha256:" + folder_fingerprint(path)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model.path, "config.json")
    if not isinstance(cached, str):
        from huggingface_hub import hf_hub_download

        try:
            cached = hf_hub_download(model.path, "config.json")
        except Exception as exc:  # offline, unknown repository, no access ...
            raise InputError(f"{model.spec}: cannot find {model.path} on the Hugging Face hub ({type(exc).__name__}: "
                             f"{str(exc)[:200]})") from None
    return "hf:" + Path(cached).parent.name


def folder_fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if not entry.is_file() or entry.name.startswith(".") or entry.suffix in (".md", ".py"):
            continue
        size = entry.stat().st_size
        digest.update(f"{entry.name}\0{size}\0".encode())
        with open(entry, "rb") as handle:
            if size <= 2 * FINGERPRINT_EDGE:
                digest.update(handle.read())
            else:
                digest.update(handle.read(FINGERPRINT_EDGE))
                handle.seek(size - FINGERPRINT_EDGE)
                digest.update(handle.read(FINGERPRINT_EDGE))
    return digest.hexdigest()
