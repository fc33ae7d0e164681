"""The reasoning store: every generation rank1 made, in one SQLite database, so none is lost or
made twice.

A generation is keyed by what decides it: the *configuration* (model identity and revision,
engine, dtype, reasoning budget, context length: `GenerationKey`) and the sha256 of the prompt.
The same prompt under the same configuration is never sent to an engine again; a rerank of
another first-stage run, another depth or another shard reuses every pair it shares.

Durability: the database is in WAL mode with `synchronous=FULL`, and every `put` is one
transaction, committed (and fsynced) before it returns; a process killed at any moment loses at
most the batch it was writing. Several processes on one machine may write one store at once
(SQLite's locking; a writer waits up to `BUSY_SECONDS` for another). SQLite's locking is not safe
on network filesystems (a store on one is warned about): on a cluster give each job its own store
on local disk and gather the traces with `rank1 store import`.

Opening a store for writing proves it can be written (a write statement, rolled back), so a
read-only file, an unwritable folder or a file that is no store is an error before any model
loads, not at the first commit. Nothing here ever deletes or truncates a store it cannot read: a
damaged file is a `StoreError` that names it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import sqlite3
import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

SCHEMA = "rank1-cli-store/1"
STORE_ENV = "RANK1_STORE"
STORE_FILE = "store.sqlite"
BUSY_SECONDS = 120
LOOKUP_BATCH = 500          # prompt hashes per SELECT (SQLite allows 32,766 parameters)
PENDING = "pending"         # reasoning that did not finish; its forced verdict is still to be made
COMPLETIONS = ("stop", "forced", "fallback", PENDING)

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS configs (
    config_id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: a pruned id stays dead
    config_key TEXT NOT NULL UNIQUE,     -- sha256 of the canonical JSON of the key's fields
    model TEXT NOT NULL,                 -- what the user named (alias, id or folder), for display
    identity TEXT NOT NULL,              -- the key's fields, as JSON
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS generations (
    config_id INTEGER NOT NULL REFERENCES configs(config_id),
    prompt_sha256 BLOB NOT NULL,         -- 32 bytes
    completion TEXT NOT NULL,            -- stop | forced | fallback | pending (awaits its repair)
    verdict TEXT,
    logprob_true REAL,
    logprob_false REAL,
    output_tokens INTEGER NOT NULL,
    reasoning TEXT NOT NULL,
    token_ids BLOB,                      -- the generated token ids, uint32 little-endian, if known
    created REAL NOT NULL,
    UNIQUE (config_id, prompt_sha256)
);
"""
# Added after the first stores were written: made on first use, so older stores need no migration.
_RATES_SQL = """
CREATE TABLE IF NOT EXISTS engine_runs (
    config_id INTEGER NOT NULL,
    generations INTEGER NOT NULL,        -- prompts the engine generated in one scoring call
    output_tokens INTEGER NOT NULL,
    engine_seconds REAL NOT NULL,        -- generation only: engine start and repairs excluded
    created REAL NOT NULL
)
"""
# The digests of local model files (see models.folder_fingerprint), also made on first use.
_FILE_DIGESTS_SQL = """
CREATE TABLE IF NOT EXISTS file_digests (
    path TEXT PRIMARY KEY,               -- absolute
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    digest TEXT NOT NULL,                -- valid while the file's size, times and inode are these
    created REAL NOT NULL
)
"""
MOUNTS = Path("/proc/mounts")
SQLITE_HEADER = b"SQLite format 3\x00"
# Filesystems on which SQLite's locking cannot be trusted (types as /proc/mounts names them).
NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "glusterfs",
                                 "fuse.glusterfs", "ceph", "fuse.ceph", "fuse.sshfs", "9p", "afs", "panfs"})
# The fingerprint scheme of local folders before every byte was hashed (see models.model_revision).
UNVERIFIED_REVISION_PREFIX = "sha256:"

log = logging.getLogger(__name__)


class StoreError(Exception):
    """The store cannot be opened, read or written; the message names the file and what to do."""


class StoreLocked(StoreError):
    """Another process held the store's lock for too long."""


class StoreUnusable(StoreError, InputError):
    """The path given cannot be a store (no rank1 store, or cannot be written): a bad option (exit
    code 2), where a damaged store or a full disk is a failure (exit code 1)."""


@dataclass(frozen=True, slots=True)
class FileStamp:
    """A file as its metadata shows it: any write changes its size or times, a replacement its inode."""

    path: str
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> "FileStamp":
        stat = path.stat()
        return cls(os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


@dataclass(frozen=True, slots=True)
class GenerationKey:
    """Everything besides the prompt that decides a generation.

    `model_revision` identifies the weights: the commit of a Hugging Face model, or a content
    fingerprint of a local folder (so a copied folder still matches and a retrained one does not).
    `model` is what the user named; it is shown, not compared.
    """

    model: str
    model_revision: str
    engine: str
    dtype: str
    max_reasoning_tokens: int
    max_model_len: int

    def identity(self) -> dict[str, Any]:
        return {"model_revision": self.model_revision, "engine": self.engine, "dtype": self.dtype,
                "max_reasoning_tokens": self.max_reasoning_tokens, "max_model_len": self.max_model_len}

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "GenerationKey":
        """The key recorded in a trace's settings; KeyError/ValueError when it is incomplete."""
        return cls(str(settings["model"]), str(settings["model_revision"]), str(settings["engine"]),
                   str(settings["dtype"]), int(settings["max_reasoning_tokens"]), int(settings["max_model_len"]))


@dataclass(frozen=True, slots=True)
class StoredGeneration:
    """One generation as stored; `completion` "pending" means the reasoning did not finish and
    the forced verdict is still to be made."""

    prompt_sha256: str
    completion: str
    verdict: str | None
    logprob_true: float | None
    logprob_false: float | None
    output_tokens: int
    reasoning: str
    token_ids: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class MeasuredRate:
    """What earlier runs of a configuration (or its model) measured: the basis of a cost estimate."""

    generations: int                 # stored generations the token mean comes from
    mean_output_tokens: float        # per generation, capped at the reasoning budget asked about
    timed_runs: int                  # engine runs with a measured time
    tokens_per_second: float | None  # output tokens per second of engine time; None when never timed
    same_settings: bool              # measured under exactly these settings (else: same model and engine)
    cut_short: int = 0               # of the generations: reasoning cut at a smaller budget (a lower bound)


@dataclass(frozen=True, slots=True)
class ConfigSummary:
    model: str
    identity: dict[str, Any]
    generations: int
    pending: int


@dataclass(frozen=True, slots=True)
class StoreInfo:
    path: str
    bytes: int
    generations: int
    configs: list[ConfigSummary]


def default_store_path() -> Path:
    """$RANK1_STORE, else $XDG_CACHE_HOME/rank1-cli/store.sqlite, else ~/.cache/rank1-cli/store.sqlite."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "rank1-cli" / STORE_FILE


def store_path(path: str | os.PathLike | None = None) -> Path:
    """The store a command uses: `path` when given, else the default one."""
    return Path(path).expanduser() if path else default_store_path()


def network_filesystem(path: str, mounts: str) -> str | None:
    """The type of the network filesystem that holds `path` (absolute, symlinks resolved), by
    the longest mount point of `mounts` (the text of /proc/mounts) that contains it; None when it
    is on local disk."""
    best, best_type = "", None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        # /proc/mounts writes a space in a mount point as \040 (and tab, newline, backslash alike).
        mount = re.sub(r"\\([0-7]{3})", lambda escape: chr(int(escape.group(1), 8)), fields[1])
        inside = path == mount or path.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, best_type = mount, fields[2]
    return best_type if best_type in NETWORK_FILESYSTEMS else None


def _pack_tokens(token_ids: Sequence[int] | None) -> bytes | None:
    if token_ids is None:
        return None
    packed = array("I", token_ids)
    if packed.itemsize != 4:  # pragma: no cover - every platform rank1 runs on has 4-byte unsigned int
        raise RuntimeError("array('I') is not 4 bytes here")
    return packed.tobytes()


def _unpack_tokens(blob: bytes | None) -> tuple[int, ...] | None:
    if blob is None:
        return None
    return tuple(array("I", blob))


class Store:
    """An open store; see the module docstring. Use as a context manager or call `close`."""

    def __init__(self, path: str | os.PathLike, *, create: bool = True, write: bool = True) -> None:
        """`create`: make the store (and its folders) when missing. `write`: the store will be
        written, so prove now that it can be, and warn when it is on a network filesystem; a
        store only read (`rank1 store info`, `export`) may be read-only."""
        self.path = Path(path).expanduser()
        self._config_ids: dict[str, int] = {}
        self._check_path(create, write)
        try:
            self._db = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the store ({exc})") from None
        try:
            self._setup()
            if write:
                self._check_writable()
        except BaseException:
            self._db.close()
            raise
        if write:
            self._warn_if_on_a_network_filesystem()

    def _check_path(self, create: bool, write: bool) -> None:
        """What SQLite would report as "unable to open database file", or only at the first
        commit, said with the path it is about; a file that is no SQLite database at all is not
        taken for a damaged store."""
        if self.path.is_dir():
            raise StoreUnusable(f"{self.path}: is a directory; the store is a file (e.g. {self.path / STORE_FILE})")
        folder = self.path.parent
        if self.path.exists():
            try:
                with open(self.path, "rb") as handle:
                    head = handle.read(len(SQLITE_HEADER))
            except OSError as exc:
                raise StoreUnusable(f"{self.path}: cannot read the store ({exc.strerror})") from None
            if not SQLITE_HEADER.startswith(head):
                raise StoreUnusable(f"{self.path}: not a rank1 store (not an SQLite database: it begins with "
                                    f"{head!r}); it was left as it is. Choose another store path")
        elif not create:
            raise StoreUnusable(f"{self.path}: no such store")
        else:
            existing = next(p for p in (folder, *folder.parents) if p.exists())
            if not existing.is_dir():
                raise StoreUnusable(f"{self.path}: cannot create the store: {existing} is a file, not a folder")
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreUnusable(f"{self.path}: cannot create the store's folder {folder} ({exc.strerror})") \
                    from None
        if write and not os.access(folder, os.W_OK | os.X_OK):
            raise StoreUnusable(f"{self.path}: the folder {folder} is not writable, and the store writes its journal "
                                f"({self.path.name}-wal) there; make it writable or use another store path")
        if write and self.path.exists() and not os.access(self.path, os.W_OK):
            raise StoreUnusable(f"{self.path}: the store file is not writable; make it writable or use another store "
                                "path")

    def _check_writable(self) -> None:
        """A write statement, rolled back: SQLite refuses it on a store it cannot write (taking
        the write lock alone does not tell)."""
        with self._errors("write"):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("UPDATE meta SET value = value WHERE key = 'schema'")
            finally:
                self._db.execute("ROLLBACK")

    def _warn_if_on_a_network_filesystem(self) -> None:
        try:
            mounts = MOUNTS.read_text()
        except OSError:     # not Linux
            return
        filesystem = network_filesystem(os.path.realpath(self.path), mounts)
        if filesystem:
            log.warning("%s is on a network filesystem (%s), where SQLite's locking is not safe: two jobs writing it "
                        "at once can damage it. Give each job its own store on local disk (--store) and gather "
                        "them with `rank1 store import`", self.path, filesystem)

    def _setup(self) -> None:
        # Two processes opening a new store at once can each hold the lock the other needs to
        # switch it to WAL; SQLite then answers "locked" at once instead of waiting. Try again.
        deadline = time.monotonic() + BUSY_SECONDS
        while True:
            try:
                return self._setup_once()
            except StoreLocked:
                if time.monotonic() > deadline:
                    raise
            time.sleep(random.uniform(0.01, 0.1))

    def _setup_once(self) -> None:
        with self._errors("open"):
            tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and "meta" not in tables:
                raise StoreUnusable(f"{self.path}: an SQLite database, but not a rank1 store (its tables: "
                                    f"{', '.join(sorted(tables))[:100]}); choose another store path")
            if "meta" in tables:
                row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if row is None or row[0] != SCHEMA:
                    found = row[0] if row else "none"
                    raise StoreUnusable(f"{self.path}: store schema {found!r}, this rank1 reads {SCHEMA!r}; "
                                        "use another store path, or the rank1 version that wrote it")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            if "meta" not in tables:
                with self._transaction():
                    for statement in _SCHEMA_SQL.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    self._db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)", (SCHEMA,))

    # --- plumbing ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._explain(exc, doing) from None

    def _explain(self, exc: sqlite3.Error, doing: str) -> StoreError:
        text = str(exc)
        if "not a database" in text or "malformed" in text or isinstance(exc, sqlite3.DatabaseError) and \
                "corrupt" in text:
            return StoreError(f"{self.path}: the store is damaged ({text}); it was left as it is. Move it aside "
                              "(its readable records can be recovered with `sqlite3 FILE .recover`) or use another "
                              "store path")
        if "full" in text or "disk I/O" in text:
            return StoreError(f"{self.path}: cannot {doing} the store: {text} (no space left, or a quota?). The "
                              "store is intact; free some space and run the same command again")
        if "locked" in text or "busy" in text:
            return StoreLocked(f"{self.path}: the store stayed locked by another process for {BUSY_SECONDS} s; "
                              "is a store on a network filesystem? Give each job its own store on local disk")
        if "readonly" in text or "unable to open" in text:
            return StoreUnusable(f"{self.path}: cannot {doing} the store ({text}); check the permissions of the file "
                                 f"and of its folder {self.path.parent}, or use another store path")
        return StoreError(f"{self.path}: cannot {doing} the store ({text})")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
            self._db = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- configurations ----------------------------------------------------------------------

    def _config_id(self, key: GenerationKey, create: bool) -> int | None:
        """The key's configuration id; `create` (only inside a write transaction) makes it if
        missing and never trusts the cache, since another process may have pruned it."""
        digest = key.digest
        if digest in self._config_ids and not create:
            return self._config_ids[digest]
        row = self._db.execute("SELECT config_id FROM configs WHERE config_key=?", (digest,)).fetchone()
        if row is None and create:
            self._db.execute("INSERT OR IGNORE INTO configs(config_key, model, identity, created) VALUES (?,?,?,?)",
                             (digest, key.model, json.dumps(key.identity(), sort_keys=True), time.time()))
            row = self._db.execute("SELECT config_id FROM configs WHERE config_key=?", (digest,)).fetchone()
        if row is None:
            return None
        self._config_ids[digest] = row[0]
        return row[0]

    # --- reading and writing -----------------------------------------------------------------

    def _rows(self, key: GenerationKey, prompt_hashes: Iterable[str], columns: str) -> Iterator[tuple]:
        """(prompt_sha256, *columns) of the stored generations among `prompt_hashes` under `key`,
        looked up LOOKUP_BATCH hashes at a time; call inside `_errors`."""
        config_id = self._config_id(key, create=False)
        if config_id is None:
            return
        wanted = [bytes.fromhex(h) for h in dict.fromkeys(prompt_hashes)]
        for start in range(0, len(wanted), LOOKUP_BATCH):
            batch = wanted[start:start + LOOKUP_BATCH]
            yield from self._db.execute(
                f"SELECT prompt_sha256, {columns} FROM generations "
                f"WHERE config_id=? AND prompt_sha256 IN ({','.join('?' * len(batch))})", (config_id, *batch))

    def get_many(self, key: GenerationKey, prompt_hashes: Iterable[str], *,
                 with_token_ids: bool = False) -> dict[str, StoredGeneration]:
        """The stored generations among `prompt_hashes` (hex sha256) under `key`.

        Token ids are left out (None) unless asked for: as Python ints they would cost ~20 times
        their stored size, and scoring does not need them.
        """
        columns = ("completion, verdict, logprob_true, logprob_false, output_tokens, reasoning, "
                   + ("token_ids" if with_token_ids else "NULL"))
        with self._errors("read"):
            return {digest.hex(): StoredGeneration(digest.hex(), completion, verdict, lt, lf, tokens, reasoning,
                                                   _unpack_tokens(token_ids))
                    for digest, completion, verdict, lt, lf, tokens, reasoning, token_ids
                    in self._rows(key, prompt_hashes, columns)}

    def completions(self, key: GenerationKey, prompt_hashes: Iterable[str]) -> dict[str, str]:
        """prompt hash -> completion ("stop", ..., "pending") of the stored ones among `prompt_hashes`;
        reads nothing else, so a plan over 100k pairs stays cheap."""
        with self._errors("read"):
            return {digest.hex(): completion for digest, completion in self._rows(key, prompt_hashes, "completion")}

    def put_many(self, key: GenerationKey, generations: Sequence[StoredGeneration], *, replace: bool = False) -> int:
        """Store `generations` in one committed transaction; return how many were written.

        A finished generation replaces a pending one for the same prompt; otherwise an existing
        record is kept (the first writer wins) unless `replace` is set.
        """
        if not generations:
            return 0
        now = time.time()
        rows = [(g.prompt_sha256, g.completion, g.verdict, g.logprob_true, g.logprob_false, g.output_tokens,
                 g.reasoning, _pack_tokens(g.token_ids)) for g in generations]
        for g in generations:
            if g.completion not in COMPLETIONS:
                raise ValueError(f"completion must be one of {', '.join(COMPLETIONS)}, found {g.completion!r}")
        with self._errors("write"), self._transaction():
            config_id = self._config_id(key, create=True)
            condition = "" if replace else " WHERE generations.completion = 'pending' AND excluded.completion != 'pending'"
            # A repair carries no token ids (look-ups leave them out): keep the stored ones then.
            token_ids = "excluded.token_ids" if replace else "COALESCE(excluded.token_ids, generations.token_ids)"
            before = self._db.total_changes
            self._db.executemany(
                "INSERT INTO generations(config_id, prompt_sha256, completion, verdict, logprob_true, logprob_false, "
                "output_tokens, reasoning, token_ids, created) VALUES (?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(config_id, prompt_sha256) DO UPDATE SET completion=excluded.completion, "
                "verdict=excluded.verdict, logprob_true=excluded.logprob_true, logprob_false=excluded.logprob_false, "
                "output_tokens=excluded.output_tokens, reasoning=excluded.reasoning, "
                f"token_ids={token_ids}, "
                "created=excluded.created" + condition,
                [(config_id, bytes.fromhex(sha), *rest, now) for sha, *rest in rows])
            return self._db.total_changes - before

    def count(self, key: GenerationKey | None = None) -> int:
        with self._errors("read"):
            if key is None:
                return self._db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
            config_id = self._config_id(key, create=False)
            if config_id is None:
                return 0
            return self._db.execute("SELECT COUNT(*) FROM generations WHERE config_id=?", (config_id,)).fetchone()[0]

    # --- administration ----------------------------------------------------------------------

    def info(self) -> StoreInfo:
        with self._errors("read"):
            configs = [ConfigSummary(model, json.loads(identity), count, pending)
                       for model, identity, count, pending in self._db.execute(
                           "SELECT c.model, c.identity, COUNT(g.prompt_sha256), "
                           "COALESCE(SUM(g.completion = 'pending'), 0) FROM configs c "
                           "LEFT JOIN generations g ON g.config_id = c.config_id GROUP BY c.config_id ORDER BY c.created")]
            total = sum(c.generations for c in configs)
        size = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        return StoreInfo(str(self.path), size, total, configs)

    def export(self) -> Iterator[dict[str, Any]]:
        """Every stored generation as a self-describing record (see `rank1 store export`)."""
        with self._errors("read"):
            rows = self._db.execute(
                "SELECT c.model, c.identity, g.prompt_sha256, g.completion, g.verdict, g.logprob_true, g.logprob_false, "
                "g.output_tokens, g.reasoning, g.token_ids FROM generations g JOIN configs c USING (config_id) "
                "ORDER BY g.rowid")
            for model, identity, digest, completion, verdict, lt, lf, tokens, reasoning, token_ids in rows:
                settings = {"model": model, **json.loads(identity)}
                record = {"prompt_sha256": digest.hex(), "settings": settings, "completion": completion,
                          "verdict": verdict, "logprob_true": lt, "logprob_false": lf, "output_tokens": tokens,
                          "reasoning": reasoning}
                if token_ids is not None:
                    record["token_ids"] = list(_unpack_tokens(token_ids))
                yield record

    def prune(self, model: str) -> int:
        """Delete every generation of the configurations whose model is `model`; return how many."""
        with self._errors("write"):
            with self._transaction():
                ids = [row[0] for row in self._db.execute("SELECT config_id FROM configs WHERE model=?", (model,))]
                removed = 0
                has_rates = self._has_table("engine_runs")
                for config_id in ids:
                    removed += self._db.execute("DELETE FROM generations WHERE config_id=?", (config_id,)).rowcount
                    self._db.execute("DELETE FROM configs WHERE config_id=?", (config_id,))
                    if has_rates:
                        self._db.execute("DELETE FROM engine_runs WHERE config_id=?", (config_id,))
            self._config_ids.clear()
        if removed:
            try:
                self._db.execute("VACUUM")      # give the space back; the deletion stands without it
            except sqlite3.Error as exc:
                log.warning("%s: the space of the deleted generations was not reclaimed "
                                                    "(%s); it is reused by later writes", self.path, exc)
        return removed

    # --- measured rates (for cost plans) -------------------------------------------------------

    def _has_table(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() \
            is not None

    def record_engine_run(self, key: GenerationKey, generations: int, output_tokens: int, seconds: float) -> None:
        """Remember how fast the engine generated under `key` (what `rate` estimates from)."""
        if generations <= 0 or seconds <= 0:
            return
        with self._errors("write"), self._transaction():
            self._db.execute(_RATES_SQL)
            config_id = self._config_id(key, create=True)
            self._db.execute("INSERT INTO engine_runs VALUES (?,?,?,?,?)",
                             (config_id, generations, output_tokens, seconds, time.time()))

    def rate(self, key: GenerationKey) -> MeasuredRate | None:
        """Reasoning length and engine speed measured under `key`; failing that, under any
        configuration of the same model revision, engine and dtype (reasoning lengths capped at
        `key`'s budget). None when the store has never seen this model."""
        with self._errors("read"):
            exact = self._config_id(key, create=False)
            configs = [exact] if exact is not None and self.count(key) else []
            same_settings = bool(configs)
            smaller_budget = []
            if not configs:
                for config_id, identity in self._db.execute("SELECT config_id, identity FROM configs"):
                    fields = json.loads(identity)
                    if (fields.get("model_revision"), fields.get("engine"), fields.get("dtype")) == \
                            (key.model_revision, key.engine, key.dtype):
                        configs.append(config_id)
                        if fields.get("max_reasoning_tokens", 0) < key.max_reasoning_tokens:
                            smaller_budget.append(config_id)
            if not configs:
                return None
            marks = ",".join("?" * len(configs))
            count, mean = self._db.execute(
                f"SELECT COUNT(*), AVG(MIN(output_tokens, ?)) FROM generations WHERE config_id IN ({marks})",
                (key.max_reasoning_tokens, *configs)).fetchone()
            if not count:
                return None
            runs, tokens, seconds = 0, 0, 0.0
            if self._has_table("engine_runs"):
                runs, tokens, seconds = self._db.execute(
                    f"SELECT COUNT(*), COALESCE(SUM(output_tokens), 0), COALESCE(SUM(engine_seconds), 0) "
                    f"FROM engine_runs WHERE config_id IN ({marks})", configs).fetchone()
            # Reasoning that did not finish within a smaller budget would have gone on under this one.
            cut_short = self._db.execute(
                f"SELECT COUNT(*) FROM generations WHERE completion != 'stop' AND config_id IN "
                f"({','.join('?' * len(smaller_budget))})", smaller_budget).fetchone()[0] if smaller_budget else 0
            return MeasuredRate(count, mean, runs, tokens / seconds if seconds > 0 else None, same_settings, cut_short)

    # --- local model folders ------------------------------------------------------------------

    def file_digests(self, stamps: Iterable[FileStamp]) -> dict[FileStamp, str]:
        """The digests recorded for these files, for those unchanged since (same size, times and inode)."""
        with self._errors("read"):
            if not self._has_table("file_digests"):
                return {}
            found = {}
            for stamp in stamps:
                row = self._db.execute("SELECT size, mtime_ns, ctime_ns, inode, digest FROM file_digests WHERE path=?",
                                       (stamp.path,)).fetchone()
                if row is not None and FileStamp(stamp.path, *row[:4]) == stamp:
                    found[stamp] = row[4]
            return found

    def remember_file_digests(self, digests: dict[FileStamp, str]) -> None:
        if not digests:
            return
        now = time.time()
        with self._errors("write"), self._transaction():
            self._db.execute(_FILE_DIGESTS_SQL)
            self._db.executemany("INSERT OR REPLACE INTO file_digests VALUES (?,?,?,?,?,?,?)",
                                 [(s.path, s.size, s.mtime_ns, s.ctime_ns, s.inode, digest, now)
                                  for s, digest in digests.items()])

    def unverified_generations(self, model: str) -> int:
        """Generations of the local folder `model` stored under its older fingerprint (names, sizes,
        the first and last MiB of each file), which cannot tell a fine-tune saved over the folder
        from the model before it: they are kept (export shows them) but never matched."""
        with self._errors("read"):
            return sum(count for identity, count in self._db.execute(
                "SELECT c.identity, COUNT(g.prompt_sha256) FROM configs c JOIN generations g USING (config_id) "
                "WHERE c.model=? GROUP BY c.config_id", (model,))
                if str(json.loads(identity).get("model_revision")).startswith(UNVERIFIED_REVISION_PREFIX))

    def models(self) -> list[str]:
        with self._errors("read"):
            return [row[0] for row in self._db.execute("SELECT DISTINCT model FROM configs ORDER BY model")]
