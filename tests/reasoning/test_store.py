"""The reasoning store: keys, durability, concurrency, damage and full disks, import/export/prune."""

import dataclasses
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from conftest import RANK1, REPO, table_column
from store_samples import KEY, SETTINGS, sha, trace_line

from rank1_cli.errors import InputError
from rank1_cli.reasoning.store import (
    SCHEMA,
    GenerationKey,
    Store,
    StoredGeneration,
    StoreError,
    default_store_path,
    network_filesystem,
)
from rank1_cli.reasoning.store_admin import import_files, record_generation


def generation(i: int, completion="stop", reasoning=None, tokens=(1, 2, 3)) -> StoredGeneration:
    lt, lf = (-0.1, -2.5) if completion != "pending" else (None, None)
    verdict = "true" if completion in ("stop", "forced") else None
    return StoredGeneration(sha(i), completion, verdict, lt, lf, len(tokens), reasoning or f"reasoning {i}.", tokens)


def test_a_generation_comes_back_as_it_was_stored(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        assert store.put_many(KEY, [generation(1, tokens=(5, 4_000_000_000, 0))]) == 1
        assert store.get_many(KEY, [sha(1), sha(2)], with_token_ids=True) == {
            sha(1): generation(1, tokens=(5, 4_000_000_000, 0))}
        assert store.get_many(KEY, [sha(1)])[sha(1)].token_ids is None       # scoring needs none


def test_any_setting_of_the_key_separates_generations(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        store.put_many(KEY, [generation(1)])
        for field, value in [("model_revision", "hf:other"), ("engine", "transformers"), ("dtype", "bfloat16"),
                             ("max_reasoning_tokens", 4096), ("max_model_len", 8000)]:
            other = dataclasses.replace(KEY, **{field: value})
            assert store.get_many(other, [sha(1)]) == {}, field
        # The name the model was given is shown, not compared: a copy of a folder still matches.
        renamed = dataclasses.replace(KEY, model="/copy/of/rank1-7b")
        assert store.get_many(renamed, [sha(1)]).keys() == {sha(1)}


def test_finished_replaces_pending_and_otherwise_the_first_writer_wins(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        store.put_many(KEY, [generation(1, "pending"), generation(2)])
        store.put_many(KEY, [generation(1, "forced"), generation(2, reasoning="another.")])
        got = store.get_many(KEY, [sha(1), sha(2)])
        assert got[sha(1)].completion == "forced" and got[sha(2)].reasoning == "reasoning 2."
        store.put_many(KEY, [generation(2, reasoning="recomputed.")], replace=True)
        assert store.get_many(KEY, [sha(2)])[sha(2)].reasoning == "recomputed."


def test_the_default_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("RANK1_STORE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_store_path() == tmp_path / "cache" / "rank1-cli" / "store.sqlite"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_store_path() == tmp_path / "home" / ".cache" / "rank1-cli" / "store.sqlite"
    monkeypatch.setenv("RANK1_STORE", str(tmp_path / "mine.sqlite"))
    assert default_store_path() == tmp_path / "mine.sqlite"


# --- damage: reported, never "repaired" by emptying --------------------------------------------

@pytest.mark.parametrize("content", [b"SQLite format 3\x00" + b"\x07" * 600, b"SQLite f"])
def test_a_damaged_store_is_reported_and_left_as_it_is(tmp_path, content):
    path = tmp_path / "s.sqlite"
    path.write_bytes(content)
    with pytest.raises(StoreError, match=rf"{path}: the store is damaged .*left as it is"):
        Store(path)
    assert path.read_bytes() == content


def test_a_store_cut_short_is_reported_and_left_as_it_is(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.put_many(KEY, [generation(i, reasoning="x" * 3000) for i in range(200)])
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="damaged"):
        with Store(path) as store:
            store.get_many(KEY, [sha(i) for i in range(200)])
    assert path.read_bytes() == data[: len(data) // 2]


def test_another_sqlite_database_is_not_taken_for_a_store(tmp_path):
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"an SQLite database, but not a rank1 store \(its tables: users\)"):
        Store(path)
    assert path.read_bytes() == before


def test_a_file_that_is_no_sqlite_database_is_not_a_rank1_store_and_is_left_as_it_is(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are my notes\n")
    with pytest.raises(InputError) as error:       # the path given is wrong (exit code 2), nothing damaged
        Store(path)
    assert str(error.value) == (f"{path}: not a rank1 store (not an SQLite database: it begins with b'these are my "
                                "not'); it was left as it is. Choose another store path")
    assert path.read_bytes() == b"these are my notes\n"
    (tmp_path / "empty").touch()                    # an empty file is an empty database: it becomes a store
    with Store(tmp_path / "empty") as store:
        assert store.count() == 0


def test_a_store_that_cannot_be_written_fails_when_opened_not_at_the_first_commit(tmp_path, monkeypatch):
    path = filled_store(tmp_path / "s.sqlite")
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda file, **kw: connect(f"file:{file}?mode=ro", uri=True, **kw))
    with pytest.raises(InputError) as error:
        Store(path)
    assert str(error.value) == (f"{path}: cannot write the store (attempt to write a readonly database); check the "
                                f"permissions of the file and of its folder {tmp_path}, or use another store path")
    with Store(path, create=False, write=False) as store:        # what info and export do: reading is enough
        assert store.count() == 6


def as_unprivileged(check, folder):
    """Run `check(folder)` as it runs for a user: root writes whatever the permissions say, so as
    root (here, and in CI) it runs in a child process that has dropped to the user nobody, who owns
    `folder`. The child's failure fails the test."""
    if os.geteuid() != 0:
        return check(folder)
    os.chown(folder, 65534, 65534)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                         # the child: report, then exit without pytest's teardown
        os.close(read)
        try:
            os.setgid(65534)
            os.setuid(65534)
            check(folder)
            os.write(write, b"ok")
        except BaseException as exc:                      # noqa: BLE001 - every failure goes back to the parent
            os.write(write, f"{type(exc).__name__}: {exc}".encode()[:8000])
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        said = answer.read().decode()
    os.waitpid(pid, 0)
    assert said == "ok", said


def test_a_read_only_store_or_folder_is_named():
    folder = Path(tempfile.mkdtemp(prefix="rank1-read-only-"))     # in /tmp, which nobody may enter

    def check(tmp_path):
        path = filled_store(tmp_path / "s.sqlite")
        path.chmod(0o444)
        with pytest.raises(InputError, match=f"^{path}: the store file is not writable; make it writable"):
            Store(path)
        path.chmod(0o644)
        tmp_path.chmod(0o555)
        try:
            with pytest.raises(InputError, match=rf"^{path}: the folder {tmp_path} is not writable, and the store "
                                                 r"writes its journal \(s.sqlite-wal\) there"):
                Store(path)
        finally:
            tmp_path.chmod(0o755)
    try:
        as_unprivileged(check, folder)
    finally:
        shutil.rmtree(folder)


MOUNTS = """\
overlay / overlay rw,relatime 0 0
server:/export /home nfs4 rw,relatime 0 0
/dev/sdb1 /home/me/local\\040disk ext4 rw 0 0
lustre@tcp:/scratch /scratch lustre rw 0 0
/dev/sdc1 /scratchpad xfs rw 0 0
"""


@pytest.mark.parametrize("path, filesystem", [
    ("/home/me/store.sqlite", "nfs4"),
    ("/home", "nfs4"),
    ("/home/me/local disk/store.sqlite", None),        # a local disk mounted inside the NFS home
    ("/scratch/job/store.sqlite", "lustre"),
    ("/scratchpad/store.sqlite", None),
    ("/scratch-old/store.sqlite", None),               # /scratch is a prefix of its name, not its folder
    ("/tmp/store.sqlite", None),
])
def test_a_network_filesystem_is_found_by_the_longest_mount_point_that_holds_the_store(path, filesystem):
    assert network_filesystem(path, MOUNTS) == filesystem


def test_a_store_on_a_network_filesystem_is_warned_about_once(tmp_path, monkeypatch, caplog):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"overlay / overlay rw 0 0\nserver:/x {tmp_path} nfs rw 0 0\n")
    monkeypatch.setattr("rank1_cli.reasoning.store.MOUNTS", mounts)
    with caplog.at_level("WARNING", logger="rank1_cli"):
        Store(tmp_path / "s.sqlite").close()
        Store(tmp_path / "s.sqlite", create=False, write=False).close()     # only read: no concurrent writers
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 's.sqlite'} is on a network filesystem (nfs), where SQLite's locking is not safe: two jobs "
        "writing it at once can damage it. Give each job its own store on local disk (--store) and gather them with "
        "`rank1 store import`"]


# --- durability and concurrency ------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys
    from rank1_cli.reasoning.store import GenerationKey, Store, StoredGeneration
    key = GenerationKey("m", "rev", "vllm", "auto", 64, 4096)
    path, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with Store(path) as store:
        for start in range(first, first + count, 50):
            store.put_many(key, [StoredGeneration(f"{i:064x}", "stop", "true", -0.1, -2.0, 3, "r" * 500, (1, 2, 3))
                                 for i in range(start, min(start + 50, first + count))])
""")


def test_two_processes_writing_one_store_lose_nothing(tmp_path):
    # Both also create the store at the same moment (a race that once answered "locked" at once).
    for attempt in range(4):
        path = tmp_path / f"s{attempt}.sqlite"
        # Overlapping ranges: 0-2999 and 2000-4999, written at the same time.
        writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(first), "3000"], cwd=REPO,
                                    stderr=subprocess.PIPE, text=True)
                   for first in (0, 2000)]
        assert [w.wait(timeout=300) for w in writers] == [0, 0], [w.stderr.read() for w in writers]
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert db.execute("SELECT COUNT(*) FROM generations").fetchone() == (5000,)


OPENER = textwrap.dedent("""
    import sys
    from rank1_cli.reasoning.store import GenerationKey, Store, StoredGeneration
    path, i = sys.argv[1], int(sys.argv[2])
    print("opening", flush=True)
    with Store(path) as store:
        store.put_many(GenerationKey("m", "rev", "vllm", "auto", 64, 4096),
                       [StoredGeneration(f"{i:064x}", "stop", "true", -0.1, -2.0, 3, "r", (1, 2, 3))])
""")


def test_two_processes_opening_a_new_store_while_it_is_locked_both_open_it_and_write(tmp_path):
    # A third connection holds the write lock of the new, empty file while both open it: switching
    # it to WAL then answers "locked" at once (SQLite's deadlock rule, no busy wait), every time.
    path = tmp_path / "new.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    openers = [subprocess.Popen([sys.executable, "-c", OPENER, str(path), str(i)], cwd=REPO, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in (1, 2)]
    try:
        assert [opener.stdout.readline() for opener in openers] == ["opening\n"] * 2
        time.sleep(0.3)                                   # both are in Store(path) now, the lock still held
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert [opener.wait(timeout=30) for opener in openers] == [0, 0], [o.stderr.read() for o in openers]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT key, value FROM meta").fetchall() == [("schema", SCHEMA)]
        assert db.execute("SELECT COUNT(*) FROM configs").fetchone() == (1,)
        assert sorted(row[0].hex() for row in db.execute("SELECT prompt_sha256 FROM generations")) == \
            [f"{i:064x}" for i in (1, 2)]


def test_a_full_disk_is_a_clear_error_and_the_store_stays_usable(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.put_many(KEY, [generation(i) for i in range(10)])
    # A file size limit makes every write past it fail, as a full disk or a quota does.
    script = textwrap.dedent(f"""
        import resource, signal, sys
        from rank1_cli.reasoning.store import GenerationKey, Store, StoredGeneration, StoreError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        key = GenerationKey{dataclasses.astuple(KEY)!r}
        store = Store({str(path)!r})
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        try:
            for start in range(100, 10_000, 100):
                store.put_many(key, [StoredGeneration(f"{{i:064x}}", "stop", "true", -0.1, -2.0, 1, "x" * 2000)
                                     for i in range(start, start + 100)])
        except StoreError as exc:
            print(exc)
            sys.exit(3)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert f"{path}: cannot write the store" in proc.stdout and "run the same command again" in proc.stdout
    with Store(path) as store:       # intact: what was committed is there, and it takes new writes
        assert store.get_many(KEY, [sha(i) for i in range(10)]).keys() == {sha(i) for i in range(10)}
        store.put_many(KEY, [generation(99_999)])
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# --- import, export, prune -----------------------------------------------------------------

def test_imported_traces_are_reused_and_an_export_round_trips(tmp_path):
    traces = tmp_path / "t.jsonl"
    traces.write_text("".join(trace_line(i) + "\n" for i in range(3)))
    report = import_files([str(traces)], str(tmp_path / "a.sqlite"))
    assert (report.lines, report.added, report.already) == (3, 3, 0)
    assert import_files([str(traces)], str(tmp_path / "a.sqlite")).already == 3
    with Store(tmp_path / "a.sqlite") as store:
        assert store.get_many(KEY, [sha(1)])[sha(1)].reasoning == "reasoning 1."
    exported = subprocess.run([*RANK1, "store", "export", "--store", str(tmp_path / "a.sqlite")], cwd=REPO,
                              capture_output=True, text=True)
    assert exported.returncode == 0 and exported.stderr == "exported 3 generations\n"
    (tmp_path / "e.jsonl").write_text(exported.stdout)
    assert import_files([str(tmp_path / "e.jsonl")], str(tmp_path / "b.sqlite")).added == 3
    with Store(tmp_path / "b.sqlite") as store:
        assert store.get_many(KEY, [sha(i) for i in range(3)], with_token_ids=True) == \
            Store(tmp_path / "a.sqlite").get_many(KEY, [sha(i) for i in range(3)], with_token_ids=True)


@pytest.mark.parametrize("changes, message", [
    ({"prompt_sha256": "abc"}, "prompt_sha256 must be 64 lowercase hex digits"),
    ({"completion": "pending-ish"}, "completion must be one of"),
    ({"score": 0.01}, "score 0.01 does not follow from its logprobs"),
    ({"logprob_true": None}, "a stop completion needs both logprobs and a verdict"),
    ({"settings": {"format": "rank1-cli/1", "model": "rank1-7b", "dtype": "float16", "max_reasoning_tokens": 8192,
                   "max_model_len": 16000}}, r"the settings do not say .* name the model they were made with \(model\)"),
])
def test_import_checks_every_line_and_stores_nothing_from_a_bad_file(tmp_path, changes, message):
    traces = tmp_path / "t.jsonl"
    traces.write_text(trace_line(0) + "\n" + trace_line(1, **changes) + "\n")
    with pytest.raises(InputError, match=rf"t.jsonl:2: not a rank1 trace: {message}"):
        import_files([str(traces)], str(tmp_path / "s.sqlite"))
    with Store(tmp_path / "s.sqlite") as store:       # checked before the traces, and left empty
        assert store.count() == 0


def test_store_info_and_prune_through_the_cli(tmp_path):
    store = tmp_path / "s.sqlite"
    traces = tmp_path / "t.jsonl"
    traces.write_text("".join(trace_line(i) + "\n" for i in range(4)))
    imported = subprocess.run([*RANK1, "store", "import", str(traces), "--store", str(store)], cwd=REPO,
                              capture_output=True, text=True)
    assert imported.returncode == 0 and "imported 4 new generations from 4 lines of 1 files" in imported.stderr
    info = subprocess.run([*RANK1, "store", "info", "--store", str(store), "-f", "json"], cwd=REPO,
                          capture_output=True, text=True)
    summary = json.loads(info.stdout)
    assert summary["generations"] == 4 and summary["configurations"][0]["model"] == "rank1-7b"
    bad = subprocess.run([*RANK1, "store", "prune", "--model", "rank1-8b", "--store", str(store)], cwd=REPO,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "holds no generations of 'rank1-8b' (its models: rank1-7b)" in bad.stderr
    pruned = subprocess.run([*RANK1, "store", "prune", "--model", "rank1-7b", "--store", str(store)], cwd=REPO,
                            capture_output=True, text=True)
    assert pruned.returncode == 0 and pruned.stderr == "deleted 4 generations of rank1-7b\n"
    with Store(store) as opened:
        assert opened.count() == 0


def test_record_generation_takes_the_model_from_the_caller_for_old_traces():
    record = json.loads(trace_line(0))
    del record["settings"]["model_revision"], record["settings"]["engine"]
    fallback = GenerationKey("rank1-7b", "hf:abc123", "vllm", "", 0, 0)
    key, stored = record_generation(record, fallback)
    assert key == KEY and stored.prompt_sha256 == sha(0)


def test_repairing_a_pending_generation_keeps_its_token_ids(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        store.put_many(KEY, [generation(1, "pending", tokens=(7, 8, 9))])
        pending = store.get_many(KEY, [sha(1)])[sha(1)]             # looked up without its token ids
        repaired = dataclasses.replace(pending, completion="forced", verdict="true", logprob_true=-0.1,
                                       logprob_false=-2.5)
        store.put_many(KEY, [repaired])
        assert store.get_many(KEY, [sha(1)], with_token_ids=True)[sha(1)].token_ids == (7, 8, 9)


def test_a_model_pruned_while_another_process_writes_never_lends_its_results_to_a_new_one(tmp_path):
    path = tmp_path / "s.sqlite"
    other = dataclasses.replace(KEY, model="rank1-14b", model_revision="hf:other")
    with Store(path) as writer, Store(path) as pruner:
        writer.put_many(KEY, [generation(1, reasoning="7b reasoning.")])
        assert pruner.prune("rank1-7b") == 1
        writer.put_many(KEY, [generation(2, reasoning="7b again.")])    # the writer still runs
        with Store(path) as third:
            third.put_many(other, [generation(3, reasoning="14b reasoning.")])
            assert third.get_many(other, [sha(1), sha(2), sha(3)]).keys() == {sha(3)}
            assert third.get_many(KEY, [sha(2)])[sha(2)].reasoning == "7b again."


def test_completions_and_measured_rates_for_cost_plans(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        assert store.rate(KEY) is None and store.completions(KEY, [sha(1)]) == {}
        store.put_many(KEY, [generation(1), generation(2, "pending")])
        assert store.completions(KEY, [sha(1), sha(2), sha(3)]) == {sha(1): "stop", sha(2): "pending"}
        rate = store.rate(KEY)
        assert (rate.generations, rate.timed_runs, rate.tokens_per_second, rate.same_settings) == (2, 0, None, True)
        store.record_engine_run(KEY, 2, 300, 2.0)
        store.record_engine_run(KEY, 0, 0, 0.0)                 # nothing generated: nothing to learn
        assert store.rate(KEY).tokens_per_second == 150.0 and store.rate(KEY).timed_runs == 1
        other_engine = dataclasses.replace(KEY, engine="transformers")
        assert store.rate(other_engine) is None               # another engine's speed says nothing
        assert store.prune("rank1-7b") == 2
        assert store.rate(KEY) is None
        store.put_many(KEY, [generation(1)])
        assert store.rate(KEY).timed_runs == 0                # a pruned model's timings go with it


def test_a_store_written_before_rates_were_kept_still_plans(tmp_path):
    path = tmp_path / "old.sqlite"
    with Store(path) as store:
        store.put_many(KEY, [generation(1)])
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE IF EXISTS engine_runs")
    with Store(path) as store:
        assert store.rate(KEY).tokens_per_second is None
        store.record_engine_run(KEY, 1, 10, 1.0)
        assert store.rate(KEY).tokens_per_second == 10.0


# --- rank1 store info / export / prune, in this process ----------------------------------------

OTHER = dataclasses.replace(KEY, model="rank1-14b", model_revision="hf:def456", engine="transformers",
                            dtype="bfloat16", max_reasoning_tokens=4096, max_model_len=8000)


def filled_store(path):
    with Store(path) as store:
        store.put_many(KEY, [generation(1), generation(2, "forced"), generation(3), generation(4, "pending")])
        store.put_many(OTHER, [generation(5), generation(6, tokens=())])
    return path


def test_store_info_as_json_and_as_a_table(tmp_path):
    import io

    from rank1_cli.reasoning.store_admin import print_info

    path = filled_store(tmp_path / "s.sqlite")
    out = io.StringIO()
    print_info(str(path), "json", out)
    info = json.loads(out.getvalue())
    size = sum(p.stat().st_size for p in (path, tmp_path / "s.sqlite-wal") if p.exists())
    assert (info["path"], info["bytes"], info["generations"]) == (str(path), size, 6)
    assert info["configurations"] == [
        {"model": "rank1-7b", "model_revision": "hf:abc123", "engine": "vllm", "dtype": "float16",
         "max_reasoning_tokens": 8192, "max_model_len": 16000, "generations": 4, "pending": 1},
        {"model": "rank1-14b", "model_revision": "hf:def456", "engine": "transformers", "dtype": "bfloat16",
         "max_reasoning_tokens": 4096, "max_model_len": 8000, "generations": 2, "pending": 0}]
    table = io.StringIO()
    print_info(str(path), "table", table)
    text = table.getvalue()
    assert f"{path}: {size / 1e6:.1f} MB, 6 generations ({size / 6 / 1e3:.1f} kB each)" in " ".join(text.split())
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in text.splitlines() if "rank1-" in line]
    assert rows == [["rank1-7b", "hf:abc123", "vllm", "float16", "8192", "16000", "4", "1"],
                    ["rank1-14b", "hf:def456", "transformers", "bfloat16", "4096", "8000", "2", "0"]]
    header = next(line for line in text.splitlines() if "model" in line and "revision" in line)
    assert [c.strip() for c in header.split("┃")[1:-1]] == \
        ["model", "revision", "engine", "dtype", "reasoning", "context", "generations", "pending"]
    with pytest.raises(StoreError, match=r"none.sqlite: no such store"):
        print_info(str(tmp_path / "none.sqlite"), "json", io.StringIO())
    assert not (tmp_path / "none.sqlite").exists()


@pytest.mark.parametrize("width", [60, 80, 200])
def test_store_info_cuts_no_value_on_a_narrow_output(width, tmp_path, monkeypatch):
    import io

    from rank1_cli.reasoning.store_admin import print_info

    monkeypatch.setenv("COLUMNS", str(width))
    long = dataclasses.replace(OTHER, model="/data/models/rank1-mistral-2501-24b-awq", max_reasoning_tokens=16384)
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.put_many(long, [generation(i) for i in range(12345 % 97)])
    out = io.StringIO()
    print_info(str(path), "table", out)
    text = out.getvalue()
    assert "/data/models/rank1-mistral-2501-24b-awq" in table_column(text, 1)
    for value in ("hf:def456", "transformers", "bfloat16", "16384", "8000", str(12345 % 97)):
        assert value in text
    assert "…" not in text
    if width == 200:
        assert max(map(len, text.splitlines())) <= width


def test_an_empty_store_shows_zero_per_generation(tmp_path):
    import io

    from rank1_cli.reasoning.store_admin import print_info

    Store(tmp_path / "s.sqlite").close()
    out = io.StringIO()
    print_info(str(tmp_path / "s.sqlite"), "table", out)
    assert "0 generations (0.0 kB each)" in " ".join(out.getvalue().split())


def test_export_writes_every_generation_with_its_settings(tmp_path):
    from rank1_cli.reasoning.store_admin import export_store

    path = filled_store(tmp_path / "s.sqlite")
    assert export_store(str(path), str(tmp_path / "e.jsonl")) == 6
    records = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert records[0] == {"prompt_sha256": sha(1), "settings": {"model": "rank1-7b", **KEY.identity()},
                          "completion": "stop", "verdict": "true", "logprob_true": -0.1, "logprob_false": -2.5,
                          "output_tokens": 3, "reasoning": "reasoning 1.", "token_ids": [1, 2, 3]}
    assert [r["prompt_sha256"] for r in records] == [sha(i) for i in range(1, 7)]
    assert records[3]["completion"] == "pending" and records[3]["verdict"] is None
    assert records[4]["settings"] == {"model": "rank1-14b", **OTHER.identity()}
    with pytest.raises(StoreError):
        export_store(str(tmp_path / "none.sqlite"), str(tmp_path / "f.jsonl"))
    assert not (tmp_path / "f.jsonl").exists() and not (tmp_path / "none.sqlite").exists()


def test_prune_deletes_one_models_generations_and_names_the_others(tmp_path):
    from rank1_cli.reasoning.store_admin import prune_store

    path = filled_store(tmp_path / "s.sqlite")
    with pytest.raises(InputError) as error:
        prune_store(str(path), "rank1-8b")
    assert str(error.value) == f"the store {path} holds no generations of 'rank1-8b' (its models: rank1-14b, rank1-7b)"
    assert prune_store(str(path), "rank1-7b") == 4
    with Store(path) as store:
        assert store.models() == ["rank1-14b"] and store.count() == 2
        assert store.count(OTHER) == 2 and store.count(KEY) == 0
        assert store.get_many(OTHER, [sha(5)]).keys() == {sha(5)}
        assert store.prune("rank1-7b") == 0
    assert prune_store(str(path), "rank1-14b") == 2
    with pytest.raises(InputError, match=r"\(its models: none\)"):
        prune_store(str(path), "rank1-14b")


@pytest.mark.parametrize("error, message", [
    ("file is not a database", "the store is damaged (file is not a database); it was left as it is. Move it aside "
                               "(its readable records can be recovered with `sqlite3 FILE .recover`) or use another "
                               "store path"),
    ("database disk image is malformed", "the store is damaged (database disk image is malformed)"),
    ("index corrupt at page 7", "the store is damaged (index corrupt at page 7)"),
    ("database or disk is full", "cannot write the store: database or disk is full (no space left, or a quota?). "
                                 "The store is intact; free some space and run the same command again"),
    ("disk I/O error", "cannot write the store: disk I/O error (no space left"),
    ("database is locked", "the store stayed locked by another process for"),
    ("database table is busy", "the store stayed locked by another process for"),
    ("attempt to write a readonly database", "cannot write the store (attempt to write a readonly database); check "
                                             "the permissions of the file and of its folder "),
    ("unable to open database file", "cannot write the store (unable to open database file); check the permissions"),
    ("something else", "cannot write the store (something else)"),
])
def test_store_errors_say_what_happened_and_what_to_do(tmp_path, error, message):
    from rank1_cli.reasoning.store import StoreLocked

    with Store(tmp_path / "s.sqlite") as store:
        explained = store._explain(sqlite3.OperationalError(error), "write")
    assert str(explained).startswith(f"{tmp_path / 's.sqlite'}: {message}")
    assert isinstance(explained, StoreLocked) == ("locked" in message)
    if "locked" in message:
        assert "s; is a store on a network filesystem? Give each job its own store on local disk" in str(explained)


class FailingStatements:
    """The store's connection, failing the statements that start with `prefix`."""

    def __init__(self, db, prefix, error):
        self.db, self.prefix, self.error = db, prefix, error

    def execute(self, sql, *args):
        if sql.startswith(self.prefix):
            raise sqlite3.OperationalError(self.error)
        return self.db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.db, name)


def test_prune_counts_every_configuration_of_the_model_and_gives_the_space_back(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.put_many(KEY, [generation(i, reasoning="x" * 4000) for i in range(200)])
        store.put_many(dataclasses.replace(KEY, dtype="bfloat16"), [generation(i) for i in range(3)])
        store.put_many(OTHER, [generation(1)])
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        before = path.stat().st_size
        assert store.prune("rank1-7b") == 203
        assert store.count() == 1
    assert path.stat().st_size < before / 2


def test_a_prune_whose_vacuum_fails_keeps_the_deletion_and_warns(tmp_path, caplog):
    path = filled_store(tmp_path / "s.sqlite")
    with Store(path) as store:
        store._db = FailingStatements(store._db, "VACUUM", "cannot VACUUM - SQL statements in progress")
        with caplog.at_level("WARNING", logger="rank1_cli"):
            assert store.prune("rank1-7b") == 4
        store._db = store._db.db
        assert store.models() == ["rank1-14b"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: the space of the deleted generations was not reclaimed (cannot VACUUM - SQL statements in "
        "progress); it is reused by later writes"]
    assert caplog.records[0].name == "rank1_cli.reasoning.store"


def test_a_prune_that_cannot_write_says_so_and_deletes_nothing(tmp_path):
    path = filled_store(tmp_path / "s.sqlite")
    with Store(path) as store:
        store._db = FailingStatements(store._db, "DELETE FROM configs", "disk I/O error")
        with pytest.raises(StoreError) as error:
            store.prune("rank1-7b")
        store._db = store._db.db
        assert str(error.value).startswith(f"{path}: cannot write the store: disk I/O error")
        assert store.count() == 6


def test_a_key_from_traces_settings_keeps_the_models_name_and_no_path_means_the_default(monkeypatch, tmp_path):
    from rank1_cli.reasoning.store import store_path

    settings = {"format": "rank1-cli/2", "model": "rank1-7b", **KEY.identity(), "prompt_template": None}
    assert GenerationKey.from_settings(settings) == KEY
    monkeypatch.setenv("RANK1_STORE", str(tmp_path / "env.sqlite"))
    assert store_path(None) == store_path("") == tmp_path / "env.sqlite"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert store_path("~/mine.sqlite") == tmp_path / "mine.sqlite"


@pytest.mark.parametrize("changes, message", [
    ({"settings": "float16"}, "no settings object"),
    ({"settings": {**SETTINGS, "dtype": None} | {"max_model_len": "long"}},
     "incomplete settings (model, model_revision, engine, dtype, max_reasoning_tokens, max_model_len)"),
    ({"settings": {k: v for k, v in SETTINGS.items() if k != "engine"}},
     "the settings do not say which model revision and engine made it (traces of an older rank1-cli): name the "
     "model they were made with ({model})"),
    ({"completion": "done"}, "completion must be one of stop, forced, fallback, pending"),
    ({"verdict": "maybe"}, "verdict must be true, false or null"),
    ({"output_tokens": -1}, "reasoning must be a string and output_tokens a count"),
    ({"output_tokens": True}, "reasoning must be a string and output_tokens a count"),
    ({"output_tokens": "3"}, "reasoning must be a string and output_tokens a count"),
    ({"reasoning": None}, "reasoning must be a string and output_tokens a count"),
    ({"logprob_true": "x"}, "logprob_true and logprob_false must be numbers or null"),
    ({"logprob_false": float("nan")}, "logprob_true and logprob_false must be numbers or null"),
    ({"logprob_true": True}, "logprob_true and logprob_false must be numbers or null"),
])
def test_a_record_that_is_not_a_trace_says_why(changes, message):
    with pytest.raises(ValueError) as error:
        record_generation(json.loads(trace_line(1, **changes)), None)
    assert str(error.value) == message


def test_records_of_every_valid_shape_are_taken():
    key, stored = record_generation(json.loads(trace_line(1, verdict="false", score=None, output_tokens=0,
                                                          logprob_true=-3, logprob_false=-0.25)), None)
    assert key == KEY and (stored.verdict, stored.output_tokens, stored.logprob_true) == ("false", 0, -3.0)
    _, pending = record_generation(json.loads(trace_line(2, completion="pending", verdict=None, score=None,
                                                         logprob_true=None, logprob_false=None)), None)
    assert (pending.completion, pending.logprob_true, pending.verdict) == ("pending", None, None)
    old = {k: v for k, v in SETTINGS.items() if k not in ("model_revision", "engine", "dtype")}
    with pytest.raises(ValueError) as error:
        record_generation(json.loads(trace_line(3, settings=old)), KEY)
    assert str(error.value) == "settings lack dtype, max_reasoning_tokens or max_model_len"


def test_looking_up_an_unknown_configuration_finds_nothing_and_creates_nothing(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        store.put_many(KEY, [generation(1)])
        assert store.count(OTHER) == 0 and store.get_many(OTHER, [sha(1)]) == {}
        assert [c.model for c in store.info().configs] == ["rank1-7b"]
        assert store.put_many(KEY, []) == 0


def test_a_lookup_of_many_prompts_finds_every_one(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        store.put_many(KEY, [generation(i, tokens=()) for i in range(2500)])
        found = store.get_many(KEY, [sha(i) for i in range(2600)])
    assert sorted(found) == [sha(i) for i in range(2500)]


def test_a_generation_with_an_unknown_completion_is_refused(tmp_path):
    with Store(tmp_path / "s.sqlite") as store, pytest.raises(ValueError) as error:
        store.put_many(KEY, [dataclasses.replace(generation(1), completion="done")])
    assert str(error.value) == "completion must be one of stop, forced, fallback, pending, found 'done'"


def test_where_a_store_cannot_be(tmp_path):
    with pytest.raises(StoreError) as error:
        Store(tmp_path)
    assert str(error.value) == f"{tmp_path}: is a directory; the store is a file (e.g. {tmp_path / 'store.sqlite'})"
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError) as error:
        Store(tmp_path / "file" / "s.sqlite")
    assert str(error.value) == f"{tmp_path / 'file' / 's.sqlite'}: cannot create the store: {tmp_path / 'file'} is a " \
                               "file, not a folder"
    with pytest.raises(StoreError) as error:
        Store(tmp_path / "none.sqlite", create=False)
    assert str(error.value) == f"{tmp_path / 'none.sqlite'}: no such store"
    with Store(tmp_path / "new" / "folders" / "s.sqlite") as store:     # missing folders are made
        assert store.count() == 0


def test_import_of_old_traces_takes_the_model_and_engine_given(tmp_path):
    from conftest import TINY_MODEL

    from rank1_cli.reasoning.models import model_revision, resolve_model

    old = {k: v for k, v in SETTINGS.items() if k not in ("model_revision", "engine")}
    traces = tmp_path / "old.jsonl"
    traces.write_text(trace_line(1, settings=old) + "\n\n" + trace_line(2, settings=old) + "\n")
    report = import_files([str(traces)], str(tmp_path / "s.sqlite"), model=str(TINY_MODEL), backend="transformers")
    assert (report.store, report.lines, report.added, report.already) == (str(tmp_path / "s.sqlite"), 2, 2, 0)
    resolved = resolve_model(str(TINY_MODEL))
    key = GenerationKey(resolved.spec, model_revision(resolved), "transformers", "float16", 8192, 16000)
    with Store(tmp_path / "s.sqlite") as store:
        assert store.get_many(key, [sha(1), sha(2)]).keys() == {sha(1), sha(2)}


@pytest.mark.parametrize("line, message", [
    ("[1, 2]", "t.jsonl:2: not a rank1 trace: not a JSON object"),
    ('{"qid": ', "t.jsonl:2: invalid JSON (Expecting value at column 9)"),
])
def test_import_names_the_line_that_is_not_a_trace_object(tmp_path, line, message):
    traces = tmp_path / "t.jsonl"
    traces.write_text(trace_line(0) + "\n" + line + "\n")
    with pytest.raises(InputError) as error:
        import_files([str(traces)], str(tmp_path / "s.sqlite"))
    assert str(error.value) == f"{tmp_path}/{message}"


def test_an_import_larger_than_one_batch_counts_every_line(tmp_path):
    traces = tmp_path / "t.jsonl"
    traces.write_text("".join(trace_line(i) + "\n" for i in range(2500)))
    assert import_files([str(traces)], str(tmp_path / "s.sqlite")).added == 2500
    again = import_files([str(traces), str(traces)], str(tmp_path / "s.sqlite"))
    assert (again.lines, again.added, again.already) == (5000, 0, 5000)


# --- what a failed read or write says, per operation --------------------------------------------

@pytest.mark.parametrize("doing, call", [
    ("read", lambda store: store.count()),
    ("read", lambda store: store.count(KEY)),
    ("read", lambda store: store.get_many(KEY, [sha(1)])),
    ("read", lambda store: store.completions(KEY, [sha(1)])),
    ("read", lambda store: store.rate(KEY)),
    ("read", lambda store: store.models()),
    ("read", lambda store: store.info()),
    ("read", lambda store: list(store.export())),
    ("write", lambda store: store.put_many(KEY, [generation(9)])),
    ("write", lambda store: store.record_engine_run(KEY, 1, 10, 1.0)),
    ("write", lambda store: store.prune("rank1-7b")),
])
def test_a_failed_statement_says_whether_the_store_could_not_be_read_or_written(tmp_path, doing, call):
    path = filled_store(tmp_path / "s.sqlite")
    with Store(path) as store:
        store._config_ids.clear()
        store._db = FailingStatements(store._db, "", "something else")
        with pytest.raises(StoreError) as error:
            call(store)
        store._db = store._db.db
    assert str(error.value) == f"{path}: cannot {doing} the store (something else)"


def test_engine_runs_that_generated_nothing_or_took_no_time_are_not_kept(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        store.put_many(KEY, [generation(1)])
        store.record_engine_run(KEY, 0, 0, 3.0)
        store.record_engine_run(KEY, 5, 100, 0.0)
        assert store.rate(KEY).timed_runs == 0
        store.record_engine_run(KEY, 1, 100, 4.0)
        assert (store.rate(KEY).timed_runs, store.rate(KEY).tokens_per_second) == (1, 25.0)


def test_a_rate_falls_back_to_every_other_budget_of_the_model_and_looking_creates_nothing(tmp_path):
    short = dataclasses.replace(KEY, max_reasoning_tokens=100)
    long = dataclasses.replace(KEY, max_reasoning_tokens=2000)
    wanted = dataclasses.replace(KEY, max_reasoning_tokens=500)
    with Store(tmp_path / "s.sqlite") as store:
        store.put_many(short, [generation(1, tokens=(1,) * 50)])
        store.put_many(long, [generation(2, tokens=(1,) * 1000), generation(3, tokens=(1,) * 300)])
        store.record_engine_run(short, 1, 50, 1.0)
        store.record_engine_run(long, 2, 1300, 1.0)
        # Timed, but nothing stored under these very settings: the other budgets speak for it.
        store.record_engine_run(wanted, 1, 10, 10.0)
        rate = store.rate(wanted)
        assert (rate.generations, rate.same_settings, rate.timed_runs) == (3, False, 3)
        assert rate.mean_output_tokens == pytest.approx((50 + 500 + 300) / 3)     # capped at the budget asked
        assert rate.tokens_per_second == pytest.approx(1360 / 12)
        configs = len(store.info().configs)
        assert store.rate(dataclasses.replace(KEY, dtype="bfloat16")) is None
        assert len(store.info().configs) == configs


def test_a_pruned_models_timings_are_deleted_with_it(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.put_many(KEY, [generation(1)])
        store.record_engine_run(KEY, 1, 10, 1.0)
        store.put_many(OTHER, [generation(2)])
        store.record_engine_run(OTHER, 1, 10, 1.0)
        assert store.prune("rank1-7b") == 1
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM engine_runs").fetchone() == (1,)


# --- token ids through export and import --------------------------------------------------------

def test_token_ids_survive_export_and_import_whole(tmp_path):
    from rank1_cli.reasoning.store_admin import export_store

    with Store(tmp_path / "a.sqlite") as store:
        store.put_many(KEY, [generation(1, tokens=(0, 5, 2**32 - 1)), generation(2, "pending", tokens=(4, 0))])
    export_store(str(tmp_path / "a.sqlite"), str(tmp_path / "e.jsonl"))
    assert import_files([str(tmp_path / "e.jsonl")], str(tmp_path / "b.sqlite")).added == 2
    with Store(tmp_path / "b.sqlite") as store:
        got = store.get_many(KEY, [sha(1), sha(2)], with_token_ids=True)
    assert (got[sha(1)].token_ids, got[sha(2)].token_ids) == ((0, 5, 2**32 - 1), (4, 0))


@pytest.mark.parametrize("token_ids", ["1 2 3", [1, -1], [2**32], [1.5], [True, "2"]])
def test_token_ids_that_are_not_a_list_of_ids_are_refused(token_ids):
    with pytest.raises(ValueError) as error:
        record_generation(json.loads(trace_line(1, token_ids=token_ids)), None)
    assert str(error.value) == "token_ids must be a list of token ids"


def test_a_forced_verdict_needs_its_verdict_and_a_long_wrong_score_is_shortened():
    with pytest.raises(ValueError) as error:
        record_generation(json.loads(trace_line(1, completion="forced", verdict=None)), None)
    assert str(error.value) == "a forced completion needs both logprobs and a verdict"
    with pytest.raises(ValueError) as error:
        record_generation(json.loads(trace_line(1, score="0.123456789012345678901234567890123")), None)
    assert str(error.value) == "score 0.1234567890123456789012345678 does not follow from its logprobs"


def test_an_export_keeps_non_ascii_reasoning_readable(tmp_path):
    from rank1_cli.reasoning.store_admin import export_store

    with Store(tmp_path / "s.sqlite") as store:
        store.put_many(KEY, [generation(1, reasoning="Schrödinger’s naïve café.")])
    export_store(str(tmp_path / "s.sqlite"), str(tmp_path / "e.jsonl"))
    assert '"reasoning": "Schrödinger’s naïve café."' in (tmp_path / "e.jsonl").read_text(encoding="utf-8")


def test_store_info_shortens_a_long_revision_in_the_table_and_indents_its_json(tmp_path):
    import io

    from rank1_cli.reasoning.store_admin import print_info

    long = dataclasses.replace(KEY, model_revision="hf:0123456789abcdef0123456789abcdef01234567")
    with Store(tmp_path / "s.sqlite") as store:
        store.put_many(long, [generation(1)])
    table = io.StringIO()
    print_info(str(tmp_path / "s.sqlite"), "table", table)
    row = next(line for line in table.getvalue().splitlines() if "rank1-7b" in line)
    assert [cell.strip() for cell in row.split("│")[1:3]] == ["rank1-7b", "hf:0123456789abcdef"]
    text = io.StringIO()
    print_info(str(tmp_path / "s.sqlite"), "json", text)
    assert text.getvalue().startswith('{\n  "path": ') and '\n    {\n      "model": "rank1-7b",' in text.getvalue()


def test_a_recomputed_generation_without_token_ids_does_not_keep_the_old_ones(tmp_path):
    # The old ids belong to the old reasoning: a sweep would cut the new reasoning at them.
    with Store(tmp_path / "s.sqlite") as store:
        store.put_many(KEY, [generation(1, reasoning="old reasoning.", tokens=(7, 8, 9))])
        store.put_many(KEY, [dataclasses.replace(generation(1, reasoning="new reasoning."), token_ids=None)],
                       replace=True)
        got = store.get_many(KEY, [sha(1)], with_token_ids=True)[sha(1)]
    assert (got.reasoning, got.token_ids) == ("new reasoning.", None)
