"""The explore step (:func:`explore`): prototypes as anchors -> FAISS neighbourhoods ->
candidates -> model scores, and its operations.

Only the retrieved candidates are scored by the model, never the whole pool. Scoring is the
expensive step, so its results are cached by (workspace instance, model version, candidates):
a round killed after scoring reuses them instead of scoring again.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
from prefect.cache_policies import NO_CACHE

from medq.engine.discover import Prototype
from medq.engine.explore import (
    allocate_budget,
    anchor_queries,
    plan_anchors_from_vectors,
    retrieval_k,
    select_candidates,
)
from medq.engine.questions import VERDICT_LETTERS, verdict_mcq
from medq.engine.route import normalized_entropy
from medq.storage import loop_records
from medq.storage.images import load_images
from medq.storage.pool_index import load_index, search_pool
from medq.tasks._runtime import loop_flow, loop_task, open_workspace, round_cache_key
from medq.tasks.embed import (
    embed_images,
    embed_pool,
    ensure_embedder,
    ensure_pool_index,
    pool_store,
)
from medq.tasks.rounds import checkpoint_row, load_checkpoint

_LETTER_VERDICT = {v: k for k, v in VERDICT_LETTERS.items()}
SCORE_BATCH = 128


@loop_task(name="load-prototypes", cache_policy=NO_CACHE)
def load_prototypes(workspace: str, round_id: str) -> list[Prototype]:
    rows = loop_records.prototype_rows(open_workspace(workspace).catalog, round_id)
    return [Prototype.from_row(r) for r in rows]


@loop_task(name="excluded-images", cache_policy=NO_CACHE)
def excluded_images(workspace: str) -> list[str]:
    """Images never to retrieve: labelled (train), in the eval set, or already queued."""
    return loop_records.excluded_image_ids(open_workspace(workspace).catalog)


@loop_task(name="retrieve-candidates", cache_policy=NO_CACHE)
def retrieve_candidates(workspace: str, round_id: str, index_id: str, budget: int,
                        prototypes: list[Prototype], exclude: list[str]) -> list[dict]:
    """Plan anchors per prototype, search the pool index, filter and diversify.
    Returns candidate rows (without scores)."""
    ws = open_workspace(workspace)
    loop = ws.settings.loop
    if not prototypes or budget <= 0:
        return []
    budgets = allocate_budget(prototypes, budget)
    members = sorted({m for p in prototypes for m in p.members})
    image_of = loop_records.images_of_items(ws.catalog, members)
    unique_images = sorted(set(image_of.values()))
    vectors = dict(zip(unique_images, embed_images(workspace, unique_images)))
    anchors = []
    for p in prototypes:
        ids = [m for m in p.members if m in image_of]
        if not ids or budgets.get(p.prototype_id, 0) <= 0:
            continue
        anchors += plan_anchors_from_vectors(p, np.stack([vectors[image_of[m]] for m in ids]), ids,
                                             per_prototype=loop.anchors_per_prototype,
                                             budget=budgets[p.prototype_id])
    if not anchors:
        return []
    store = pool_store(ws)
    index = load_index(ws.objects, ws.catalog, index_id=index_id, settings=ws.settings,
                       scratch=ws.scratch("index"))
    k = retrieval_k(budgets, anchors, n_excluded=min(len(exclude), 1024))
    ids, dist = search_pool(index, store, anchor_queries(anchors), min(k, index.ntotal))
    eval_images = loop_records.eval_image_ids(ws.catalog)
    # leakage guard before anything is paid for: no near-duplicate of ANY eval image
    reference = embed_images(workspace, eval_images) if eval_images else None
    chosen = select_candidates(anchors, ids, dist, budgets, vectors=store.get, exclude=exclude,
                               reference_vectors=reference,
                               near_duplicate_distance=loop.near_duplicate_distance)
    return [c.to_row(round_id) for c in chosen]


def verdict_scores(model, images: list[np.ndarray], image_ids: list[str],
                   modalities: list[str | None]) -> list[dict[str, Any]]:
    """Model answers to the standard overall-quality question: probs, entropy, verdict."""
    answers = model.answer([verdict_mcq(i, img, m) for i, img, m in
                            zip(image_ids, images, modalities)])
    return [{"probs": a.probs, "entropy": normalized_entropy(a.probs),
             "predicted": _LETTER_VERDICT.get(a.letter)} for a in answers]


@loop_task(name="score-candidates", retries=1, cache_key_fn=round_cache_key,
           cache_expiration=timedelta(days=7))
def score_candidates(workspace: str, model_version: str, rows: list[dict]) -> list[dict]:
    """Add the model's verdict probabilities, normalized entropy and predicted verdict."""
    from medq.storage.model_registry import load_model_version
    if not rows:
        return []
    ws = open_workspace(workspace)
    model = load_model_version(ws, model_version)
    ids = [r["image_id"] for r in rows]
    modality = loop_records.modalities_of_images(ws.catalog, ids)
    scored = []
    for start in range(0, len(rows), SCORE_BATCH):
        chunk = rows[start:start + SCORE_BATCH]
        chunk_ids = [r["image_id"] for r in chunk]
        images = load_images(ws, chunk_ids)
        for row, s in zip(chunk, verdict_scores(model, images, chunk_ids,
                                                [modality.get(i) for i in chunk_ids])):
            scored.append({**row, **s})
    return scored


@loop_task(name="pool-base-rate", retries=1, cache_key_fn=round_cache_key,
           cache_expiration=timedelta(days=7))
def pool_base_rate(workspace: str, model_version: str, sample: int = 300,
                   seed: int = 0) -> float | None:
    """Share of a seeded random pool sample the model gets wrong (verdict vs ground truth).
    Measured only where ground truth exists (simulated worlds); None otherwise."""
    from medq.storage.model_registry import load_model_version
    ws = open_workspace(workspace)
    rows = loop_records.oracle_pool_sample(ws.catalog, sample, seed)
    if not rows:
        return None
    model = load_model_version(ws, model_version)
    ids = [r["image_id"] for r in rows]
    scores = verdict_scores(model, load_images(ws, ids), ids, [r["modality"] for r in rows])
    return float(np.mean([s["predicted"] != r["verdict"] for s, r in zip(scores, rows)]))


@loop_task(name="save-candidates", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def save_candidates(workspace: str, round_id: str, rows: list[dict], info: dict) -> dict:
    """Candidates with their scores and the explore checkpoint, in one transaction."""
    clean = [{k: v for k, v in r.items() if k in ("round_id", "image_id", "prototype_id", "anchor",
                                                    "distance", "rank", "probs", "entropy",
                                                    "predicted")} for r in rows]
    truth = loop_records.oracle_verdicts(open_workspace(workspace).catalog,
                                    [r["image_id"] for r in rows])
    known = [r for r in rows if r["image_id"] in truth]
    info = {**info, "n_candidates": len(rows),
            "failure_yield": (float(np.mean([r["predicted"] != truth[r["image_id"]] for r in known]))
                              if known else None),
            "mean_entropy": float(np.mean([r["entropy"] for r in rows])) if rows else None}
    with open_workspace(workspace).catalog.transaction() as tx:
        loop_records.clear_candidates(tx, round_id)
        tx.upsert("candidates", clean)
        tx.upsert("round_steps", [checkpoint_row(round_id, "explore", info)])
    return info


@loop_flow(name="explore")
def explore(workspace: str, round_id: str, model_version: str, candidates: int,
            seed: int = 0) -> dict[str, Any]:
    """Keep the pool index current, retrieve up to `candidates` look-alikes of the round's
    prototypes, score only those with `model_version`; stores candidates and the checkpoint.
    Returns the checkpoint record."""
    done = load_checkpoint(workspace, round_id, "explore")
    if done is not None:
        return done
    ensure_embedder(workspace, seed)
    embedded = embed_pool(workspace)
    index = ensure_pool_index(workspace, seed)
    prototypes = load_prototypes(workspace, round_id)
    exclude = excluded_images(workspace)
    rows = retrieve_candidates(workspace, round_id, index["index_id"], candidates, prototypes,
                               exclude)
    scored = score_candidates(workspace, model_version, rows)
    base_rate = pool_base_rate(workspace, model_version, seed=seed)
    return save_candidates(workspace, round_id, scored, {
        "index": index, "pool": embedded["pool"], "pool_base_rate": base_rate})
