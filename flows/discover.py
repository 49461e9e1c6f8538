"""Discover: the round's failures on the eval set -> embeddings -> HDBSCAN prototypes."""
from __future__ import annotations

from prefect import flow

from medq.flows.evaluate import evaluate_flow
from medq.tasks.discover import collect_failures, find_prototypes, save_discovery
from medq.tasks.embed import embed_images, ensure_embedder
from medq.tasks.rounds import load_checkpoint
from medq.tasks.training import existing_evaluation


@flow(name="discover")
def discover(workspace: str, round_id: str, model_version: str, seed: int = 0) -> dict:
    done = load_checkpoint(workspace, round_id, "discover")
    if done is not None:
        return done
    evaluation = existing_evaluation(workspace, model_version)
    if evaluation is None:
        evaluation = evaluate_flow(model_version, workspace=workspace, round_id=round_id)
    ensure_embedder(workspace, seed)
    failures = collect_failures(workspace, evaluation["eval_id"])
    embeddings = embed_images(workspace, [f.image_id for f in failures])
    result = find_prototypes(workspace, round_id, failures, embeddings, seed)
    return save_discovery(workspace, round_id, evaluation["eval_id"], failures, result)
