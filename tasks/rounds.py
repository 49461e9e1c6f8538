"""Round bookkeeping: open or resume a round, checkpoints, the champion model, stop rules.

A round id is ``r001``, ``r002``, ... per workspace. A round whose status is still ``running``
(the process died) is resumed instead of starting a new one; its finished steps are skipped
through the ``round_steps`` checkpoints.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from medq.storage import loop_records
from medq.storage.catalog import loads
from medq.tasks._runtime import loop_task, open_workspace


def round_id_for(index: int) -> str:
    return f"r{index:03d}"


@dataclass(frozen=True)
class RoundConfig:
    """The effective knobs of a run (flow parameters over workspace settings), fixed for every
    round of it and stored with each round (``rounds.config``).

    Budgets are lane cost units (settings.lanes): `budget_per_round` is what routing may spend
    in one round, `total_budget` (None = no limit) stops the loop once spent;
    `target_accuracy` (eval MCQ accuracy in [0, 1], None = none) stops it once reached;
    `plateau_rounds` rounds without a promotion stop it; `candidates_per_round` retrieved pool
    images are scored per round; `annotator` names the annotation backend; the annotate step
    waits up to `wait_timeout_s` seconds for a batch, polling every `poll_interval_s`."""
    budget_per_round: float
    total_budget: float | None
    target_accuracy: float | None
    annotator: str
    candidates_per_round: int
    plateau_rounds: int
    seed: int
    wait_timeout_s: float
    poll_interval_s: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# RoundConfig fields a flow parameter may set (None = the workspace setting); the annotation
# wait and poll times come from settings only
RUN_PARAMETERS = tuple(f.name for f in dataclasses.fields(RoundConfig)
                       if f.name not in ("wait_timeout_s", "poll_interval_s"))


@loop_task(name="resolve-config")
def resolve_config(workspace: str, params: dict[str, Any]) -> RoundConfig:
    """Flow parameters (`params`, keys of :data:`RUN_PARAMETERS`; None = not set) over workspace
    settings: the effective knobs of this run."""
    unknown = sorted(set(params) - set(RUN_PARAMETERS))
    if unknown:
        raise ValueError(f"unknown run parameter(s) {unknown}; known: {list(RUN_PARAMETERS)}")
    s = open_workspace(workspace).settings
    defaults = {"budget_per_round": s.loop.budget_per_round, "total_budget": s.loop.total_budget,
                "target_accuracy": s.loop.target_accuracy, "annotator": s.annotation.backend,
                "candidates_per_round": s.loop.candidates_per_round,
                "plateau_rounds": s.loop.plateau_rounds, "seed": s.model.seed}
    chosen = {k: (params.get(k) if params.get(k) is not None else v) for k, v in defaults.items()}
    return RoundConfig(budget_per_round=float(chosen["budget_per_round"]),
                       total_budget=None if chosen["total_budget"] is None
                       else float(chosen["total_budget"]),
                       target_accuracy=None if chosen["target_accuracy"] is None
                       else float(chosen["target_accuracy"]),
                       annotator=str(chosen["annotator"]),
                       candidates_per_round=int(chosen["candidates_per_round"]),
                       plateau_rounds=int(chosen["plateau_rounds"]), seed=int(chosen["seed"]),
                       wait_timeout_s=float(s.annotation.wait_timeout_s),
                       poll_interval_s=float(s.annotation.poll_interval_s))


@loop_task(name="finished-rounds")
def finished_rounds(workspace: str) -> int:
    return loop_records.finished_round_count(open_workspace(workspace).catalog)


@dataclass(frozen=True)
class OpenedRound:
    """The round a run works on: `round_id` (``r001`` ...), its 1-based `round_index`, the
    champion it starts from (`model_in`), whether it is a crashed round `resumed`; or, when a
    stop rule fired before a new round was created, only `stop` (the reason; ids are None)."""
    round_id: str | None
    round_index: int | None
    model_in: str | None
    resumed: bool = False
    stop: str | None = None


@loop_task(name="open-round", retries=2, retry_delay_seconds=1)
def open_round(workspace: str, config: RoundConfig, champion: str,
               stop: str | None = None) -> OpenedRound:
    """Resume the running round, or (unless `stop` says why not) create the next one that
    starts from `champion`."""
    catalog = open_workspace(workspace).catalog
    r = loop_records.running_round(catalog)
    if r is not None:  # a crashed round is always finished first, whatever the stop rules say
        return OpenedRound(r["round_id"], int(r["round_index"]), r["model_in"], resumed=True)
    if stop:
        return OpenedRound(None, None, champion, stop=stop)
    index = loop_records.last_round_index(catalog) + 1
    round_id = round_id_for(index)
    catalog.upsert("rounds", [{"round_id": round_id, "round_index": index, "status": "running",
                               "config": config.to_dict(), "model_in": champion}])
    return OpenedRound(round_id, index, champion)


@loop_task(name="load-checkpoint")
def load_checkpoint(workspace: str, round_id: str, step: str) -> dict[str, Any] | None:
    """The recorded outcome of `step` in `round_id`, or None if it has not finished."""
    done = open_workspace(workspace).catalog.step_done(round_id, step)
    return None if done is None else done["info"]


def checkpoint_row(round_id: str, step: str, info: dict[str, Any]) -> dict[str, Any]:
    """The `round_steps` row a step writes in the same transaction as its records."""
    return {"round_id": round_id, "step": step, "status": "done", "info": info,
            "finished_at": datetime.now(timezone.utc).replace(tzinfo=None)}


@loop_task(name="champion")
def current_champion(workspace: str) -> str | None:
    """The promoted model version the next round starts from (None before round 0)."""
    catalog = open_workspace(workspace).catalog
    r = loop_records.last_done_round(catalog)
    if r is not None:
        return r["model_out"] if r["promoted"] else r["model_in"]
    return loop_records.seed_champion(catalog)


@loop_task(name="close-round", retries=2, retry_delay_seconds=1)
def close_round(workspace: str, round_id: str, summary: dict[str, Any]) -> dict[str, Any]:
    """Mark the round done with its summary (idempotent)."""
    catalog = open_workspace(workspace).catalog
    catalog.upsert("rounds", [{
        "round_id": round_id, "status": "done", "model_out": summary.get("model_out"),
        "promoted": summary.get("promoted"), "spend": summary.get("spend"),
        "report": summary, "finished_at": datetime.now(timezone.utc).replace(tzinfo=None)}])
    return summary


@loop_task(name="stop-rule")
def stop_reason(workspace: str, total_budget: float | None, target_accuracy: float | None,
                plateau_rounds: int) -> str | None:
    """Why the loop should stop now (None = go on): budget spent, target reached, plateau."""
    catalog = open_workspace(workspace).catalog
    done = loop_records.done_rounds(catalog)
    if not done:
        return None
    spent = sum(r["spend"] or 0.0 for r in done)
    if total_budget is not None and spent >= total_budget:
        return f"budget spent ({spent:.1f} of {total_budget:.1f} cost units)"
    last = loads(done[-1]["report"], {})
    accuracy = last.get("accuracy_out") if last.get("promoted") else last.get("accuracy_in")
    if target_accuracy is not None and accuracy is not None and accuracy >= target_accuracy:
        return f"target reached (accuracy {accuracy:.3f} >= {target_accuracy:.3f})"
    if len(done) >= plateau_rounds and not any(r["promoted"] for r in done[-plateau_rounds:]):
        return f"plateau (no promotion in the last {plateau_rounds} rounds)"
    return None


@loop_task(name="mark-round-stopped")
def mark_stopped(workspace: str, round_id: str, reason: str) -> None:
    open_workspace(workspace).catalog.upsert("rounds", [{"round_id": round_id, "status": "stopped",
                                                        "stop_reason": reason}])


@loop_task(name="save-checkpoint", retries=2, retry_delay_seconds=1)
def save_checkpoint(workspace: str, round_id: str, step: str, info: dict[str, Any]) -> dict[str, Any]:
    """Record that `step` finished (for steps whose records were already written idempotently)."""
    open_workspace(workspace).catalog.upsert("round_steps", [checkpoint_row(round_id, step, info)])
    return info
