"""The closed loop: evaluate -> discover -> explore -> route -> annotate -> curate -> fine-tune
(-> promote), repeated until the round count, the budget, the target or a plateau stops it.

One round is :func:`medq.tasks.one_round.run_round`; every step in it is a sub-flow (here,
inside the flow run) that first looks for its checkpoint in the catalog, so killing the
process anywhere and running the flow again resumes the unfinished round without losing or
duplicating anything. `rounds` is the number of finished rounds the workspace should reach.
"""
from __future__ import annotations

from prefect import flow, get_run_logger

from medq.tasks.one_round import run_round
from medq.tasks.report import publish_round_artifact
from medq.tasks.rounds import (
    current_champion,
    finished_rounds,
    open_round,
    resolve_config,
    stop_reason,
)
from medq.tasks.training import bootstrap


@flow(name="engine-loop", log_prints=True)
def engine_loop(workspace: str = ".medq", rounds: int = 3, budget_per_round: float | None = None,
                total_budget: float | None = None, target_accuracy: float | None = None,
                annotator: str | None = None, candidates_per_round: int | None = None,
                plateau_rounds: int | None = None, seed: int = 0,
                more_rounds: int | None = None) -> list[dict]:
    """Run rounds until the workspace has `rounds` finished rounds (or a stop rule fires);
    with `more_rounds`, until it has that many more than now (scheduled deployments).

    Budgets are in lane cost units (see settings.lanes). Returns one summary dict per round run."""
    logger = get_run_logger()
    params = {"budget_per_round": budget_per_round, "total_budget": total_budget,
              "target_accuracy": target_accuracy, "annotator": annotator,
              "candidates_per_round": candidates_per_round, "plateau_rounds": plateau_rounds,
              "seed": seed}
    config = resolve_config(workspace, params)
    bootstrap(workspace, seed=config.seed)
    if more_rounds is not None:
        rounds = finished_rounds(workspace) + more_rounds
    summaries = []
    while finished_rounds(workspace) < rounds:
        reason = stop_reason(workspace, config.total_budget, config.target_accuracy,
                             config.plateau_rounds)
        champion = current_champion(workspace)
        opened = open_round(workspace, config, champion, stop=reason)
        if opened.stop:
            logger.info("loop stops: %s", opened.stop)
            break
        outcome = run_round(workspace, opened, config)
        if outcome.summary is None:
            logger.error("round %s stopped: curation suite failed; report stored with the round",
                         outcome.round_id)
            break
        publish_round_artifact(outcome.summary)
        summaries.append(outcome.summary)
    return summaries
