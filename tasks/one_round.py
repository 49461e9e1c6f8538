"""One round of the loop, in order: discover -> explore -> route -> annotate -> curate ->
fine-tune (-> promote) -> close.

:func:`run_round` is the only place that wires the steps of a round. ``flows/engine_loop.py``
calls it inside its flow run (each step then runs as a Prefect sub-flow and resumes from its
checkpoint), the benchmark driver calls it as a plain function, with a swapped *selection*
(which pool images go to which lane) for the baselines: annotate, curate, fine-tune, evaluate
and promote are the same code for every caller.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medq.tasks.annotate import annotate
from medq.tasks.curate import curate
from medq.tasks.discover import discover
from medq.tasks.explore import explore
from medq.tasks.report import round_summary
from medq.tasks.rounds import OpenedRound, RoundConfig, close_round, mark_stopped
from medq.tasks.route import route
from medq.tasks.training import finetune

Record = dict[str, Any]
# (workspace, opened round, run config) -> (discovered, explored, routed) checkpoint records
Selection = Callable[[str, OpenedRound, RoundConfig], tuple[Record, Record, Record]]
# called with a step's name right after it finished (timings, progress)
StepHook = Callable[[str], None]

# one INFO line per finished step ("r002 discover: 41 failures, 5 prototypes (3.1 s)"); `medq run`
# and `medq demo` show this logger on the console (medq/cli/run_logs.py), nothing else does
PROGRESS_LOGGER = "medq.steps.progress"


def _facts(step: str, record: Record) -> str:
    """The few numbers of a step's checkpoint record a person watches."""
    def n(key: str) -> Any:
        return record.get(key, "?")
    if step == "discover":
        return f"{n('n_failures')} failures, {n('n_prototypes')} prototypes"
    if step == "explore":
        return f"{n('n_candidates')} candidates scored"
    if step in ("route", "select"):
        lanes = record.get("by_lane") or {}
        split = "/".join(str((lanes.get(k) or {}).get("n", 0)) for k in ("expert", "verify", "auto"))
        return f"spend {float(record.get('spend') or 0):.1f}, expert/verify/auto {split}"
    if step == "annotate":
        return f"{n('queued')} tasks queued"
    if step == "curate":
        return ("passed" if record.get("passed") else "FAILED") + f", {n('n_new')} new labels"
    if step == "finetune":
        acc = record.get("accuracy_out")
        return (("promoted" if record.get("promoted") else "not promoted")
                + ("" if acc is None else f", accuracy {100 * acc:.1f}%"))
    return "done"


class _StepReporter:
    """Calls the caller's hook and logs one line per finished step."""

    def __init__(self, round_id: str, hook: StepHook | None):
        self.round_id, self.hook = round_id, hook
        self.log = logging.getLogger(PROGRESS_LOGGER)
        self.t = time.perf_counter()

    def __call__(self, step: str, record: Record | None = None) -> None:
        if self.hook:
            self.hook(step)
        now = time.perf_counter()
        self.log.info("%s %s: %s (%.1f s)", self.round_id, step,
                      _facts(step, record or {}), now - self.t)
        self.t = now


@dataclass(frozen=True)
class RoundOutcome:
    """What one round did: each step's checkpoint record, and the round summary as stored with
    the round (None when curation failed and the round was stopped)."""
    round_id: str
    round_index: int
    model_in: str
    discovered: Record = field(default_factory=dict)
    explored: Record = field(default_factory=dict)
    routed: Record = field(default_factory=dict)
    annotated: Record = field(default_factory=dict)
    curated: Record = field(default_factory=dict)
    tuned: Record | None = None
    summary: Record | None = None

    @property
    def curation_failed(self) -> str | None:
        """The curation suite's summary when the round stopped on it, else None."""
        return None if self.curated.get("passed") else str(self.curated.get("summary"))


def engine_selection(workspace: str, opened: OpenedRound, config: RoundConfig,
                     done: Callable[[str, Record], None] | None = None
                     ) -> tuple[Record, Record, Record]:
    """The engine's own selection: discover prototypes of the model's failures, retrieve and
    score their look-alikes, route them into lanes within the round budget. `done(step,
    record)` is called after each step."""
    round_id, model_in, seed = opened.round_id, opened.model_in, config.seed
    discovered = discover(workspace, round_id, model_in, seed)
    if done:
        done("discover", discovered)
    explored = explore(workspace, round_id, model_in, config.candidates_per_round, seed)
    if done:
        done("explore", explored)
    routed = route(workspace, round_id, config.budget_per_round, seed)
    if done:
        done("route", routed)
    return discovered, explored, routed


def run_round(workspace: str, opened: OpenedRound, config: RoundConfig, *,
              select: Selection | None = None, on_step: StepHook | None = None) -> RoundOutcome:
    """Run (or resume) the round `opened` (from :func:`~medq.tasks.rounds.open_round`) with the
    run's `config` (from :func:`~medq.tasks.rounds.resolve_config`).

    `select` replaces the engine's discover/explore/route (benchmark baselines); it must record
    candidates and routes the way explore and route do. When curation fails the round is marked
    stopped with the suite's summary and the outcome has no summary."""
    round_id, model_in = opened.round_id, opened.model_in
    if round_id is None or model_in is None or opened.round_index is None:
        raise ValueError(f"run_round: no round to run ({opened.stop or 'not opened'})")
    seed = config.seed
    done = _StepReporter(round_id, on_step)
    if select is None:
        discovered, explored, routed = engine_selection(workspace, opened, config, done)
    else:
        discovered, explored, routed = select(workspace, opened, config)
        done("select", routed)
    annotated = annotate(workspace, round_id, config.annotator, model_in,
                         config.wait_timeout_s, config.poll_interval_s)
    done("annotate", annotated)
    curated = curate(workspace, round_id, model_in)
    done("curate", curated)
    base = {"round_id": round_id, "round_index": opened.round_index, "model_in": model_in,
            "discovered": discovered, "explored": explored, "routed": routed,
            "annotated": annotated, "curated": curated}
    if not curated["passed"]:
        mark_stopped(workspace, round_id, f"curation failed: {curated['summary']}")
        return RoundOutcome(**base)
    tuned = finetune(workspace, round_id, model_in, curated["dataset_id"], seed)
    done("finetune", tuned)
    summary = round_summary(workspace, round_id, discovered, explored, routed, annotated, curated,
                            tuned)
    close_round(workspace, round_id, summary)
    done("close")
    return RoundOutcome(**base, tuned=tuned, summary=summary)
