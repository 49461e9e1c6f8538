"""Discover tasks: a round's failures -> embeddings -> HDBSCAN prototypes -> catalog."""
from __future__ import annotations

from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from medq.engine.discover import (
    DiscoveryResult,
    Failure,
    description_severity,
    discover_prototypes,
    mcq_severity,
)
from medq.storage.catalog import loads
from medq.tasks._runtime import open_workspace
from medq.tasks.rounds import checkpoint_row


@task(name="collect-failures", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def collect_failures(workspace: str, eval_id: str) -> list[Failure]:
    """Wrong MCQ answers and low-scoring descriptions of eval run `eval_id`."""
    ws = open_workspace(workspace)
    fail_below = ws.settings.loop.description_fail_below
    rows = ws.catalog.query(
        "SELECT p.item_id, p.kind, p.probs, p.correct, p.score, i.image_id, i.answer, i.modality, "
        "i.degradations, i.question_type FROM predictions p JOIN items i USING (item_id) "
        "WHERE p.eval_id = ? AND ((p.kind = 'mcq' AND NOT coalesce(p.correct, FALSE)) OR "
        "(p.kind = 'description' AND p.score < ?)) ORDER BY p.item_id", [eval_id, fail_below])
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


@task(name="find-prototypes", cache_policy=NO_CACHE)
def find_prototypes(workspace: str, round_id: str, failures: list[Failure],
                    embeddings: np.ndarray, seed: int = 0) -> DiscoveryResult:
    """Engine call: cluster the failures into prototypes."""
    loop = open_workspace(workspace).settings.loop
    return discover_prototypes(round_id, failures, embeddings,
                               min_cluster_size=loop.min_cluster_size,
                               reduce_dims=loop.reduce_dims,
                               noise_weight=loop.noise_weight, seed=seed)


@task(name="save-discovery", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def save_discovery(workspace: str, round_id: str, eval_id: str, failures: list[Failure],
                   result: DiscoveryResult) -> dict[str, Any]:
    """Failures, prototypes and the checkpoint in one transaction (re-run safe)."""
    info = {"eval_id": eval_id, "n_failures": len(failures),
            "n_prototypes": sum(not p.is_noise for p in result.prototypes),
            "n_noise": sum(p.is_noise for p in result.prototypes),
            "prototypes": [p.summary for p in result.prototypes]}
    with open_workspace(workspace).catalog.transaction() as tx:
        tx.execute("DELETE FROM failures WHERE round_id = ?", [round_id])
        tx.execute("DELETE FROM prototypes WHERE round_id = ?", [round_id])
        tx.upsert("failures", result.failure_rows(round_id, failures))
        tx.upsert("prototypes", result.prototype_rows())
        tx.upsert("round_steps", [checkpoint_row(round_id, "discover", info)])
    return info
