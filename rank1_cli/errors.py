"""The one exception type that means "the user's input is wrong" (exit code 2, no traceback)."""


class InputError(Exception):
    """Bad input: a message that says what is wrong, where, and what to do."""


class EngineFailure(Exception):
    """The inference engine failed after some work was saved; the message says how to resume."""


QUOTE_LIMIT = 100


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """repr() of a value for a message, cut to `limit` characters: a 1 MB docid gives a short line."""
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
