"""Base error: every MedQ error says what went wrong and where; the CLI prints it in one line."""
from __future__ import annotations

import importlib
from types import ModuleType


class MedQError(RuntimeError):
    """Base class of errors that carry a user-facing message."""


class MissingExtraError(MedQError):
    """An optional part of MedQ is used without the extra that installs it."""


def require_extra(module: str, extra: str, what: str) -> ModuleType:
    """Import `module`, or raise :class:`MissingExtraError` naming the extra that installs it
    (``what`` is the feature that needs it, for the message)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(f"{what} needs the optional package {module.split('.')[0]!r}, "
                                f"which is not installed: pip install 'medq[{extra}]' (the "
                                "`make` targets install every extra)") from exc
