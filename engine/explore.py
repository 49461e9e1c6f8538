"""Explore: plan retrieval from the pool around failure prototypes (pure; arrays in, records out).

The flow around these functions (the I/O lives in :mod:`medq.storage.pool_index`):

1. :func:`allocate_budget`: split the round's candidate budget (items the model will score,
   ``settings.loop.candidates_per_round``) over prototypes in proportion to their budget weight
   (error mass; residual noise prototype down-weighted), largest-remainder rounding, at least one
   per non-noise prototype when the budget allows.
2. :func:`plan_anchors`: several anchors per prototype covering its spread: the medoid, then
   farthest-point members (each next anchor is the member farthest from the anchors chosen so far).
3. the caller searches the pool index with :func:`anchor_queries` (k from :func:`retrieval_k`)
   and maps the returned vector ids to image ids,
4. :func:`select_candidates`: drop missing hits and everything labelled / queued / in the eval set,
   assign each pool image to the prototype it is closest to, remove near-duplicates (of each other
   and, optionally, of reference vectors such as the eval set), and pick each prototype's share
   greedily with a max-min diversity criterion (MMR). Unused shares (a prototype whose
   neighbourhood ran dry) go to the other prototypes in a second pass.

Only the returned candidates are scored by the model; the pool as a whole never is. Distances are
Euclidean in the embedding space (unit vectors: 0 = identical, 2 = opposite).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np

from medq.engine.discover import Prototype
from medq.errors import MedQError


class ExploreError(MedQError):
    """Retrieval inputs that do not fit together (shapes, unknown prototypes, bad budgets)."""


@dataclass
class Anchor:
    """One retrieval query: a member embedding of a prototype. `anchor` is its index within the
    prototype (0 = medoid, then farthest-point order)."""

    prototype_id: str
    anchor: int
    item_id: str | None
    vector: np.ndarray


@dataclass
class Candidate:
    """A pool image chosen for scoring. `image_id`: the id as the kNN search returned it (a
    str for pool images; integer ids stay integers); `distance`: Euclidean to its nearest anchor
    of `prototype_id` (lower = closer to the failure mode); `anchor`: that anchor's index;
    `rank`: selection order within the prototype (0 = first chosen)."""

    image_id: Hashable
    prototype_id: str
    anchor: int
    distance: float
    rank: int

    def to_row(self, round_id: str) -> dict:
        """Row of the catalog's ``candidates`` table (scores are filled in after scoring)."""
        return {"round_id": round_id, "image_id": self.image_id,
                "prototype_id": self.prototype_id, "anchor": int(self.anchor),
                "distance": float(self.distance), "rank": int(self.rank)}


# --------------------------------------------------------------------------------------------
# Budget
# --------------------------------------------------------------------------------------------

def allocate_budget(prototypes: Sequence[Prototype], budget: int, *,
                    weights: Mapping[str, float] | None = None) -> dict[str, int]:
    """Split an integer `budget` over prototypes in proportion to their weights.

    Weights default to ``prototype.weight`` (error mass; noise down-weighted by discovery).
    Largest-remainder (Hamilton) rounding, so the shares sum exactly to `budget` and each is within
    one of its exact quota. Then every non-noise prototype gets at least 1 when the budget covers
    them all (taken from the prototype with the largest surplus over its quota); with a smaller
    budget the heaviest non-noise prototypes get 1 each. All-zero weights: equal split."""
    if budget < 0 or int(budget) != budget:
        raise ExploreError(f"allocate_budget: budget must be a non-negative integer, got {budget}")
    budget = int(budget)
    if not prototypes:
        return {}
    ids = [p.prototype_id for p in prototypes]
    if len(set(ids)) != len(ids):
        raise ExploreError("allocate_budget: duplicate prototype ids")
    w = np.array([float(weights[p.prototype_id]) if weights is not None else float(p.weight)
                  for p in prototypes])
    if (w < 0).any() or not np.isfinite(w).all():
        raise ExploreError(f"allocate_budget: weights must be finite and >= 0, got {w.tolist()}")
    if w.sum() <= 0:
        w = np.ones(len(w))
    quota = budget * w / w.sum()
    alloc = np.floor(quota).astype(np.int64)
    rest = budget - int(alloc.sum())
    # largest fractional parts first; ties to the heavier prototype, then to the earlier one
    order = sorted(range(len(w)), key=lambda i: (-(quota[i] - alloc[i]), -w[i], i))
    for i in order[:rest]:
        alloc[i] += 1
    non_noise = sorted((i for i, p in enumerate(prototypes) if not p.is_noise),
                       key=lambda i: (-w[i], i))
    must = set(non_noise if budget >= len(non_noise) else non_noise[:budget])
    for i in non_noise:
        if i not in must or alloc[i] > 0:
            continue
        donors = [j for j in range(len(w)) if alloc[j] > (1 if j in must else 0)]
        if not donors:
            break
        # take from the prototype that is most above its exact quota
        j = max(donors, key=lambda j: (alloc[j] - quota[j], alloc[j], -j))
        alloc[j] -= 1
        alloc[i] += 1
    return {pid: int(a) for pid, a in zip(ids, alloc)}


# --------------------------------------------------------------------------------------------
# Anchors
# --------------------------------------------------------------------------------------------

def k_center_greedy(points: np.ndarray, k: int, *, centers: np.ndarray | None = None,
                    start: int | None = None) -> list[int]:
    """k-center greedy (Gonzalez 1985; Sener & Savarese 2018's core-set): indices of up to `k`
    rows of `points` (n, d), each next pick the row farthest (Euclidean) from every center so
    far. The first centers are `centers` (m, d; e.g. already labelled points, never returned),
    else the row `start` (returned first), else the pick is the row farthest from the mean.
    Stops early when every remaining row coincides with a center (no duplicate picks). Ties go
    to the lower index. Cost: O(n (m + k) d), the m initial centers in blocks of 1024."""
    x = np.asarray(points, np.float64)
    n = len(x)
    k = min(int(k), n)
    if n == 0 or k <= 0:
        return []
    picks: list[int] = []
    if centers is not None and len(centers):
        c = np.asarray(centers, np.float64)
        sq = (x * x).sum(1)
        dmin = np.full(n, np.inf)
        for s in range(0, len(c), 1024):  # min distance to the labelled set, block by block
            block = c[s:s + 1024]
            d2 = sq[:, None] - 2 * x @ block.T + (block * block).sum(1)[None]
            dmin = np.minimum(dmin, d2.min(1))
        dmin = np.sqrt(np.maximum(dmin, 0))
    elif start is not None:
        picks.append(int(start))
        dmin = np.linalg.norm(x - x[start], axis=1)
    else:
        dmin = np.linalg.norm(x - x.mean(0), axis=1)
        first = int(dmin.argmax())
        picks.append(first)
        dmin = np.linalg.norm(x - x[first], axis=1)
    while len(picks) < k:
        j = int(dmin.argmax())
        if dmin[j] <= 0:
            break
        picks.append(j)
        dmin = np.minimum(dmin, np.linalg.norm(x - x[j], axis=1))
    return picks


def farthest_point_order(x: np.ndarray, k: int, start: int = 0) -> list[int]:
    """Indices of `k` rows of `x` (n, d): `start`, then repeatedly the row farthest (Euclidean)
    from those already chosen (:func:`k_center_greedy` from `start`)."""
    return k_center_greedy(x, k, start=start)


def plan_anchors(prototypes: Sequence[Prototype], embeddings: np.ndarray, *,
                 per_prototype: int = 3, budgets: Mapping[str, int] | None = None,
                 item_ids: Sequence[str] | None = None) -> list[Anchor]:
    """Anchors for each prototype from its members' embeddings.

    `embeddings` (N, d) are the failure embeddings given to discovery (rows indexed by
    ``prototype.member_index``). Each prototype gets ``min(per_prototype, members, budget)``
    anchors: the medoid first (for the noise residual: the member nearest its centroid), then
    farthest-point members. Prototypes with a zero budget get none."""
    x = np.asarray(embeddings, np.float32)
    anchors: list[Anchor] = []
    for p in prototypes:
        if not p.member_index:
            raise ExploreError(f"plan_anchors: prototype {p.prototype_id} has no member_index "
                               "(rebuilt from the catalog?); use plan_anchors_from_vectors")
        if max(p.member_index) >= len(x):
            raise ExploreError(f"plan_anchors: prototype {p.prototype_id} refers to failure row "
                               f"{max(p.member_index)} but embeddings has {len(x)} rows")
        ids = list(p.members) if item_ids is None else [item_ids[i] for i in p.member_index]
        anchors += plan_anchors_from_vectors(p, x[p.member_index], ids, per_prototype=per_prototype,
                                             budget=None if budgets is None else
                                             budgets.get(p.prototype_id, 0))
    return anchors


def plan_anchors_from_vectors(prototype: Prototype, member_vectors: np.ndarray,
                              member_ids: Sequence[str], *, per_prototype: int = 3,
                              budget: int | None = None) -> list[Anchor]:
    """Anchors of one prototype given its members' vectors (n, d) in `member_ids` order."""
    v = np.asarray(member_vectors, np.float32)
    if len(v) != len(member_ids):
        raise ExploreError(f"prototype {prototype.prototype_id}: {len(v)} vectors for "
                           f"{len(member_ids)} members")
    k = min(per_prototype, len(v), per_prototype if budget is None else budget)
    if k <= 0:
        return []
    medoid = prototype.medoid_item_id
    if medoid is not None and medoid in member_ids and not prototype.is_noise:
        start = list(member_ids).index(medoid)
    else:
        start = int(np.linalg.norm(v - np.asarray(prototype.centroid, np.float32), axis=1).argmin()) \
            if len(prototype.centroid) == v.shape[1] else 0
    return [Anchor(prototype.prototype_id, a, member_ids[i], v[i].copy())
            for a, i in enumerate(farthest_point_order(v, k, start))]


def anchor_queries(anchors: Sequence[Anchor]) -> np.ndarray:
    """(Q, d) float32 query matrix, row q = anchors[q]."""
    if not anchors:
        return np.zeros((0, 0), np.float32)
    return np.ascontiguousarray(np.stack([a.vector for a in anchors]), dtype=np.float32)


def retrieval_k(budgets: Mapping[str, int], anchors: Sequence[Anchor], *, n_excluded: int = 0,
                oversample: float = 4.0, k_min: int = 16, k_max: int = 4096) -> int:
    """Neighbours to fetch per anchor: enough that each prototype's share survives exclusion,
    de-duplication and the diversity filter (`oversample` x share / anchors, plus the number of
    already-excluded items that could occupy the top ranks, capped by `k_max`)."""
    per: dict[str, int] = {}
    for a in anchors:
        per[a.prototype_id] = per.get(a.prototype_id, 0) + 1
    need = max([math.ceil(oversample * budgets.get(pid, 0) / n) for pid, n in per.items()] or [0])
    return int(min(k_max, max(k_min, need + n_excluded)))


# --------------------------------------------------------------------------------------------
# Candidate selection
# --------------------------------------------------------------------------------------------

def _missing(key: Any) -> bool:
    return key is None or (isinstance(key, str) and key == "") or (
        isinstance(key, (int, np.integer)) and int(key) < 0)


def _vector_getter(vectors) -> Callable[[list], np.ndarray] | None:
    if vectors is None:
        return None
    if callable(vectors):
        return lambda keys: np.asarray(vectors(keys), np.float32)
    return lambda keys: np.stack([np.asarray(vectors[k], np.float32) for k in keys])


def select_candidates(anchors: Sequence[Anchor], knn_ids: np.ndarray, knn_distances: np.ndarray,
                      budgets: Mapping[str, int], *,
                      vectors: Mapping[Hashable, np.ndarray] | Callable[[list], np.ndarray] | None = None,
                      exclude: Iterable[Hashable] = (), reference_vectors: np.ndarray | None = None,
                      near_duplicate_distance: float = 1e-3, diversity: float = 0.3,
                      redistribute: bool = True) -> list[Candidate]:
    """Choose the pool images to score from kNN results.

    `knn_ids` (Q, k): image ids (str; None / "" / -1 = no hit) returned for ``anchors[q]``;
    `knn_distances` (Q, k): their Euclidean distances. `budgets`: prototype id -> number of
    candidates. `vectors`: image id -> embedding (mapping or callable on a list of ids), needed
    for near-duplicate removal within the batch and for diversity; without it only the id-level
    filters and distance order apply. `exclude`: ids already labelled, queued or in the eval set.
    `reference_vectors` (M, d): e.g. eval-set embeddings; hits closer than
    `near_duplicate_distance` to any of them are dropped too (leakage guard).
    `diversity` in [0, 1]: 0 = nearest first; higher trades closeness for spread (MMR score
    ``(1 - diversity) * closeness + diversity * novelty``, both scaled to [0, 1]).

    Each image goes to at most one prototype: the one with its nearest anchor (ties: the larger
    budget). Returns candidates ordered by prototype (budget order), then rank."""
    if not 0.0 <= diversity <= 1.0:
        raise ExploreError(f"select_candidates: diversity must be in [0, 1], got {diversity}")
    ids = np.asarray(knn_ids, dtype=object)
    dist = np.asarray(knn_distances, dtype=np.float64)
    if ids.shape != dist.shape or ids.ndim != 2 or len(ids) != len(anchors):
        raise ExploreError(f"select_candidates: knn ids {ids.shape} and distances {dist.shape} "
                           f"must both be (Q={len(anchors)}, k)")
    unknown = sorted({a.prototype_id for a in anchors} - set(budgets))
    if unknown:
        raise ExploreError(f"select_candidates: anchors of prototypes without a budget: {unknown[:3]}")
    excluded = set(exclude)

    # best (distance, anchor) of every surviving image per prototype, and its overall best owner
    best: dict[Hashable, tuple[float, int, str, int]] = {}  # key -> (dist, -budget, pid, anchor)
    for q, a in enumerate(anchors):
        b = int(budgets.get(a.prototype_id, 0))
        for key, d in zip(ids[q], dist[q]):
            key = key.item() if isinstance(key, np.generic) else key
            if _missing(key) or key in excluded or not np.isfinite(d):
                continue
            entry = (float(d), -b, a.prototype_id, a.anchor)
            if key not in best or entry < best[key]:
                best[key] = entry
    if not best:
        return []
    keys = list(best)
    get = _vector_getter(vectors)
    vecs = get(keys) if get is not None else None
    if vecs is not None and vecs.shape[0] != len(keys):
        raise ExploreError(f"select_candidates: vector lookup returned {vecs.shape[0]} rows for "
                           f"{len(keys)} ids")
    keep = np.ones(len(keys), bool)
    if vecs is not None and reference_vectors is not None and len(reference_vectors):
        import faiss
        ref = np.ascontiguousarray(reference_vectors, np.float32)
        d2, _ = faiss.knn(np.ascontiguousarray(vecs, np.float32), ref, 1)
        keep &= np.sqrt(np.maximum(d2[:, 0], 0)) >= near_duplicate_distance

    pools: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        if keep[i]:
            pools.setdefault(best[key][2], []).append(i)
    for pid in pools:
        pools[pid].sort(key=lambda i: (best[keys[i]][0], str(keys[i])))

    order = sorted(budgets, key=lambda pid: (-budgets[pid], pid))
    by_proto: dict[str, list[int]] = {pid: [] for pid in order}
    taken = np.zeros(len(keys), bool)
    # novelty is measured against everything chosen so far (across prototypes); scale = the
    # spread of the candidate distances, so both MMR terms live in [0, 1]
    all_d = np.array([best[k][0] for k in keys])
    scale = max(float(np.percentile(all_d, 90)) if len(all_d) else 1.0, 1e-6)

    close_all = 1.0 - np.minimum(all_d / scale, 1.0)
    # distance of every retrieved image to its nearest chosen image, updated after each pick
    dmin = np.full(len(keys), np.inf)

    def take(pid: str, j: int) -> None:
        nonlocal dmin
        taken[j] = True
        by_proto[pid].append(j)
        if vecs is not None:
            dmin = np.minimum(dmin, np.linalg.norm(vecs - vecs[j], axis=1))
            taken[dmin < near_duplicate_distance] = True  # near-duplicates of a chosen image

    def pick(pid: str, n: int) -> int:
        pool = np.asarray(pools.get(pid, []), dtype=np.int64)
        got = 0
        while got < n:
            pool = pool[~taken[pool]]
            if not len(pool):
                break
            if vecs is None or diversity == 0.0:
                j = int(pool[0])  # pools are sorted nearest first
            else:
                score = (1.0 - diversity) * close_all[pool] + diversity * np.minimum(
                    dmin[pool] / scale, 1.0)
                j = int(pool[int(score.argmax())])
            take(pid, j)
            got += 1
        return got

    shortfall = 0
    for pid in order:
        shortfall += budgets[pid] - pick(pid, int(budgets[pid]))
    if redistribute and shortfall > 0:
        # second pass: prototypes with leftover neighbourhoods take the unused shares, heaviest first
        for pid in order:
            if shortfall <= 0:
                break
            shortfall -= pick(pid, shortfall)

    out: list[Candidate] = []
    for pid in order:
        for rank, i in enumerate(by_proto[pid]):
            d, _, _, anchor = best[keys[i]]
            out.append(Candidate(image_id=keys[i], prototype_id=pid, anchor=int(anchor),
                                 distance=float(d), rank=rank))
    return out
