"""What a person sees on stderr: the engines' own output goes to a log unless -v."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO

SCRIPT = textwrap.dedent("""
    import os, subprocess, sys
    from rank1_cli.console import engine_output_captured, stderr_console
    console = stderr_console()
    keep = sys.argv[1] == "keep"
    with engine_output_captured(console) as log:
        os.write(1, b"vllm says hello on stdout\\n")
        os.write(2, b"torch warns on stderr\\n")
        subprocess.run([sys.executable, "-c", "import sys; print('a worker process talks', file=sys.stderr)"])
        console.print("rank1's own progress", markup=False)
        log.keep = keep
    print(log.path, file=sys.stderr)
""")


@pytest.mark.parametrize("keep", ["keep", "drop"])
def test_engine_output_goes_to_a_log_and_rank1s_own_lines_to_stderr(keep):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, keep], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    own, path = proc.stderr.splitlines()
    assert own == "rank1's own progress"
    log = Path(path)
    if keep == "keep":
        text = log.read_text()
        assert "vllm says hello" in text and "torch warns" in text and "a worker process talks" in text
        log.unlink()
    else:
        assert not log.exists()
