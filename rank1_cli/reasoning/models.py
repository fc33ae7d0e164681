"""The published rank1 models, by the aliases people use, and resolving a --model argument."""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, OptionError
from .store import FileStamp, Store


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


HASH_BLOCK = 8 << 20     # bytes read per hash update
FOLDER_REVISION_PREFIX = "blake2b:"
log = logging.getLogger(__name__)


def model_revision(model: ResolvedModel, store: Store | None = None) -> str:
    """What identifies the weights, for the reasoning store.

    A Hugging Face model: its commit in the local cache (fetching config.json to learn it when the
    model is not cached yet, as loading it would). A local folder: `folder_fingerprint`, with the
    file digests cached in `store` when given; generations the store holds of the folder under
    its older, partial fingerprint are not reused, which is said once.
    """
    path = Path(model.path)
    if path.is_dir():
        revision = FOLDER_REVISION_PREFIX + folder_fingerprint(path, store)
        unverified = store.unverified_generations(model.spec) if store is not None else 0
        if unverified:
            log.warning("the store %s holds %d generations of %s made under rank1's older folder fingerprint (the "
                        "first and last MiB of each file), which cannot tell a model saved over the folder from the "
                        "one before; they were not reused (`rank1 store export` still shows them)",
                        store.path, unverified, model.spec)
        return revision
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


def fingerprinted_files(folder: Path) -> list[Path]:
    """The files that decide a local model's outputs: every regular file directly in the folder
    (weights, config, tokenizer, generation config, custom code: what the engines load), except
    hidden ones (.git*, ...) and documentation (*.md, README*, LICENSE*). Sub-folders (e.g. a
    trainer's checkpoint-*/) are not loaded, so not hashed."""
    def is_doc(name: str) -> bool:
        return name.startswith(".") or name.lower().endswith(".md") or name.upper().startswith(("README", "LICENSE"))

    return sorted((entry for entry in folder.iterdir() if entry.is_file() and not is_doc(entry.name)),
                  key=lambda entry: entry.name)


def file_digest(path: Path) -> str:
    """blake2b of every byte of the file (the fastest of hashlib's hashes here: about 1.5 times sha256)."""
    digest = hashlib.blake2b(digest_size=32)
    block = bytearray(HASH_BLOCK)
    view = memoryview(block)
    with open(path, "rb", buffering=0) as handle:
        while read := handle.readinto(block):
            digest.update(view[:read])
    return digest.hexdigest()


def folder_fingerprint(folder: Path, store: Store | None = None) -> str:
    """A digest of every byte of `fingerprinted_files(folder)` and of their names: a copy of the
    folder matches, a change to any byte of those files does not.

    Each file's digest is kept in `store`, keyed by its absolute path, size, mtime, ctime and
    inode, so a later run reads no file that has not changed since (any write to a file changes
    its ctime); without a store every file is read.
    """
    files = {FileStamp.of(entry): entry for entry in fingerprinted_files(folder)}
    known = store.file_digests(files) if store is not None else {}
    made = {stamp: file_digest(entry) for stamp, entry in files.items() if stamp not in known}
    if store is not None:
        store.remember_file_digests(made)
    digests = known | made
    digest = hashlib.blake2b(digest_size=32)
    for stamp, entry in files.items():
        digest.update(f"{entry.name}\0{stamp.size}\0{digests[stamp]}\n".encode())
    return digest.hexdigest()
