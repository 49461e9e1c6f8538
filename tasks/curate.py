"""The curate step (:func:`curate`): the round's new labels (human + pseudo) -> Great
Expectations suite -> training items, dataset and quarantine, all in one transaction with the
checkpoint; and its operations."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from prefect.cache_policies import NO_CACHE

from medq.engine.consensus import Vote, resolve
from medq.engine.curate import CurationReport, curate_batch, mix_training_set
from medq.engine.pseudo import pseudo_labels
from medq.storage import loop_records
from medq.storage.catalog import loads
from medq.storage.images import load_images
from medq.tasks._runtime import fault_point, loop_flow, loop_task, open_workspace, stable_hash
from medq.tasks.embed import embed_images
from medq.tasks.rounds import checkpoint_row, load_checkpoint


def _level(degradations: list[dict]) -> int:
    return max([int(d["level"]) for d in degradations] or [0])


@loop_task(name="human-labels", cache_policy=NO_CACHE)
def human_labels(workspace: str, round_id: str) -> list[dict]:
    """One label per annotated image of the round: consensus over its annotations. Paired
    (A/B comparison) annotations carry no verdict of their image and are left out."""
    ws = open_workspace(workspace)
    rule = ws.settings.annotation.disagreement_rule
    required = ws.settings.annotation.consensus
    rows = loop_records.verdict_annotations(ws.catalog, round_id)
    by_image: dict[str, list[dict]] = {}
    for r in rows:
        by_image.setdefault(r["image_id"], []).append(r)
    labels = []
    for image_id, anns in by_image.items():
        lane = anns[0]["lane"]
        votes = [Vote.from_record(a["annotator"], a["verdict"], loads(a["degradations"], []),
                                  a["description"]) for a in anns]
        result = resolve(image_id, votes, rule=rule, required=required if lane == "expert" else 1)
        labels.append({"image_id": image_id, "lane": lane, "status": result.status,
                       "verdict": result.verdict, "degradations": result.degradations,
                       "description": result.description,
                       "modality": anns[0]["modality"] or anns[0]["image_modality"],
                       "agreement": result.verdict_share})
    return labels


@loop_task(name="auto-labels", retries=1, cache_policy=NO_CACHE)
def auto_labels(workspace: str, round_id: str, model_version: str) -> list[dict]:
    """Pseudo-labels from the model for auto-lane items that were not spot-checked."""
    from medq.storage.model_registry import load_model_version
    ws = open_workspace(workspace)
    rows = loop_records.unchecked_auto_routes(ws.catalog, round_id)
    if not rows:
        return []
    model = load_model_version(ws, model_version)
    ids = [r["image_id"] for r in rows]
    labels = pseudo_labels(model, load_images(ws, ids), [r["modality"] for r in rows])
    return [{"image_id": i, "lane": "auto", "status": "pseudo", "agreement": None, **lab}
            for i, lab in zip(ids, labels)]


@loop_task(name="curation-suite", cache_policy=NO_CACHE)
def validate_batch(workspace: str, round_id: str, labels: list[dict]) -> tuple[pd.DataFrame, CurationReport]:
    """Build the batch frame (with eval leakage distances) and run the GX suite on it."""
    ws = open_workspace(workspace)
    final = [lab for lab in labels if lab["verdict"] is not None]
    eval_ids = loop_records.eval_image_ids(ws.catalog)
    ids = [lab["image_id"] for lab in final]
    distances = np.full(len(ids), np.nan)
    if ids and eval_ids:
        new_vec = embed_images(workspace, ids)
        eval_vec = embed_images(workspace, eval_ids)
        # (n, m) distances in manageable blocks; only the nearest eval item matters
        for start in range(0, len(ids), 512):
            block = new_vec[start:start + 512]
            d2 = (block ** 2).sum(1)[:, None] - 2 * block @ eval_vec.T + (eval_vec ** 2).sum(1)[None]
            distances[start:start + 512] = np.sqrt(np.maximum(d2.min(1), 0.0))
    frame = pd.DataFrame([{
        "item_id": f"lab-{lab['image_id']}", "image_id": lab["image_id"],
        "modality": lab["modality"], "verdict": lab["verdict"],
        "degradations": lab["degradations"], "description": lab["description"],
        "lane": lab["lane"], "label_source": lab["lane"], "eval_distance": float(dist),
        "image_hash": lab["image_id"]} for lab, dist in zip(final, distances)],
        columns=["item_id", "image_id", "modality", "verdict", "degradations", "description",
                 "lane", "label_source", "eval_distance", "image_hash"])
    report = curate_batch(frame, eval_hashes=eval_ids, eval_image_ids=eval_ids, settings=ws.settings)
    return frame, report


@loop_task(name="register-dataset", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def register_dataset(workspace: str, round_id: str, frame: pd.DataFrame, report: CurationReport,
                     labels: list[dict], parent_dataset: str | None) -> dict[str, Any]:
    """Clean rows become training items; the round's dataset = new items + earlier training
    data; quarantine and checkpoint; all in one transaction. A failed suite writes only the
    report and quarantine (the round stops)."""
    ws = open_workspace(workspace)
    clean = frame[frame["item_id"].isin(report.clean_item_ids)] if report.passed else frame.iloc[0:0]
    pending = [lab["image_id"] for lab in labels if lab["verdict"] is None]
    items = [{"item_id": r.item_id, "split": "train", "kind": "image", "image_id": r.image_id,
              "modality": r.modality, "verdict": r.verdict, "degradations": r.degradations,
              "level": _level(r.degradations), "description": r.description,
              "source": f"{r.lane}:{round_id}", "round_added": round_id}
             for r in clean.itertuples()]
    previous = loop_records.dataset_item_rows(ws.catalog, parent_dataset) if parent_dataset else []
    new = [{"item_id": i["item_id"], "image_id": i["image_id"],
            "label_source": i["source"].split(":")[0]} for i in items]
    mixed = mix_training_set(previous, new)
    dataset_id = f"ds-{round_id}-{stable_hash(sorted(m['item_id'] for m in mixed), length=8)}"
    info = {"passed": report.passed, "dataset_id": dataset_id if report.passed else None,
            "n_new": len(items), "n_train": len(mixed), "quarantined": len(report.quarantined),
            "unresolved": len(pending),
            "summary": "; ".join(report.failure_reasons) or f"{report.n_clean} of {report.n_rows} rows clean"}
    fault_point("curate:validated")
    with ws.catalog.transaction() as tx:
        tx.upsert("quarantine", report.quarantine_rows(round_id))
        if report.passed:
            tx.upsert("items", items)
            tx.upsert("datasets", [{"dataset_id": dataset_id, "round_id": round_id,
                                    "parent": parent_dataset, "n_items": len(mixed),
                                    "status": "passed", "report": report.to_dict()}])
            tx.upsert("dataset_items", [{"dataset_id": dataset_id, **m} for m in mixed])
            tx.upsert("round_steps", [checkpoint_row(round_id, "curate", info)])
        else:
            tx.upsert("rounds", [{"round_id": round_id, "report": {"curation": report.to_dict(),
                                                                  "markdown": report.markdown()}}])
    return info


@loop_task(name="parent-dataset", cache_policy=NO_CACHE)
def parent_dataset(workspace: str, round_id: str) -> str | None:
    """The training set this round builds on: the latest earlier round's curated dataset (its
    labels count even if that round's model was not promoted), else the seed dataset."""
    catalog = open_workspace(workspace).catalog
    earlier = loop_records.latest_passed_dataset_before(catalog, round_id)
    if earlier is not None:
        return earlier
    return loop_records.latest_seed_dataset(catalog)


@loop_flow(name="curate")
def curate(workspace: str, round_id: str, model_version: str) -> dict[str, Any]:
    """Human labels (with consensus) and pseudo-labels of `model_version` -> the curation suite
    -> the round's dataset (or a failed report). Returns the checkpoint record ("passed",
    "dataset_id", "summary", ...)."""
    done = load_checkpoint(workspace, round_id, "curate")
    if done is not None:
        return done
    labels = human_labels(workspace, round_id) + auto_labels(workspace, round_id, model_version)
    frame, report = validate_batch(workspace, round_id, labels)
    parent = parent_dataset(workspace, round_id)
    return register_dataset(workspace, round_id, frame, report, labels, parent)
