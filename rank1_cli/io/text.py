"""Opening inputs (plain, gzip, stdin) and writing outputs atomically (temp file, then rename)."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import stat
import sys
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from ..errors import InputError

STDIO = "-"
BOM = b"\xef\xbb\xbf"  # UTF-8 byte order mark: Windows editors put it at the start of a file
CHUNK_BYTES = 1 << 16  # small enough for the CPU caches: 8 MB blocks parsed 10% slower
# What a damaged file raises while it is read: gzip's EOFError (truncated), zlib.error (corrupt
# deflate data), BadGzipFile (bad header or checksum), OSError (the disk).
READ_ERRORS = (OSError, EOFError, zlib.error, gzip.BadGzipFile)


def display_name(path: str | os.PathLike) -> str:
    return "<stdin>" if str(path) == STDIO else str(path)


def _open_binary(path: str | os.PathLike) -> IO[bytes]:
    if str(path) == STDIO:
        return sys.stdin.buffer
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected a file")
    try:
        raw = open(p, "rb")
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except PermissionError:
        raise InputError(f"{p}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read ({exc.strerror})") from None
    magic = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    if p.suffix == ".gz" or magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    return raw


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield (line number, line without its newline), decoding UTF-8 strictly.

    A UTF-8 BOM at the start of the file is dropped. Lines end at \\n; a \\r before it goes too.
    Bad bytes and broken gzip streams become InputError naming the file and line.
    """
    name = display_name(path)
    stream = _open_binary(path)
    lineno = 0
    try:
        for lineno, raw_line in enumerate(stream, start=1):
            if lineno == 1 and raw_line.startswith(BOM):
                raw_line = raw_line[len(BOM):]
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(utf8_error(name, lineno, raw_line, exc)) from None
            yield lineno, line.rstrip("\r\n")
    except READ_ERRORS as exc:
        raise InputError(f"{name}:{lineno + 1}: cannot read ({exc})") from None
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def utf8_error(name: str, lineno: int, raw_line: bytes, exc: UnicodeDecodeError) -> str:
    return (f"{name}:{lineno}: not valid UTF-8 (byte {raw_line[exc.start]:#04x} at column "
            f"{exc.start + 1}); convert the file to UTF-8, e.g. with iconv")


def iter_chunks(path: str | os.PathLike, size: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    """Yield (number of its first line, bytes) for blocks of whole lines, each ending with \\n.

    For readers that parse many lines at once. A UTF-8 BOM at the start is dropped, and the last
    line gets a \\n if it lacks one; the bytes are not decoded. Broken gzip streams and read
    errors become InputError naming the file and the line reached.
    """
    name = display_name(path)
    stream = _open_binary(path)
    lineno = 1
    rest: list[bytes] = []  # the start of a line that continues in the next block(s)
    try:
        first = True
        while True:
            block = stream.read(size)
            if first:
                block = block[len(BOM):] if block.startswith(BOM) else block
                first = False
            if not block:
                break
            end = block.rfind(b"\n")
            if end < 0:  # a line longer than a block
                rest.append(block)
                continue
            chunk = b"".join(rest) + block[:end + 1] if rest else block[:end + 1]
            rest = [block[end + 1:]] if end + 1 < len(block) else []
            yield lineno, chunk
            lineno += chunk.count(b"\n")
        if rest:
            yield lineno, b"".join(rest) + b"\n"
    except READ_ERRORS as exc:
        raise InputError(f"{name}:{lineno}: cannot read ({exc})") from None
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def check_stdin_once(*paths: str | os.PathLike | Iterable[str | os.PathLike] | None) -> None:
    """Refuse '-' (stdin) given for more than one input: the second reader would see nothing.

    Each argument is a path, None, or a list of paths.
    """
    count = 0
    for item in paths:
        if item is None:
            continue
        group = [item] if isinstance(item, (str, os.PathLike)) else list(item)
        count += sum(1 for p in group if str(p) == STDIO)
    if count > 1:
        raise InputError(f"'-' (stdin) is given {count} times, but stdin can be read only once; "
                         "give a file for all inputs but one")


def check_writable(path: str | os.PathLike) -> None:
    """Fail early (before any expensive work) if an output path cannot be created."""
    if str(path) == STDIO:
        return
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{p}: output directory {parent} does not exist")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected a file path for the output")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{p}: output directory {parent} is not writable")


@contextlib.contextmanager
def stdout_reserved() -> Iterator[IO[str]]:
    """Keep stdout for data while noisy libraries run.

    File descriptor 1 points at stderr inside the block, so prints of heavy libraries and the
    output of the processes they spawn cannot corrupt a `-o -` pipeline; the yielded stream
    writes to the real stdout.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    real = open(saved, "w", encoding="utf-8", newline="\n", closefd=False)
    try:
        yield real
    finally:
        real.flush()
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc/self/status)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (a brief window another thread could see)
    os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    """The mode a file written at `path` gets: the one it has if it exists (replacing a file keeps
    its permissions), else 0666 less the umask, as for any new file."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, stdout: IO[str] | None = None) -> Iterator[IO[str]]:
    """Write text to `path` all or nothing: a temporary file beside it, renamed on success.

    `-` writes to `stdout` (default sys.stdout). On any exception the temporary file is
    removed and the target is left untouched.
    """
    if str(path) == STDIO:
        stream = stdout or sys.stdout
        yield stream
        stream.flush()
        return
    check_writable(path)
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent if str(p.parent) else ".")
    try:
        os.fchmod(fd, _mode_for(p))  # mkstemp makes 0600
        if p.suffix == ".gz":
            with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
                text = io.TextIOWrapper(gz, encoding="utf-8", newline="\n")
                yield text
                text.flush()
                text.detach()
        else:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
