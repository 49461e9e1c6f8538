"""Explore: keep the pool index current, retrieve look-alikes of each failure prototype,
score only those candidates with the model."""
from __future__ import annotations

from prefect import flow

from medq.tasks.embed import embed_pool, ensure_embedder, ensure_pool_index
from medq.tasks.explore import (
    excluded_images,
    load_prototypes,
    pool_base_rate,
    retrieve_candidates,
    save_candidates,
    score_candidates,
)
from medq.tasks.rounds import load_checkpoint


@flow(name="explore")
def explore(workspace: str, round_id: str, model_version: str, candidates: int,
            seed: int = 0) -> dict:
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
