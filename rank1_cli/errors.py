"""The one exception type that means "the user's input is wrong" (exit code 2, no traceback)."""


class InputError(Exception):
    """Bad input: a message that says what is wrong, where, and what to do."""


class EngineFailure(Exception):
    """The inference engine failed after some work was saved; the message says how to resume."""
