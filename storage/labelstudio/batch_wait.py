"""Waiting for an annotation batch: bounded polling of the backend's queue status, with
progressive pulls into the catalog on every poll (Label Studio) and a stop rule."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from medq.storage.annotation.base import AnnotationBackend, QueueStatus
from medq.storage.labelstudio.backend import LabelStudioBackend
from medq.storage.labelstudio.catalog_sync import pull_into_catalog


@dataclass
class WaitResult:
    """How a wait ended. `state`: ``done`` (nothing pending), ``stopped`` (the stop rule, e.g.
    the budget, said enough) or ``timeout``. `message` is one human-readable line."""

    state: str
    status: QueueStatus
    elapsed_s: float
    polls: int
    message: str
    pulled: dict[str, Any] = field(default_factory=dict)


def wait_for_batch(backend: AnnotationBackend, task_ids: Sequence[str], *,
                   timeout_s: float | None = None, poll_interval_s: float | None = None,
                   workspace=None, stop_when: Callable[[QueueStatus], bool] | None = None,
                   on_poll: Callable[[QueueStatus], None] | None = None,
                   sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> WaitResult:
    """Poll `backend.status(task_ids)` until nothing is pending, `stop_when(status)` is true or
    `timeout_s` passed (defaults: ``annotation.wait_timeout_s`` / ``poll_interval_s``). With
    `workspace` (a Label Studio backend), every poll also pulls finished annotations into the
    catalog, so a round sees its labels progressively. Never raises on timeout: the result says."""
    settings = getattr(getattr(backend, "settings", None), "annotation", None)
    timeout_s = timeout_s if timeout_s is not None else (settings.wait_timeout_s if settings else 600.0)
    poll_interval_s = poll_interval_s if poll_interval_s is not None else (
        settings.poll_interval_s if settings else 2.0)
    ids = list(task_ids)
    start = clock()
    polls = 0
    pulled: dict[str, Any] = {}
    while True:
        status = backend.status(ids)
        polls += 1
        if workspace is not None and isinstance(backend, LabelStudioBackend):
            pulled = pull_into_catalog(workspace, backend, ids)
        if on_poll is not None:
            on_poll(status)
        elapsed = clock() - start
        summary = (f"{status.done} of {status.total} tasks done, {status.pending} pending, "
                   f"{status.deleted} deleted")
        if status.finished:
            return WaitResult("done", status, elapsed, polls, f"batch finished: {summary} "
                              f"after {elapsed:.0f} s", pulled)
        if stop_when is not None and stop_when(status):
            return WaitResult("stopped", status, elapsed, polls, f"stopped by rule: {summary} "
                              f"after {elapsed:.0f} s", pulled)
        if elapsed >= timeout_s:
            where = f" at {backend.url}" if hasattr(backend, "url") else ""
            return WaitResult("timeout", status, elapsed, polls,
                              f"timed out after {timeout_s:.0f} s waiting for annotations{where}: "
                              f"{summary}", pulled)
        sleep(min(poll_interval_s, max(0.0, timeout_s - elapsed)))
