"""Embedding tasks: the workspace's fixed quality embedder, pool embeddings and the FAISS index.

The embedder is fitted once per workspace on a seeded sample of pool images and stored in the
object store (``embedders/<version>.json`` plus a ``current`` pointer). It never changes when the
model changes, so the pool is embedded and indexed once and only grown when new pool images
arrive.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
from prefect.cache_policies import NO_CACHE

from medq.engine.embed import QualityEmbedder, create_embedder
from medq.storage import loop_records
from medq.storage.embedding_store import EmbeddingStore
from medq.storage.images import load_images
from medq.storage.pool_index import build_from_store, latest_index_id, load_index, save_index
from medq.tasks._runtime import fault_point, loop_task, open_workspace, step_logger

CURRENT_KEY = "embedders/current.json"
FIT_SAMPLE = 1000
BATCH = 256

_EMBEDDERS: dict[tuple[str, str], QualityEmbedder] = {}


def current_embedder(ws) -> QualityEmbedder | None:
    """The workspace's fitted embedder, or None before the first fit."""
    if not ws.objects.exists(CURRENT_KEY):
        return None
    version = json.loads(ws.objects.get_bytes(CURRENT_KEY))["version"]
    key = (str(ws.root), version)
    if key not in _EMBEDDERS:
        state = json.loads(ws.objects.get_bytes(f"embedders/{version}.json"))
        _EMBEDDERS[key] = QualityEmbedder.from_state(state)
    return _EMBEDDERS[key]


@loop_task(name="ensure-embedder", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def ensure_embedder(workspace: str, seed: int = 0) -> str:
    """Fit (once) and store the workspace embedder; returns its version."""
    ws = open_workspace(workspace)
    existing = current_embedder(ws)
    if existing is not None:
        return existing.version
    ids = loop_records.pool_image_ids(ws.catalog)
    if len(ids) < 50:  # tiny or no pool: fit on everything the workspace has
        ids = loop_records.all_image_ids(ws.catalog)
    rng = np.random.default_rng(seed)
    sample = sorted(rng.choice(ids, size=min(FIT_SAMPLE, len(ids)), replace=False).tolist())
    embedder = create_embedder(ws.settings.embedder)
    embedder.fit(load_images(ws, sample, size=ws.settings.embedder.image_size))
    state = embedder.state_dict()
    ws.objects.put_bytes(f"embedders/{embedder.version}.json", json.dumps(state).encode())
    ws.objects.put_bytes(CURRENT_KEY, json.dumps({"version": embedder.version}).encode())
    step_logger().info("fitted embedder %s on %d images", embedder.version, len(sample))
    return embedder.version


@loop_task(name="embed-images", retries=1, cache_policy=NO_CACHE)
def embed_images(workspace: str, image_ids: list[str]) -> np.ndarray:
    """(N, d) float32 unit-norm embeddings of `image_ids`, in order."""
    ws = open_workspace(workspace)
    embedder = current_embedder(ws)
    out = [np.zeros((0, embedder.dim), np.float32)]
    for start in range(0, len(image_ids), BATCH):
        chunk = image_ids[start:start + BATCH]
        out.append(embedder.embed(load_images(ws, chunk, size=ws.settings.embedder.image_size)))
    return np.concatenate(out)


def pool_store(ws) -> EmbeddingStore:
    embedder = current_embedder(ws)
    return EmbeddingStore(ws.objects, embedder.version, ws.settings.index_root / "cache")


@loop_task(name="embed-pool", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def embed_pool(workspace: str) -> dict[str, Any]:
    """Embed every pool image not embedded yet (streamed in batches; idempotent)."""
    ws = open_workspace(workspace)
    logger = step_logger()
    store = pool_store(ws)
    embedder = current_embedder(ws)
    total = loop_records.pool_image_count(ws.catalog)
    added, offset, page = 0, 0, 20_000
    while offset < total:
        ids = loop_records.pool_image_page(ws.catalog, page, offset)
        offset += page
        todo = [i for i, have in zip(ids, store.contains(ids)) if not have]
        for start in range(0, len(todo), 4 * BATCH):
            chunk = todo[start:start + 4 * BATCH]
            vectors = embedder.embed(load_images(ws, chunk, size=ws.settings.embedder.image_size))
            added += store.append(chunk, vectors)
            fault_point("explore:embedding")
        if todo:
            logger.info("embedded %d of %d pool images", min(offset, total), total)
    return {"pool": total, "added": added, "stored": len(store)}


@loop_task(name="ensure-pool-index", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def ensure_pool_index(workspace: str, seed: int = 0) -> dict[str, Any]:
    """The current FAISS index over every stored pool embedding: reused when complete, grown
    with the new vectors when its kind still fits the pool size, rebuilt otherwise."""
    ws = open_workspace(workspace)
    store = pool_store(ws)
    latest = latest_index_id(ws.catalog, store.embedder_version)
    if latest is not None:
        index = load_index(ws.objects, ws.catalog, index_id=latest, settings=ws.settings)
        if index.ntotal == len(store):
            return {"index_id": latest, "kind": index.kind, "n_vectors": index.ntotal,
                    "recall": None if index.recall is None else index.recall.recall}
        if index.rebuild_reason(ws.settings) is None:
            vids = store.vids
            new = vids[~index.contains(vids)]
            index.add(new, store.get_by_vid(new))
            if index.kind != "flat":  # the stored recall must describe the grown index
                index.measure_recall(store.iter_batches(), vectors=store.get_by_vid)
            index_id = save_index(index, ws.objects, ws.catalog, scratch=ws.scratch("index"))
            return {"index_id": index_id, "kind": index.kind, "n_vectors": index.ntotal,
                    "grown_by": len(new),
                    "recall": None if index.recall is None else index.recall.recall}
    index = build_from_store(store, settings=ws.settings, seed=seed)
    index_id = save_index(index, ws.objects, ws.catalog, scratch=ws.scratch("index"))
    return {"index_id": index_id, "kind": index.kind, "n_vectors": index.ntotal,
            "recall": None if index.recall is None else index.recall.recall}
