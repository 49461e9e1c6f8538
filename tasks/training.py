"""The fine-tune step (train, evaluate, promotion gate) and round 0 (the seed model), with
their operations: the seed dataset, training and the promotion gate.

Model versions are named from what produced them (``m-seed-<dataset>``,
``m-<round>-<dataset>``), so re-running a crashed fine-tune produces the same version id and
overwrites the same objects instead of registering a second model.
"""
from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE

from medq.engine.models import create_model
from medq.engine.models.base import LabelledImage
from medq.engine.promote import decide_promotion
from medq.engine.scoring import eval_id_for
from medq.errors import MedQError
from medq.storage import loop_records
from medq.storage.catalog import loads
from medq.storage.images import load_images
from medq.tasks._runtime import (
    fault_point,
    loop_flow,
    loop_task,
    open_workspace,
    stable_hash,
    step_logger,
)
from medq.tasks.evaluate import evaluate_version, judge_name
from medq.tasks.rounds import checkpoint_row, current_champion, load_checkpoint


@loop_task(name="seed-dataset", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def seed_dataset(workspace: str) -> str:
    """Register the labelled train split as the seed dataset (idempotent); returns its id."""
    ws = open_workspace(workspace)
    items = loop_records.train_split_images(ws.catalog)
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
    rows = loop_records.training_examples(ws.catalog, dataset_id)
    if not rows:
        raise MedQError(f"dataset {dataset_id} has no items")
    images = load_images(ws, [r["image_id"] for r in rows])
    return [LabelledImage(item_id=r["item_id"], image=img, modality=r["modality"] or "unknown",
                          verdict=r["verdict"], degradations=loads(r["degradations"], []) or [],
                          description=r["description"] or "")
            for r, img in zip(rows, images)]


def model_version_for(round_id: str | None, dataset_id: str) -> str:
    return f"m-{round_id or 'seed'}-{stable_hash(dataset_id, length=8)}"


@loop_task(name="train-model", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def train_model(workspace: str, parent: str | None, dataset_id: str, round_id: str | None,
                seed: int = 0) -> dict[str, Any]:
    """Fine-tune `parent` (a fresh model when None) on `dataset_id`; save and register the new
    version (not promoted yet). Returns {"version", "artifact_key", "train"}."""
    from medq.storage.model_registry import load_model_version, save_model
    ws = open_workspace(workspace)
    version = model_version_for(round_id, dataset_id)
    existing = loop_records.registered_version(ws.catalog, version)
    if existing:  # trained before a crash: the artifact is complete (registered last)
        return {"version": version, "artifact_key": existing["artifact_key"],
                "train": loads(existing["metrics"], {}).get("train", {})}
    base = load_model_version(ws, parent) if parent else create_model(ws.settings.model)
    examples = _examples(ws, dataset_id)
    model, report = base.fine_tune(examples, new_version=version, seed=seed)
    train = {"n_examples": report.n_examples, "seconds": round(report.seconds, 2),
             "final_loss": report.losses[-1] if report.losses else None}
    key = save_model(ws, model, parent=parent, dataset_id=dataset_id, metrics={"train": train})
    fault_point("finetune:saved")
    step_logger().info("trained %s on %d examples in %.1f s", version, report.n_examples,
                          report.seconds)
    return {"version": version, "artifact_key": key, "train": train}


@loop_task(name="promotion-gate", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def promote_if_better(workspace: str, round_id: str | None, candidate: str,
                      current: str | None) -> dict[str, Any]:
    """Compare eval metrics of `candidate` and `current`; record the decision on the model
    version (and the round's checkpoint) in one transaction."""
    ws = open_workspace(workspace)
    judge = judge_name(None, ws.settings.judge)

    def metrics(version: str) -> dict:
        rows = loop_records.eval_metrics_text(ws.catalog, eval_id_for(version, "eval", judge))
        if not rows:
            raise MedQError(f"model {version} has no evaluation with judge {judge}; evaluate it first")
        return loads(rows[0]["metrics"], {})

    cand = metrics(candidate)
    cur = metrics(current) if current else None
    decision = decide_promotion(cand, cur, margin=ws.settings.loop.promotion_margin)
    stored = loads(loop_records.model_metrics_text(ws.catalog, candidate), {}) or {}
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


@loop_flow(name="finetune")
def finetune(workspace: str, round_id: str, model_version: str, dataset_id: str,
             seed: int = 0) -> dict[str, Any]:
    """Fine-tune `model_version` on the round's dataset, evaluate the new version, promote it
    only if it beats `model_version` by the configured margin. Returns the promotion record
    plus "train" (n_examples, seconds, final_loss)."""
    done = load_checkpoint(workspace, round_id, "finetune")
    if done is not None:
        return done
    trained = train_model(workspace, model_version, dataset_id, round_id, seed)
    evaluate_version(workspace, trained["version"], round_id)
    return {**promote_if_better(workspace, round_id, trained["version"], model_version),
            "train": trained["train"]}


@loop_flow(name="bootstrap")
def bootstrap(workspace: str, seed: int = 0) -> str:
    """Round 0: when the workspace has no model yet, train the seed model on the labelled train
    split, evaluate it and register it as the first champion. Returns the champion version
    (existing or new)."""
    champion = current_champion(workspace)
    if champion is not None:
        return champion
    dataset_id = seed_dataset(workspace)
    trained = train_model(workspace, None, dataset_id, None, seed)
    evaluate_version(workspace, trained["version"])
    promote_if_better(workspace, None, trained["version"], None)
    return str(trained["version"])
