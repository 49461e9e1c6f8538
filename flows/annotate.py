"""Annotate: queue the round's human-lane items, send them to the annotation backend, wait for
the batch (with a timeout), pull the annotations back into the catalog."""
from __future__ import annotations

from prefect import flow

from medq.tasks.annotate import collect_annotations, queue_tasks, submit_tasks
from medq.tasks.rounds import load_checkpoint, save_checkpoint


@flow(name="annotate")
def annotate(workspace: str, round_id: str, annotator: str, model_version: str,
             timeout_s: float = 600.0, poll_s: float = 2.0) -> dict:
    done = load_checkpoint(workspace, round_id, "annotate")
    if done is not None:
        return done
    queued = queue_tasks(workspace, round_id, annotator, model_version)
    submit_tasks(workspace, round_id, annotator)
    pulled = collect_annotations(workspace, round_id, annotator, timeout_s, poll_s)
    return save_checkpoint(workspace, round_id, "annotate", {"queued": queued, **pulled})
