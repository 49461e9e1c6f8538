"""Model tasks: the seed dataset, fine-tuning, evaluation lookup and the promotion gate.

Model versions are named from what produced them (``m-seed-<dataset>``,
``m-<round>-<dataset>``), so re-running a crashed fine-tune produces the same version id and
overwrites the same objects instead of registering a second model.
"""
from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from medq.engine.models import create_model
from medq.engine.models.base import LabelledImage
from medq.engine.promote import decide_promotion
from medq.engine.scoring import eval_id_for
from medq.errors import MedQError
from medq.storage.catalog import loads
from medq.storage.images import load_images
from medq.tasks._runtime import fault_point, open_workspace, stable_hash
from medq.tasks.evaluate import judge_name
from medq.tasks.rounds import checkpoint_row


@task(name="existing-evaluation", cache_policy=NO_CACHE)
def existing_evaluation(workspace: str, version: str, judge: str | None = None) -> dict | None:
    """The stored eval run of `version` on the eval split with the workspace judge, if any."""
    ws = open_workspace(workspace)
    eval_id = eval_id_for(version, "eval", judge_name(judge, ws.settings.judge))
    rows = ws.catalog.query("SELECT eval_id, metrics FROM eval_runs WHERE eval_id = ?", [eval_id])
    return None if not rows else {"eval_id": rows[0]["eval_id"],
                                  "metrics": loads(rows[0]["metrics"], {})}


@task(name="seed-dataset", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def seed_dataset(workspace: str) -> str:
    """Register the labelled train split as the seed dataset (idempotent); returns its id."""
    ws = open_workspace(workspace)
    items = ws.catalog.query("SELECT item_id, image_id FROM items WHERE split = 'train' AND "
                             "kind = 'image' ORDER BY item_id")
    if not items:
        raise MedQError(f"workspace {ws.root} has no labelled training items: load a world "
                        "(`medq load world DIR`) or ingest a labelled train split first")
    dataset_id = f"ds-seed-{stable_hash([i['item_id'] for i in items], length=10)}"
    with ws.catalog.transaction() as tx:
        tx.upsert("datasets", [{"dataset_id": dataset_id, "round_id": None, "parent": None,
                                "n_items": len(items), "status": "passed",
                                "report": {"source": "train split"}}])
        tx.upsert("dataset_items", [{"dataset_id": dataset_id, "item_id": i["item_id"],
                                     "image_id": i["image_id"], "label_source": "seed"}
                                    for i in items])
    return dataset_id


def _examples(ws, dataset_id: str) -> list[LabelledImage]:
    rows = ws.catalog.query(
        "SELECT i.item_id, i.image_id, i.modality, i.verdict, i.degradations, i.description "
        "FROM dataset_items d JOIN items i USING (item_id) WHERE d.dataset_id = ? "
        "ORDER BY i.item_id", [dataset_id])
    if not rows:
        raise MedQError(f"dataset {dataset_id} has no items")
    images = load_images(ws, [r["image_id"] for r in rows])
    return [LabelledImage(item_id=r["item_id"], image=img, modality=r["modality"] or "unknown",
                          verdict=r["verdict"], degradations=loads(r["degradations"], []) or [],
                          description=r["description"] or "")
            for r, img in zip(rows, images)]


def model_version_for(round_id: str | None, dataset_id: str) -> str:
    return f"m-{round_id or 'seed'}-{stable_hash(dataset_id, length=8)}"


@task(name="train-model", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def train_model(workspace: str, parent: str | None, dataset_id: str, round_id: str | None,
                seed: int = 0) -> dict[str, Any]:
    """Fine-tune `parent` (a fresh model when None) on `dataset_id`; save and register the new
    version (not promoted yet). Returns {"version", "artifact_key", "train"}."""
    from medq.storage.model_registry import load_model_version, save_model
    ws = open_workspace(workspace)
    version = model_version_for(round_id, dataset_id)
    existing = ws.catalog.query("SELECT version, artifact_key, metrics FROM model_versions "
                                "WHERE version = ? AND artifact_key IS NOT NULL", [version])
    if existing:  # trained before a crash: the artifact is complete (registered last)
        return {"version": version, "artifact_key": existing[0]["artifact_key"],
                "train": loads(existing[0]["metrics"], {}).get("train", {})}
    base = load_model_version(ws, parent) if parent else create_model(ws.settings.model)
    examples = _examples(ws, dataset_id)
    model, report = base.fine_tune(examples, new_version=version, seed=seed)
    train = {"n_examples": report.n_examples, "seconds": round(report.seconds, 2),
             "final_loss": report.losses[-1] if report.losses else None}
    key = save_model(ws, model, parent=parent, dataset_id=dataset_id, metrics={"train": train})
    fault_point("finetune:saved")
    get_run_logger().info("trained %s on %d examples in %.1f s", version, report.n_examples,
                          report.seconds)
    return {"version": version, "artifact_key": key, "train": train}


@task(name="promotion-gate", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def promote_if_better(workspace: str, round_id: str | None, candidate: str,
                      current: str | None) -> dict[str, Any]:
    """Compare eval metrics of `candidate` and `current`; record the decision on the model
    version (and the round's checkpoint) in one transaction."""
    ws = open_workspace(workspace)
    judge = judge_name(None, ws.settings.judge)

    def metrics(version: str) -> dict:
        rows = ws.catalog.query("SELECT metrics FROM eval_runs WHERE eval_id = ?",
                                [eval_id_for(version, "eval", judge)])
        if not rows:
            raise MedQError(f"model {version} has no evaluation with judge {judge}; evaluate it first")
        return loads(rows[0]["metrics"], {})

    cand = metrics(candidate)
    cur = metrics(current) if current else None
    decision = decide_promotion(cand, cur, margin=ws.settings.loop.promotion_margin)
    stored = loads(ws.catalog.scalar("SELECT metrics FROM model_versions WHERE version = ?",
                                     [candidate]), {}) or {}
    desc = (cand.get("description") or {}).get("overall")
    info = {"model_out": candidate, "promoted": decision.promote, "reason": decision.reason,
            "accuracy_out": cand.get("accuracy"), "description_out": desc,
            "accuracy_in": None if cur is None else cur.get("accuracy"),
            "description_in": None if cur is None else (cur.get("description") or {}).get("overall")}
    with ws.catalog.transaction() as tx:
        tx.upsert("model_versions", [{"version": candidate, "promoted": decision.promote,
                                      "reason": decision.reason,
                                      "metrics": {**stored, "eval": {"accuracy": cand.get("accuracy"),
                                                                     "description": desc}}}])
        if round_id is not None:
            tx.upsert("round_steps", [checkpoint_row(round_id, "finetune", info)])
    return info
