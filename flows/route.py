"""Route: each scored candidate into the expert / verify / auto lane within the round budget."""
from __future__ import annotations

from prefect import flow

from medq.tasks.rounds import load_checkpoint
from medq.tasks.route import auto_threshold, save_routes
from medq.tasks.route import route as route_task


@flow(name="route")
def route(workspace: str, round_id: str, budget: float, seed: int = 0) -> dict:
    done = load_checkpoint(workspace, round_id, "route")
    if done is not None:
        return done
    threshold = auto_threshold(workspace, round_id)
    result = route_task(workspace, round_id, budget, threshold["threshold"], seed)
    return {**save_routes(workspace, round_id, result), "threshold": threshold}
