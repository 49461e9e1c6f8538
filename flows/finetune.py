"""Fine-tune the champion on the round's dataset, evaluate the new version, promote it only if
it beats the champion by the configured margin."""
from __future__ import annotations

from prefect import flow

from medq.flows.evaluate import evaluate_flow
from medq.tasks.rounds import load_checkpoint
from medq.tasks.training import existing_evaluation, promote_if_better, train_model


@flow(name="finetune")
def finetune(workspace: str, round_id: str, model_version: str, dataset_id: str,
             seed: int = 0) -> dict:
    done = load_checkpoint(workspace, round_id, "finetune")
    if done is not None:
        return done
    trained = train_model(workspace, model_version, dataset_id, round_id, seed)
    if existing_evaluation(workspace, trained["version"]) is None:
        evaluate_flow(trained["version"], workspace=workspace, round_id=round_id)
    return {**promote_if_better(workspace, round_id, trained["version"], model_version),
            "train": trained["train"]}
