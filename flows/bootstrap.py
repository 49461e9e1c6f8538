"""Round 0: when the workspace has no model yet, train the seed model on the labelled train
split, evaluate it and register it as the first champion."""
from __future__ import annotations

from prefect import flow

from medq.flows.evaluate import evaluate_flow
from medq.tasks.rounds import current_champion
from medq.tasks.training import existing_evaluation, promote_if_better, seed_dataset, train_model


@flow(name="bootstrap")
def bootstrap(workspace: str, seed: int = 0) -> str:
    """Returns the champion model version (existing or newly trained)."""
    champion = current_champion(workspace)
    if champion is not None:
        return champion
    dataset_id = seed_dataset(workspace)
    trained = train_model(workspace, None, dataset_id, None, seed)
    if existing_evaluation(workspace, trained["version"]) is None:
        evaluate_flow(trained["version"], workspace=workspace)
    promote_if_better(workspace, None, trained["version"], None)
    return trained["version"]
