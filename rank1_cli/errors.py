"""The exception types that mean "the user's input is wrong" (exit code 2, no traceback) and
"the engine failed" (exit code 1)."""

from __future__ import annotations

import re

_OPTION = re.compile(r"\{(\w+)(?::([^}]*))?\}")
_FLAGS = {"base_urls": "base-url", "output_format": "format"}          # Python names whose command-line flag differs


class InputError(Exception):
    """Bad input: a message that says what is wrong, where, and what to do."""


class OptionError(InputError):
    """A bad option value. The message names options as `{name}` or `{name:value}`: a Python caller
    reads `name` / `name='value'`, the command line `--name` / `--name value`."""

    def __init__(self, template: str) -> None:
        self.template = template
        super().__init__(_OPTION.sub(lambda m: m.group(1) + (f"={m.group(2)!r}" if m.group(2) is not None else ""),
                                     template))

    def for_command_line(self) -> str:
        def flag(match: re.Match) -> str:
            name = "--" + _FLAGS.get(match.group(1), match.group(1).replace("_", "-"))
            return name + (f" {match.group(2)}" if match.group(2) is not None else "")

        return _OPTION.sub(flag, self.template)


class EngineFailure(Exception):
    """The inference engine failed after some work was saved; the message says how to resume."""


QUOTE_LIMIT = 100


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """repr() of a value for a message, cut to `limit` characters: a 1 MB docid gives a short line."""
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def quote_some(ids, n: int = 3) -> str:
    """The first `n` ids, quoted, and ", ..." when there are more: for a message."""
    return ", ".join(quote(i) for i in ids[:n]) + (", ..." if len(ids) > n else "")
