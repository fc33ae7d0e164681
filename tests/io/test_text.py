"""Opening inputs and writing outputs: BOMs, broken gzip, stdin twice, long values, file modes."""

import gzip
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

from rank1_cli.errors import InputError, quote
from rank1_cli.io import text as textio

BOM = b"\xef\xbb\xbf"


def lines(path):
    return list(textio.iter_lines(path))


def test_a_utf8_bom_at_the_start_is_not_part_of_the_first_line(tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(BOM + b"q01\tfirst\r\nq02\tsecond\n")
    assert lines(plain) == [(1, "q01\tfirst"), (2, "q02\tsecond")]
    gz = tmp_path / "x.gz"
    gz.write_bytes(gzip.compress(BOM + b"q01 0 d 1\n"))
    assert lines(gz) == [(1, "q01 0 d 1")]
    # Only the file's first three bytes: a BOM further on is data (and not stripped silently).
    later = tmp_path / "later"
    later.write_bytes(b"a\n" + BOM + b"b\n")
    assert lines(later)[1] == (2, "\ufeffb")


@pytest.mark.parametrize("damage", ["truncated", "corrupt data", "bad checksum"])
def test_a_broken_gzip_file_is_an_input_error_naming_the_file(tmp_path, damage):
    data = gzip.compress(b"".join(b"q%d Q0 d%d 1 1.0 t\n" % (i, i) for i in range(5000)))
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:  # flip bytes: at the start of the deflate stream zlib fails, further on the CRC does
        at = 12 if damage == "corrupt data" else len(data) // 2
        data = data[:at] + bytes(b ^ 0xFF for b in data[at:at + 64]) + data[at + 64:]
    path = tmp_path / "run.gz"
    path.write_bytes(data)
    with pytest.raises(InputError, match=re.escape(str(path)) + r":\d+: cannot read"):
        lines(path)
    with pytest.raises(InputError, match=re.escape(str(path)) + r":\d+: cannot read"):
        list(textio.iter_chunks(path))


def test_directories_and_unreadable_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        lines(tmp_path)
    if os.geteuid() != 0:
        secret = tmp_path / "secret"
        secret.write_text("x\n")
        secret.chmod(0)
        with pytest.raises(InputError, match="permission denied"):
            lines(secret)


def test_chunks_cover_every_line_with_the_right_numbers(tmp_path):
    path = tmp_path / "run"
    path.write_bytes(BOM + b"".join(b"line %d\n" % i for i in range(1, 1001)) + b"last without newline")
    seen = []
    for first, chunk in textio.iter_chunks(path, size=100):
        assert chunk.endswith(b"\n")
        seen += [(first + i, line) for i, line in enumerate(chunk.decode().splitlines())]
    assert seen == [(i, f"line {i}") for i in range(1, 1001)] + [(1001, "last without newline")]


def test_stdin_can_be_read_once():
    textio.check_stdin_once(["run", "-"], "qrels")
    with pytest.raises(InputError, match="'-' \\(stdin\\) is given 2 times"):
        textio.check_stdin_once(["-", "-"])
    with pytest.raises(InputError, match="stdin"):
        textio.check_stdin_once(["-"], "-")


def test_quote_cuts_long_values():
    assert quote("q01") == "'q01'"
    long = quote("x" * 1_000_000)
    assert len(long) < 150 and "1000000 characters" in long


def test_written_files_follow_the_umask(tmp_path):
    # umask is process-wide: measure it in a child process with the umask set.
    code = ("import os, sys; os.umask(int(sys.argv[1], 8)); from rank1_cli.io import text\n"
            "for name in ('a.trec', 'b.trec.gz'):\n"
            "    with text.atomic_writer(os.path.join(sys.argv[2], name)) as out: out.write('x\\n')\n"
            "    print(oct(os.stat(os.path.join(sys.argv[2], name)).st_mode & 0o777))")
    for umask, mode in (("022", "0o644"), ("077", "0o600"), ("002", "0o664")):
        folder = tmp_path / umask
        folder.mkdir()
        proc = subprocess.run([sys.executable, "-c", code, umask, str(folder)], capture_output=True, text=True,
                              cwd=REPO)
        assert proc.stdout.split() == [mode, mode], proc.stderr


def test_a_replaced_file_keeps_its_mode(tmp_path):
    out = tmp_path / "run.trec"
    out.write_text("old\n")
    out.chmod(0o640)
    with textio.atomic_writer(out) as handle:
        handle.write("new\n")
    assert out.read_text() == "new\n" and oct(out.stat().st_mode & 0o777) == "0o640"
