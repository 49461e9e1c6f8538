"""Curate: human labels (with consensus) and pseudo-labels -> Great Expectations suite ->
training items and the round's dataset, or a stopped round with a readable report."""
from __future__ import annotations

from prefect import flow

from medq.tasks.curate import (
    auto_labels,
    human_labels,
    parent_dataset,
    register_dataset,
    validate_batch,
)
from medq.tasks.rounds import load_checkpoint


@flow(name="curate")
def curate(workspace: str, round_id: str, model_version: str) -> dict:
    done = load_checkpoint(workspace, round_id, "curate")
    if done is not None:
        return done
    labels = human_labels(workspace, round_id) + auto_labels(workspace, round_id, model_version)
    frame, report = validate_batch(workspace, round_id, labels)
    parent = parent_dataset(workspace, round_id)
    return register_dataset(workspace, round_id, frame, report, labels, parent)
