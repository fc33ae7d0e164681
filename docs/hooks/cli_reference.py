"""MkDocs hook: the CLI reference (docs/cli.md) generated from the Typer app at build time.

docs/cli.md holds a marker; this hook replaces it, in memory, with every command and subcommand of
`rank1` walked from the Click command behind `rank1_cli.cli.app`: usage, help text, and each argument
and option with its help, default and choices, as `rank1 ... --help` prints them. Nothing is
written into docs/, and `--help` and the docs cannot disagree.
"""

from __future__ import annotations

import re
import typing
from enum import Enum

MARKER = "<!-- cli-reference -->"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
EXTRA = re.compile(r"\s{2}\[([^\[\]]*)\]\s*$")      # "  [default: x; required]" that --help appends


def _plain(text: str, markup: str | None) -> str:
    """Help text as plain text: Click's \\f cut and \\b markers applied, Rich markup rendered, no ANSI."""
    text = (text or "").split("\f")[0]
    text = "\n".join(line for line in text.splitlines() if line.strip() != "\b")
    if markup in ("rich", "markdown"):
        from rich.text import Text

        text = Text.from_markup(text).plain
    return ANSI.sub("", text).strip()


def _escape(text: str) -> str:
    """Markdown-safe text outside code spans (kept as written), one line, for a table cell."""
    parts = re.split(r"(`[^`]*`)", " ".join(text.split()))
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(part)
        else:
            part = part.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            out.append(re.sub(r"([\\*_\[\]|#])", r"\\\1", part))
    return "".join(out)


def _subcommands(command, ctx):
    if not hasattr(command, "list_commands"):
        return []
    found = [(name, command.get_command(ctx, name)) for name in command.list_commands(ctx)]
    return [(name, sub) for name, sub in found if sub is not None and not getattr(sub, "hidden", False)]


def _choices(param) -> list[str]:
    """The values a parameter accepts, where they are a fixed set (Click's Choice, or Typer's Enum)."""
    choices = getattr(getattr(param, "type", None), "choices", None)        # Click, and Typer before 0.20
    if choices:
        return [str(getattr(choice, "value", choice)) for choice in choices]
    pending = [getattr(getattr(param, "type_descriptor", None), "annotation", None)]  # Typer's own types
    while pending:
        annotation = pending.pop()
        if isinstance(annotation, type) and issubclass(annotation, Enum):
            return [str(member.value) for member in annotation]
        pending.extend(typing.get_args(annotation))
    return []


def _parameters(command, ctx, markup: str | None) -> list[str]:
    rows = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        help_text = ANSI.sub("", help_text)
        extra = EXTRA.search(help_text)             # split off before markup: "[default: x]" is no Rich tag
        help_text, extra = (help_text[:extra.start()], extra.group(1)) if extra else (help_text, "")
        help_text = _plain(help_text, markup)
        details = [part.strip() for part in extra.split(";") if part.strip()]
        choices = _choices(param)
        details = [_escape(d) for d in details] + ([
            "choices: " + ", ".join(f"`{choice}`" for choice in choices)] if choices else [])
        if param.param_type_name == "argument":
            details.insert(0, "argument")
        rows.append(f"| `{names}` | {_escape(help_text)} | {'; '.join(details)} |")
    if not rows:
        return []
    return ["| Name | Help | Argument, default, choices |", "| --- | --- | --- |", *rows, ""]


def _command(command, ctx, path: list[str], markup: str | None) -> list[str]:
    title = " ".join(path)
    lines = [f"{'#' * min(len(path) + 1, 4)} `{title}`", ""]
    help_text = _plain(command.help or "", markup)
    usage = ANSI.sub("", command.get_usage(ctx))
    lines += ["```text", usage, "```", ""]
    if help_text:
        lines += [_escape_block(help_text), ""]
    lines += _parameters(command, ctx, markup)
    subs = _subcommands(command, ctx)
    if subs:
        lines += ["| Command | Summary |", "| --- | --- |"]
        for name, sub in subs:
            summary = _plain(sub.get_short_help_str(limit=10_000), markup)
            anchor = "-".join(path + [name]).lower()
            lines.append(f"| [`{' '.join(path + [name])}`](#{anchor}) | {_escape(summary)} |")
        lines.append("")
        for name, sub in subs:
            sub_ctx = sub.context_class(sub, info_name=name, parent=ctx)
            lines += _command(sub, sub_ctx, path + [name], markup)
    return lines


def _escape_block(text: str) -> str:
    """Help paragraphs as Markdown paragraphs (Click rewraps them; so does Markdown)."""
    return "\n\n".join(_escape(paragraph) for paragraph in re.split(r"\n\s*\n", text))


def cli_reference() -> str:
    import typer

    from rank1_cli.cli import app

    command = typer.main.get_command(app)
    ctx = command.context_class(command, info_name="rank1")
    markup = getattr(command, "rich_markup_mode", None)
    return "\n".join(_command(command, ctx, ["rank1"], markup))


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "cli.md":
        return markdown
    if MARKER not in markdown:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"docs/cli.md lacks the marker {MARKER} that the CLI reference replaces")
    return markdown.replace(MARKER, cli_reference())
