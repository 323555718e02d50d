"""User-facing errors.

A `TinyLMError` is a mistake in the user's input (a missing file, a bad JSONL line, a config that cannot
work). The CLI prints its message on one line and exits non-zero without a traceback; anything else is a
bug and keeps its traceback.
"""


class TinyLMError(Exception):
    """Bad input from the user, reported as one readable message."""
