"""Base error: every MedQ error says what went wrong and where; the CLI prints it in one line."""


class MedQError(RuntimeError):
    """Base class of errors that carry a user-facing message."""
