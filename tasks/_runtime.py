"""What every step shares: the step decorators, opening the workspace, cache keys.

**Steps.** Every operation of the loop is a plain function decorated with :func:`loop_task` (one
I/O step or one engine call) or :func:`loop_flow` (a loop step that wires operations: discover,
explore, route, ...). Calling it *inside a flow run* runs it as a Prefect task or sub-flow
(retries, caching, logging, the UI); calling it anywhere else (the benchmark driver, the CLI, a
notebook, a test) is a plain call with no Prefect engine. So the flow, the benchmarks and the
CLI run the same function, and nothing calls ``.fn`` to get at it.

Tasks receive the workspace as a path string (plus optional settings overrides) so that flow
parameters stay JSON-serializable and a deployment can run them on another worker. The opened
:class:`~medq.storage.workspace.Workspace` is cached per process.
"""
from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar

from medq.settings import load_settings
from medq.storage.workspace import Workspace

P = ParamSpec("P")
R = TypeVar("R")


def in_flow_run() -> bool:
    """True inside a flow run and outside any task run: where a step call becomes a Prefect
    task or sub-flow. (Inside a task, the steps it calls stay plain calls, as they were before
    the step layer: one Prefect task per operation, whose retry policy covers what it calls.)"""
    from prefect.context import FlowRunContext, TaskRunContext
    return FlowRunContext.get() is not None and TaskRunContext.get() is None


class Step(Generic[P, R]):
    """A loop operation: `fn` as a plain call, `prefect` (a Task or Flow) inside a flow run.

    ``step(...)`` dispatches (see :func:`in_flow_run`); ``step.fn`` is the plain function and
    ``step.prefect`` the Prefect object (its options: retries, cache policy, name)."""

    def __init__(self, fn: Callable[P, R], prefect_obj: Any):
        self.fn = fn
        self.prefect = prefect_obj
        functools.update_wrapper(self, fn)

    @property
    def name(self) -> str:
        return str(self.prefect.name)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if in_flow_run():
            return self.prefect(*args, **kwargs)
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<step {self.name} ({self.fn.__module__}.{self.fn.__qualname__})>"


def loop_task(**options: Any) -> Callable[[Callable[P, R]], Step[P, R]]:
    """Decorate an operation: a Prefect task with `options` (``prefect.task`` keywords: name,
    retries, retry_delay_seconds, cache_policy, ...) inside a flow run, a plain call elsewhere."""
    def wrap(fn: Callable[P, R]) -> Step[P, R]:
        from prefect import task
        return Step(fn, task(**options)(fn))
    return wrap


def loop_flow(**options: Any) -> Callable[[Callable[P, R]], Step[P, R]]:
    """Decorate a loop step that wires operations: a Prefect sub-flow with `options`
    (``prefect.flow`` keywords) inside a flow run, a plain call elsewhere."""
    def wrap(fn: Callable[P, R]) -> Step[P, R]:
        from prefect import flow
        return Step(fn, flow(**options)(fn))
    return wrap


# One retry policy per layer. Outside systems (Label Studio, S3, the LLM judge, vLLM) are retried
# by their clients in storage/, under settings that state the budget of each call (timeout per
# request, retries, backoff: settings.labelstudio, settings.objects, settings.judge). A task
# that calls such a client declares CLIENT_RETRIES: Prefect does not retry it again, which would
# multiply the attempts and the waits (3 task retries x 5 client attempts before).
CLIENT_RETRIES: dict[str, Any] = {"retries": 0}


def step_logger() -> Any:
    """The run logger inside a flow or task run; the ``medq.steps`` logger on plain calls
    (``prefect.get_run_logger`` raises outside a run)."""
    from prefect.context import FlowRunContext, TaskRunContext
    if FlowRunContext.get() is not None or TaskRunContext.get() is not None:
        from prefect import get_run_logger
        return get_run_logger()
    import logging
    return logging.getLogger("medq.steps")


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
