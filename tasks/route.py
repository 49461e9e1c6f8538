"""The route step (:func:`route`): scored candidates -> lanes (expert / verify / auto) within
the round budget, and its operations."""
from __future__ import annotations

from typing import Any

import numpy as np
from prefect.cache_policies import NO_CACHE

from medq.engine.route import RoutingResult, adapt_auto_threshold, route_candidates
from medq.storage import loop_records
from medq.storage.catalog import loads
from medq.tasks._runtime import loop_flow, loop_task, open_workspace
from medq.tasks.embed import pool_store
from medq.tasks.explore import load_prototypes
from medq.tasks.rounds import checkpoint_row, load_checkpoint


@loop_task(name="auto-threshold", cache_policy=NO_CACHE)
def auto_threshold(workspace: str, round_id: str) -> dict[str, Any]:
    """The auto-lane threshold for this round: the previous round's, tightened when its spot
    checks disagreed with the model's pseudo-labels too often."""
    ws = open_workspace(workspace)
    prev = loop_records.previous_done_round(ws.catalog, round_id)
    if prev is None:
        t = ws.settings.lanes.auto_entropy
        return {"threshold": t, "previous": t, "reason": "first round: settings value"}
    current = loads(prev["report"], {}).get("auto_threshold")
    checks = loop_records.spot_check_outcomes(ws.catalog, prev["round_id"])
    update = adapt_auto_threshold([c["predicted"] == c["verdict"] for c in checks], ws.settings,
                                  current=current)
    return {"threshold": update.threshold, "previous": update.previous,
            "disagreement": update.disagreement, "n_checks": update.n_checks,
            "reason": update.reason}


@loop_task(name="route-candidates", cache_policy=NO_CACHE)
def route_round_candidates(workspace: str, round_id: str, budget: float, threshold: float,
                           seed: int = 0) -> RoutingResult:
    """Engine call on the round's scored candidates (with their embeddings for the
    confidently-wrong rule)."""
    ws = open_workspace(workspace)
    rows = loop_records.scored_candidates(ws.catalog, round_id)
    ids = [r["image_id"] for r in rows]
    vectors = pool_store(ws).get(ids) if ids else None
    prototypes = load_prototypes(workspace, round_id)
    return route_candidates(ids, np.array([r["entropy"] for r in rows], np.float64), ws.settings,
                            budget=budget, vectors=vectors, prototypes=prototypes,
                            auto_threshold=threshold,
                            prototype_of=[r["prototype_id"] for r in rows],
                            retrieval_rank=[r["rank"] for r in rows], seed=seed)


@loop_task(name="save-routes", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def save_routes(workspace: str, round_id: str, result: RoutingResult) -> dict[str, Any]:
    """Routes and the route checkpoint in one transaction."""
    info = {"spend": float(result.spend), "budget": result.budget,
            "auto_threshold": float(result.auto_threshold), "by_lane": result.by_lane,
            "deferred": len(result.deferred),
            "spot_checks": sum(r.spot_check for r in result.routes)}
    with open_workspace(workspace).catalog.transaction() as tx:
        loop_records.clear_routes(tx, round_id)
        tx.upsert("routes", result.rows(round_id))
        tx.upsert("round_steps", [checkpoint_row(round_id, "route", info)])
    return info


@loop_flow(name="route")
def route(workspace: str, round_id: str, budget: float, seed: int = 0) -> dict[str, Any]:
    """Route the round's scored candidates within `budget` (lane cost units) using this round's
    auto threshold; stores routes and the checkpoint. Returns the checkpoint record plus
    "threshold" (the threshold decision)."""
    done = load_checkpoint(workspace, round_id, "route")
    if done is not None:
        return done
    threshold = auto_threshold(workspace, round_id)
    result = route_round_candidates(workspace, round_id, budget, threshold["threshold"], seed)
    return {**save_routes(workspace, round_id, result), "threshold": threshold}
