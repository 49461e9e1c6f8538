"""Route tasks: candidates -> lanes (expert / verify / auto) within the round budget."""
from __future__ import annotations

from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from medq.engine.route import RoutingResult, adapt_auto_threshold, route_candidates
from medq.storage.catalog import loads
from medq.tasks._runtime import open_workspace
from medq.tasks.embed import pool_store
from medq.tasks.explore import load_prototypes
from medq.tasks.rounds import checkpoint_row


@task(name="auto-threshold", cache_policy=NO_CACHE)
def auto_threshold(workspace: str, round_id: str) -> dict[str, Any]:
    """The auto-lane threshold for this round: the previous round's, tightened when its spot
    checks disagreed with the model's pseudo-labels too often."""
    ws = open_workspace(workspace)
    prev = ws.catalog.query("SELECT round_id, report FROM rounds WHERE status = 'done' AND "
                            "round_id < ? ORDER BY round_index DESC LIMIT 1", [round_id])
    if not prev:
        t = ws.settings.lanes.auto_entropy
        return {"threshold": t, "previous": t, "reason": "first round: settings value"}
    current = loads(prev[0]["report"], {}).get("auto_threshold")
    checks = ws.catalog.query(
        "SELECT c.predicted, a.verdict FROM routes r JOIN candidates c USING (round_id, image_id) "
        "JOIN annotations a ON a.round_id = r.round_id AND a.image_id = r.image_id "
        "WHERE r.round_id = ? AND r.spot_check AND a.lane IS DISTINCT FROM 'paired' "
        "AND a.verdict IS NOT NULL", [prev[0]["round_id"]])
    update = adapt_auto_threshold([c["predicted"] == c["verdict"] for c in checks], ws.settings,
                                  current=current)
    return {"threshold": update.threshold, "previous": update.previous,
            "disagreement": update.disagreement, "n_checks": update.n_checks,
            "reason": update.reason}


@task(name="route-candidates", cache_policy=NO_CACHE)
def route(workspace: str, round_id: str, budget: float, threshold: float,
          seed: int = 0) -> RoutingResult:
    """Engine call on the round's scored candidates (with their embeddings for the
    confidently-wrong rule)."""
    ws = open_workspace(workspace)
    rows = ws.catalog.query("SELECT image_id, entropy, prototype_id, rank FROM candidates WHERE round_id = ? "
                            "ORDER BY image_id", [round_id])
    ids = [r["image_id"] for r in rows]
    vectors = pool_store(ws).get(ids) if ids else None
    prototypes = load_prototypes.fn(workspace, round_id)
    return route_candidates(ids, np.array([r["entropy"] for r in rows], np.float64), ws.settings,
                            budget=budget, vectors=vectors, prototypes=prototypes,
                            auto_threshold=threshold,
                            prototype_of=[r["prototype_id"] for r in rows],
                            retrieval_rank=[r["rank"] for r in rows], seed=seed)


@task(name="save-routes", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def save_routes(workspace: str, round_id: str, result: RoutingResult) -> dict[str, Any]:
    """Routes and the route checkpoint in one transaction."""
    info = {"spend": float(result.spend), "budget": result.budget,
            "auto_threshold": float(result.auto_threshold), "by_lane": result.by_lane,
            "deferred": len(result.deferred),
            "spot_checks": sum(r.spot_check for r in result.routes)}
    with open_workspace(workspace).catalog.transaction() as tx:
        tx.execute("DELETE FROM routes WHERE round_id = ?", [round_id])
        tx.upsert("routes", result.rows(round_id))
        tx.upsert("round_steps", [checkpoint_row(round_id, "route", info)])
    return info
