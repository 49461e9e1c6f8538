"""What every task shares: opening the workspace, cache keys, checkpoints.

Tasks receive the workspace as a path string (plus optional settings overrides) so that flow
parameters stay JSON-serializable and a deployment can run them on another worker. The opened
:class:`~medq.storage.workspace.Workspace` is cached per process.
"""
from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from medq.settings import load_settings
from medq.storage.workspace import Workspace

_OPEN: dict[str, Workspace] = {}
_LOCK = threading.Lock()


def open_workspace(workspace: str, overrides: dict | None = None) -> Workspace:
    """The workspace at `workspace` (created and migrated if new), cached per process."""
    key = json.dumps([str(workspace), overrides or {}], sort_keys=True, default=str)
    with _LOCK:
        ws = _OPEN.get(key)
        if ws is None:
            settings = load_settings(workspace=workspace, **(overrides or {}))
            ws = Workspace.init(settings)
            _OPEN[key] = ws
        return ws


def forget_workspaces() -> None:
    """Drop cached workspaces (tests that delete and recreate a workspace)."""
    with _LOCK:
        _OPEN.clear()


def _digest_default(obj: Any) -> Any:
    if hasattr(obj, "tobytes"):  # numpy arrays: hash the bytes, never the truncated repr
        return hashlib.sha256(obj.tobytes()).hexdigest() + str(getattr(obj, "shape", ""))
    return str(obj)


def stable_hash(*parts: Any, length: int = 16) -> str:
    """A short, stable hex digest of JSON-able parts (arrays hashed by content)."""
    text = json.dumps(parts, sort_keys=True, default=_digest_default)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def round_cache_key(context, parameters: dict) -> str:
    """Cache key for steps whose outcome is fixed by (workspace instance, round, inputs).

    The workspace's random id is part of the key, so a workspace deleted and created again at
    the same path never reuses a stale cached result."""
    ws = parameters.get("workspace")
    ws_id = Workspace(load_settings(workspace=ws)).id if ws else "-"
    rest = {k: v for k, v in parameters.items() if k != "workspace"}
    return f"{context.task.name}-{ws_id}-{stable_hash(rest)}"


FAULT_ENV = "MEDQ_FAULT_KILL_AT"


def fault_point(name: str) -> None:
    """Crash-test hook: when ``MEDQ_FAULT_KILL_AT`` names this point, the process kills itself
    with SIGKILL right here (no cleanup, no flushing), as a machine failure would. Used by the
    end-to-end resume tests; a no-op otherwise."""
    import os
    import signal
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
