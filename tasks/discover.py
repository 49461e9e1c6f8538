"""The discover step: the round's failures on the eval set -> embeddings -> HDBSCAN
prototypes -> catalog (:func:`discover`), and its operations."""
from __future__ import annotations

from typing import Any

import numpy as np
from prefect.cache_policies import NO_CACHE

from medq.engine.discover import (
    DiscoveryResult,
    Failure,
    description_severity,
    discover_prototypes,
    mcq_severity,
)
from medq.storage import loop_records
from medq.storage.catalog import loads
from medq.tasks._runtime import loop_flow, loop_task, open_workspace
from medq.tasks.embed import embed_images, ensure_embedder
from medq.tasks.evaluate import evaluate_version
from medq.tasks.rounds import checkpoint_row, load_checkpoint


@loop_task(name="collect-failures", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def collect_failures(workspace: str, eval_id: str) -> list[Failure]:
    """Wrong MCQ answers and low-scoring descriptions of eval run `eval_id`."""
    ws = open_workspace(workspace)
    fail_below = ws.settings.loop.description_fail_below
    rows = loop_records.failed_predictions(ws.catalog, eval_id, fail_below)
    failures = []
    for r in rows:
        if r["kind"] == "mcq":
            kind, severity = "wrong_mcq", mcq_severity(loads(r["probs"], {}), r["answer"] or "")
        else:
            kind, severity = "low_description", description_severity(r["score"], fail_below)
        failures.append(Failure(item_id=r["item_id"], image_id=r["image_id"], kind=kind,
                                severity=severity, modality=r["modality"],
                                degradations=loads(r["degradations"], []) or [],
                                question_type=r["question_type"]))
    return failures


@loop_task(name="find-prototypes", cache_policy=NO_CACHE)
def find_prototypes(workspace: str, round_id: str, failures: list[Failure],
                    embeddings: np.ndarray, seed: int = 0) -> DiscoveryResult:
    """Engine call: cluster the failures into prototypes."""
    loop = open_workspace(workspace).settings.loop
    return discover_prototypes(round_id, failures, embeddings,
                               min_cluster_size=loop.min_cluster_size,
                               reduce_dims=loop.reduce_dims,
                               noise_weight=loop.noise_weight, seed=seed)


@loop_task(name="save-discovery", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def save_discovery(workspace: str, round_id: str, eval_id: str, failures: list[Failure],
                   result: DiscoveryResult) -> dict[str, Any]:
    """Failures, prototypes and the checkpoint in one transaction (re-run safe)."""
    info = {"eval_id": eval_id, "n_failures": len(failures),
            "n_prototypes": sum(not p.is_noise for p in result.prototypes),
            "n_noise": sum(p.is_noise for p in result.prototypes),
            "prototypes": [p.summary for p in result.prototypes]}
    with open_workspace(workspace).catalog.transaction() as tx:
        loop_records.clear_discovery(tx, round_id)
        tx.upsert("failures", result.failure_rows(round_id, failures))
        tx.upsert("prototypes", result.prototype_rows())
        tx.upsert("round_steps", [checkpoint_row(round_id, "discover", info)])
    return info


@loop_flow(name="discover")
def discover(workspace: str, round_id: str, model_version: str, seed: int = 0) -> dict[str, Any]:
    """Evaluate `model_version` if needed, collect its failures, embed them and cluster them
    into prototypes; stores prototypes and the checkpoint. Returns the checkpoint record."""
    done = load_checkpoint(workspace, round_id, "discover")
    if done is not None:
        return done
    evaluation = evaluate_version(workspace, model_version, round_id)
    ensure_embedder(workspace, seed)
    failures = collect_failures(workspace, evaluation["eval_id"])
    embeddings = embed_images(workspace, [f.image_id for f in failures])
    result = find_prototypes(workspace, round_id, failures, embeddings, seed)
    return save_discovery(workspace, round_id, evaluation["eval_id"], failures, result)
