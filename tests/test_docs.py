"""The documentation site builds in strict mode, and its CLI reference covers the whole command line."""

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import typer

from rank1_cli.cli import app

REPO = Path(__file__).resolve().parents[1]


def _commands(command, ctx, path):
    """(path, command, context) for the command and every subcommand below it."""
    yield path, command, ctx
    if hasattr(command, "list_commands"):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not getattr(sub, "hidden", False):
                yield from _commands(sub, sub.context_class(sub, info_name=name, parent=ctx), path + [name])


def test_docs_build_strict_and_the_cli_reference_names_every_command_and_option(tmp_path):
    site = tmp_path / "site"
    source = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    assert "WARNING" not in built.stderr, built.stderr
    assert (REPO / "docs" / "cli.md").read_text(encoding="utf-8") == source    # generated in memory only

    page = (site / "cli" / "index.html").read_text(encoding="utf-8")
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", page)).split())
    root = typer.main.get_command(app)
    seen = 0
    for path, command, ctx in _commands(root, root.context_class(root, info_name="rank1"), ["rank1"]):
        name = " ".join(path)
        assert f'id="{"-".join(path).lower()}"' in page, f"no section for {name}"
        assert command.get_usage(ctx) in text, f"{name}: usage missing"
        for param in command.get_params(ctx):
            if getattr(param, "hidden", False):
                continue
            for opt in [*param.opts, *param.secondary_opts]:
                assert opt in text, f"{name}: {opt} missing"
            if param.help:
                # as written, less the backticks that became code spans
                assert " ".join(param.help.replace("`", "").split()) in text, f"{name}: help of {param.name} missing"
            seen += 1
    assert seen > 100      # the walk found the command line, not an empty app
