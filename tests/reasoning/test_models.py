"""What identifies a local model folder in the reasoning store: every byte of the files that decide
its outputs, hashed once per change of a file (the digests kept in the store)."""

import builtins
import logging
import os
import shutil

import pytest
from conftest import TINY_MODEL

from rank1_cli.reasoning.models import fingerprinted_files, folder_fingerprint, model_revision, resolve_model
from rank1_cli.reasoning.store import GenerationKey, Store, StoredGeneration

MIB = 1 << 20


@pytest.fixture
def folder(tmp_path):
    """A copy of tiny-rank1 whose weights are larger than the first and last MiB together."""
    copy = tmp_path / "model"
    shutil.copytree(TINY_MODEL, copy)
    weights = copy / "model.safetensors"
    assert weights.stat().st_size > 2 * MIB + 4096
    return copy


def flip_middle_byte(path, keep_times=False):
    """Change one byte in the middle of the file: same size, same first and last MiB."""
    before = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(before.st_size // 2)
        byte = handle.read(1)
        handle.seek(before.st_size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    if keep_times:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_one_changed_byte_in_the_middle_of_the_weights_is_a_new_model(folder, tmp_path):
    before = model_revision(resolve_model(str(folder)))
    assert before.startswith("blake2b:")
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert model_revision(resolve_model(str(copy))) == before         # a copy is the same model
    flip_middle_byte(folder / "model.safetensors")
    assert model_revision(resolve_model(str(folder))) != before


def test_the_fingerprinted_files_are_all_but_hidden_files_and_documentation(folder):
    for name in (".gitattributes", "LICENSE", "notes.md"):
        (folder / name).write_text("x")
    (folder / "checkpoint-10").mkdir()
    (folder / "modeling_rank1.py").write_text("# custom code decides outputs too\n")
    assert [p.name for p in fingerprinted_files(folder)] == [
        "config.json", "generation_config.json", "model.safetensors", "modeling_rank1.py", "special_tokens_map.json",
        "tokenizer.json", "tokenizer_config.json"]
    before = folder_fingerprint(folder)
    (folder / "README.md").write_text("edited")
    assert folder_fingerprint(folder) == before
    (folder / "generation_config.json").write_text('{"temperature": 0.7}')
    assert folder_fingerprint(folder) != before


class CountingOpens:
    def __init__(self, monkeypatch):
        self.paths = []
        real = builtins.open

        def counting(path, *args, **kwargs):
            self.paths.append(os.path.basename(str(path)))
            return real(path, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", counting)


def test_a_second_fingerprint_reads_no_file_and_a_changed_file_is_read_again(folder, tmp_path, monkeypatch):
    uncached = folder_fingerprint(folder)
    with Store(tmp_path / "s.sqlite") as store:
        assert folder_fingerprint(folder, store) == uncached
        opens = CountingOpens(monkeypatch)
        assert folder_fingerprint(folder, store) == uncached
        assert opens.paths == []
        os.utime(folder / "config.json")            # touched: read again, same content, same identity
        assert folder_fingerprint(folder, store) == uncached
        assert opens.paths == ["config.json"]
        # A changed byte whose file keeps its size and mtime still changes ctime: never a stale digest.
        flip_middle_byte(folder / "model.safetensors", keep_times=True)
        opens.paths.clear()
        changed = folder_fingerprint(folder, store)
        assert changed != uncached and opens.paths == ["model.safetensors"]
        monkeypatch.undo()
        assert changed == folder_fingerprint(folder)


KEY_FIELDS = ("transformers", "float32", 48, 1024)


def test_generations_under_the_older_partial_fingerprint_are_kept_but_not_reused(folder, tmp_path, caplog):
    spec = str(folder)
    old_key = GenerationKey(spec, "sha256:" + "ab" * 32, *KEY_FIELDS)    # what rank1 before this wrote
    other = GenerationKey("rank1-7b", "hf:abc", *KEY_FIELDS)
    stored = [StoredGeneration(f"{i:064x}", "stop", "true", -0.1, -2.0, 3, "old reasoning", None) for i in range(3)]
    with Store(tmp_path / "s.sqlite") as store:
        store.put_many(old_key, stored)
        store.put_many(other, stored[:1])
    with Store(tmp_path / "s.sqlite") as store, caplog.at_level("WARNING", logger="rank1_cli"):
        revision = model_revision(resolve_model(spec), store)
        new_key = GenerationKey(spec, revision, *KEY_FIELDS)
        assert store.get_many(new_key, [g.prompt_sha256 for g in stored]) == {}
        assert len(list(store.export())) == 4                               # still readable
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [(
        "rank1_cli.reasoning.models", logging.WARNING,
        f"the store {tmp_path / 's.sqlite'} holds 3 generations of {spec} made under rank1's older folder fingerprint "
        "(the first and last MiB of each file), which cannot tell a model saved over the folder from the one before; "
        "they were not reused (`rank1 store export` still shows them)")]
    caplog.clear()
    with Store(tmp_path / "s.sqlite") as store, caplog.at_level("WARNING", logger="rank1_cli"):
        store.put_many(GenerationKey(spec, revision, *KEY_FIELDS), stored[:1])
        assert model_revision(resolve_model(spec), store) == revision
        assert store.unverified_generations(spec) == 3
    assert len(caplog.records) == 1         # said on every run while they are there, once per run
