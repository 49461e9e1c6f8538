"""Discover: a round's failures -> clusters -> failure prototypes.

Input: the failures of a round (wrong MCQ answers, low description scores) as :class:`Failure`
records and their embeddings (N, d) from :mod:`medq.engine.embed` (one row per failure, same order).

Steps:

1. reduce the embeddings with PCA to `reduce_dims` (HDBSCAN on 32-128 dimensions finds little;
   UMAP is deliberately not used: not installed, and PCA is deterministic and cheap),
2. HDBSCAN (``min_cluster_size`` from ``settings.loop``, ``core_dist_n_jobs=2``) on the reduced
   points,
3. back in the embedding space, noise points at a cluster's own spacing join it
   (:func:`attach_noise`; HDBSCAN keeps only the dense core of small compact clusters) and
   members far outside their cluster are moved to noise (:func:`trim_outliers`),
4. one :class:`Prototype` per cluster, with geometry measured back in the *embedding* space (the
   space of the pool index): centroid (member mean), medoid (member with the least summed distance
   to the others), radius (90th percentile of member-to-centroid distances, floored by the typical
   nearest-neighbour spacing of the failures so that tight clusters keep a usable radius), and
   error mass (sum of member severities, higher = worse).

Noise points (HDBSCAN label -1) are handled explicitly: they are grouped into **one residual
prototype flagged** ``is_noise``. Its error mass is the full sum of its members' severities (so the
masses of all prototypes add up to the round's total error mass, for audit), but its *budget weight*
is multiplied by ``noise_weight`` (default 0.5): scattered failures are worth exploring, but each
is less likely to generalize than a dense cluster. Retrieval from it uses farthest-point member
anchors (see :mod:`medq.engine.explore`), never its centroid, and the confidently-wrong routing rule
ignores it (its centroid and radius describe no real neighbourhood). In the failures table its
members keep ``prototype_id = NULL`` (the schema's convention for noise).

Small inputs never crash: no failures -> no prototypes; fewer than ``min_cluster_size`` failures ->
one ordinary prototype with all of them; HDBSCAN finding no cluster -> only the residual prototype.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from medq.engine.taxonomy import LEVELS
from medq.errors import MedQError

RADIUS_PERCENTILE = 90.0
_EXACT_MEDOID_MAX = 2000   # above this many members the medoid is searched among a sample


class DiscoveryError(MedQError):
    """Failures and embeddings do not fit together (shapes, ids, values)."""


@dataclass
class Failure:
    """One failed eval item of a round.

    `kind`: ``wrong_mcq`` | ``low_description``. `severity` >= 0, higher = worse (its contribution
    to error mass). `degradations`: [{"type": str, "level": 1|2}] of the item's image (empty for a
    clean image or when unknown)."""

    item_id: str
    image_id: str
    kind: str
    severity: float = 1.0
    modality: str | None = None
    degradations: list[dict] = field(default_factory=list)
    question_type: str | None = None

    def to_row(self, round_id: str, prototype_id: str | None) -> dict:
        """Row of the catalog's ``failures`` table."""
        return {"round_id": round_id, "item_id": self.item_id, "kind": self.kind,
                "severity": float(self.severity), "prototype_id": prototype_id}


@dataclass
class Prototype:
    """A cluster of failures, used as a retrieval anchor and as a routing hazard.

    `centroid` (d,) and `radius` are in the embedding space (Euclidean). `member_index` are row
    positions in the failure array given to :func:`discover_prototypes` (in-memory only; not
    persisted). `weight` is the budget weight (error mass, times ``noise_weight`` for noise)."""

    prototype_id: str
    round_id: str
    members: list[str]
    member_index: list[int]
    medoid_index: int | None
    medoid_item_id: str | None
    medoid_image_id: str | None
    centroid: np.ndarray
    error_mass: float
    radius: float
    modality: str | None
    degradation: str | None
    degradation_level: int | None
    question_type: str | None
    summary: str
    is_noise: bool = False
    weight: float = 0.0

    @property
    def n_members(self) -> int:
        return len(self.members)

    def to_row(self) -> dict:
        """Row of the catalog's ``prototypes`` table (degradation stored as ``type:level``)."""
        deg = self.degradation
        if deg and self.degradation_level is not None:
            deg = f"{deg}:{self.degradation_level}"
        return {"prototype_id": self.prototype_id, "round_id": self.round_id,
                "medoid_item_id": self.medoid_item_id, "medoid_image_id": self.medoid_image_id,
                "centroid": [float(x) for x in self.centroid], "members": list(self.members),
                "n_members": self.n_members, "error_mass": float(self.error_mass),
                "radius": float(self.radius), "modality": self.modality, "degradation": deg,
                "question_type": self.question_type, "summary": self.summary,
                "is_noise": bool(self.is_noise)}

    @classmethod
    def from_row(cls, row: Mapping[str, Any], *, noise_weight: float = 0.5) -> "Prototype":
        """Rebuild from a catalog row (JSON columns as text or already decoded). `member_index`
        and `medoid_index` are unknown after a round trip (empty / None)."""
        import json

        def dec(v):
            return json.loads(v) if isinstance(v, str) else v
        deg, level = row.get("degradation"), None
        if deg and ":" in deg:
            deg, lvl = deg.rsplit(":", 1)
            level = int(lvl) if lvl.isdigit() else None
        is_noise = bool(row.get("is_noise"))
        mass = float(row.get("error_mass") or 0.0)
        return cls(prototype_id=row["prototype_id"], round_id=row["round_id"],
                   members=list(dec(row.get("members")) or []), member_index=[],
                   medoid_index=None, medoid_item_id=row.get("medoid_item_id"),
                   medoid_image_id=row.get("medoid_image_id"),
                   centroid=np.asarray(dec(row.get("centroid")) or [], np.float32),
                   error_mass=mass, radius=float(row.get("radius") or 0.0),
                   modality=row.get("modality"), degradation=deg, degradation_level=level,
                   question_type=row.get("question_type"), summary=row.get("summary") or "",
                   is_noise=is_noise, weight=mass * (noise_weight if is_noise else 1.0))


@dataclass
class DiscoveryResult:
    """Prototypes (ordered by descending error mass, residual noise last), the prototype of each
    failure (None for noise), HDBSCAN labels (-1 = noise) and the reduced points (N, r)."""

    prototypes: list[Prototype]
    assignment: dict[str, str | None]
    labels: np.ndarray
    reduced: np.ndarray

    def failure_rows(self, round_id: str, failures: Sequence[Failure]) -> list[dict]:
        return [f.to_row(round_id, self.assignment.get(f.item_id)) for f in failures]

    def prototype_rows(self) -> list[dict]:
        return [p.to_row() for p in self.prototypes]


# --------------------------------------------------------------------------------------------
# Severity helpers (callers turn predictions into failures with these)
# --------------------------------------------------------------------------------------------

def mcq_severity(probs: Mapping[str, float], gold: str) -> float:
    """Severity of a wrong MCQ answer in [0, 1]: 1 - p(gold). A confident wrong answer weighs
    more than a near-miss."""
    return float(min(1.0, max(0.0, 1.0 - float(probs.get(gold, 0.0)))))


def description_severity(score: float, fail_below: float) -> float:
    """Severity of a low description score (0-8 scale) in (0, 1]: relative shortfall below the
    failure threshold, with a floor of 0.1 so every failure counts."""
    if fail_below <= 0:
        return 1.0
    return float(min(1.0, max(0.1, (fail_below - float(score)) / fail_below)))


def _json(value: Any, default: Any) -> Any:
    import json
    if value is None or value == "":
        return default
    return json.loads(value) if isinstance(value, str) else value


def failures_from_predictions(predictions: Iterable[Mapping[str, Any]],
                              items: Mapping[str, Mapping[str, Any]], *,
                              description_fail_below: float = 4.0) -> list[Failure]:
    """A round's failures from its eval predictions (rows of the ``predictions`` table) and
    the eval items they refer to (``items`` rows by item id).

    ``mcq`` rows with ``correct`` false -> ``wrong_mcq`` (severity :func:`mcq_severity`);
    ``description`` rows with ``score`` below `description_fail_below` (0-8 scale) ->
    ``low_description`` (severity :func:`description_severity`). Paired items are not clustered
    (two images, no single embedding). JSON columns may be text or decoded. Output is sorted by
    item id so that it does not depend on query order."""
    out: list[Failure] = []
    for row in predictions:
        item = items.get(row["item_id"])
        if item is None:
            raise DiscoveryError(f"prediction for unknown item {row['item_id']!r}")
        kind = row.get("kind") or item.get("kind")
        if kind == "mcq" and row.get("correct") is False:
            probs = _json(row.get("probs"), {})
            sev = mcq_severity(probs, item.get("answer") or "") if probs else 1.0
            fkind = "wrong_mcq"
        elif kind == "description" and row.get("score") is not None and \
                float(row["score"]) < description_fail_below:
            sev = description_severity(float(row["score"]), description_fail_below)
            fkind = "low_description"
        else:
            continue
        out.append(Failure(item_id=row["item_id"], image_id=item["image_id"], kind=fkind,
                           severity=sev, modality=item.get("modality"),
                           degradations=list(_json(item.get("degradations"), [])),
                           question_type=item.get("question_type")))
    return sorted(out, key=lambda f: f.item_id)


# --------------------------------------------------------------------------------------------
# Clustering
# --------------------------------------------------------------------------------------------

def reduce_dimensions(x: np.ndarray, dims: int, *, seed: int = 0) -> np.ndarray:
    """PCA of (N, d) to (N, min(dims, d, N - 1)); unchanged when no reduction is possible."""
    n, d = x.shape
    r = min(dims, d, n - 1)
    if r >= d or r < 1:
        return x.astype(np.float64)
    from sklearn.decomposition import PCA
    return PCA(n_components=r, svd_solver="full", random_state=seed).fit_transform(
        x.astype(np.float64))


def cluster_labels(points: np.ndarray, *, min_cluster_size: int, min_samples: int | None = None,
                   n_jobs: int = 2) -> np.ndarray:
    """HDBSCAN labels (N,) int, -1 = noise. Fewer points than `min_cluster_size`: all noise."""
    n = len(points)
    if n < max(min_cluster_size, 2):
        return np.full(n, -1, dtype=np.int64)
    import hdbscan

    def fit(single: bool) -> np.ndarray:
        clusterer = hdbscan.HDBSCAN(min_cluster_size=int(min_cluster_size),
                                    min_samples=None if min_samples is None else int(min_samples),
                                    allow_single_cluster=single, core_dist_n_jobs=n_jobs)
        return clusterer.fit_predict(points).astype(np.int64)
    # Several failure modes must stay several prototypes: with allow_single_cluster HDBSCAN's
    # excess-of-mass selection often picks the root and merges them into one "mixed" cluster.
    # Only when the default finds nothing at all (one failure mode: HDBSCAN never selects the
    # root) is the single cluster allowed, so that mode still yields its prototype.
    labels = fit(False)
    return labels if (labels >= 0).any() else fit(True)


ATTACH_FACTOR = 1.5


def attach_noise(x: np.ndarray, labels: np.ndarray, factor: float = ATTACH_FACTOR) -> np.ndarray:
    """Give noise points that sit at a cluster's own spacing to that cluster (new labels).

    HDBSCAN keeps only the dense core of a compact cluster (on a small Gaussian blob it may keep
    a handful of points and call the rest noise). In the embedding space a noise point whose
    distance to the nearest member of a cluster is at most `factor` x that cluster's link scale
    (90th percentile of its members' nearest-member distances) belongs to it. One pass, nearest
    cluster wins; points far from every cluster stay noise."""
    import faiss
    out = labels.copy()
    noise = np.where(labels == -1)[0]
    clusters = sorted(set(labels.tolist()) - {-1})
    if not len(noise) or not clusters:
        return out
    xs = np.ascontiguousarray(x, np.float32)
    best_ratio = np.full(len(noise), np.inf)
    best_label = np.full(len(noise), -1)
    for lab in clusters:
        idx = np.where(labels == lab)[0]
        if len(idx) < 2:
            continue
        m = xs[idx]
        d2, _ = faiss.knn(m, m, 2)
        link = float(np.percentile(np.sqrt(np.maximum(d2[:, 1], 0)), 90))
        if link <= 0:
            continue
        dn, _ = faiss.knn(xs[noise], m, 1)
        ratio = np.sqrt(np.maximum(dn[:, 0], 0)) / link
        better = ratio < best_ratio
        best_ratio[better], best_label[better] = ratio[better], lab
    take = best_ratio <= factor
    out[noise[take]] = best_label[take]
    return out


def trim_outliers(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Move far-away members of each cluster to noise (returns new labels).

    HDBSCAN on reduced points sometimes attaches scattered points to a dense cluster (a random
    vector projects close to a cluster in few PCA dimensions). In the embedding space such a
    member lies far outside the cluster: beyond ``max(2 x median, median + 4 x 1.4826 x MAD)``
    of the members' distances to the centroid. The generous bound keeps the natural tail of
    elongated clusters."""
    out = labels.copy()
    for lab in set(labels.tolist()) - {-1}:
        idx = np.where(labels == lab)[0]
        if len(idx) < 4:
            continue
        pts = x[idx].astype(np.float64)
        d = np.linalg.norm(pts - pts.mean(0), axis=1)
        med = float(np.median(d))
        mad = float(np.median(np.abs(d - med)))
        far = d > max(2.0 * med, med + 4.0 * 1.4826 * mad)
        if far.any() and (~far).sum() >= 2:
            out[idx[far]] = -1
    return out


def _medoid(x: np.ndarray, rng: np.random.Generator) -> int:
    """Row of `x` with the least summed Euclidean distance to all rows (exact up to
    _EXACT_MEDOID_MAX rows; among a random sample of that many rows beyond)."""
    n = len(x)
    if n <= 2:
        return 0
    cand = np.arange(n) if n <= _EXACT_MEDOID_MAX else np.sort(
        rng.choice(n, _EXACT_MEDOID_MAX, replace=False))
    sq = (x * x).sum(1)
    best, best_cost = 0, np.inf
    for s in range(0, len(cand), 256):
        c = cand[s:s + 256]
        d2 = sq[c, None] + sq[None, :] - 2.0 * x[c] @ x.T
        cost = np.sqrt(np.maximum(d2, 0)).sum(1)
        j = int(cost.argmin())
        if cost[j] < best_cost:
            best, best_cost = int(c[j]), float(cost[j])
    return best


def _nn_spacing(x: np.ndarray) -> float:
    """Median distance from each failure to its nearest other failure (0 for < 2 points)."""
    if len(x) < 2:
        return 0.0
    import faiss
    xs = np.ascontiguousarray(x, dtype=np.float32)
    d2, _ = faiss.knn(xs, xs, 2)
    return float(np.median(np.sqrt(np.maximum(d2[:, 1], 0))))


def _weighted_top(counter: Mapping[Any, float]) -> tuple[Any, float]:
    total = sum(counter.values())
    if not total:
        return None, 0.0
    # ties broken by name so that results do not depend on member order
    key, value = max(counter.items(), key=lambda kv: (kv[1], str(kv[0])))
    return key, value / total


def _describe(members: Sequence[Failure], *, is_noise: bool) -> dict:
    """Dominant modality, degradation (type, level), question type and the one-line summary."""
    sev = [max(float(f.severity), 1e-6) for f in members]
    # weighted counts (float weights: a Counter is typed for int counts only)
    mod: defaultdict[str, float] = defaultdict(float)
    deg: defaultdict[str, float] = defaultdict(float)
    qt: defaultdict[str, float] = defaultdict(float)
    levels: dict[str, defaultdict[int, float]] = {}
    for f, w in zip(members, sev):
        mod[f.modality or "unknown"] += w
        if f.question_type:
            qt[f.question_type] += w
        if f.degradations:
            for d in f.degradations:
                deg[d["type"]] += w / len(f.degradations)
                levels.setdefault(d["type"], defaultdict(float))[int(d["level"])] += w
        else:
            deg["none"] += w
    modality, mod_share = _weighted_top(mod)
    degradation, deg_share = _weighted_top(deg)
    qtype, qt_share = _weighted_top(qt)
    level = None
    if degradation not in (None, "none"):
        level, _ = _weighted_top(levels[degradation])
    n = len(members)
    subject = modality if modality != "unknown" else "unknown-modality"
    if degradation == "none":
        what = f"{subject} without degradation"
    else:
        what = f"{subject} {degradation.replace('_', ' ')}"
        if level is not None:
            what += f" ({LEVELS.get(level, level)})"
    lead = "mostly" if min(mod_share, deg_share) >= 0.5 else "mixed, largest group"
    text = f"{n} failure{'s' if n != 1 else ''}, {lead} {what}"
    if qtype:
        text += f", {qtype} questions" if qt_share >= 0.5 else f", mixed questions (most {qtype})"
    if is_noise:
        text = f"Residual (unclustered): {text}"
    return {"modality": None if modality == "unknown" else modality,
            "degradation": degradation, "degradation_level": level, "question_type": qtype,
            "summary": text}


def prototype_id(round_id: str, member_ids: Sequence[str], *, noise: bool = False) -> str:
    """Stable id: hash of the round and the sorted member ids (independent of cluster labels)."""
    h = hashlib.sha256(f"{round_id}|{'noise' if noise else 'cluster'}|".encode())
    for m in sorted(member_ids):
        h.update(m.encode())
        h.update(b"\0")
    return f"proto-{h.hexdigest()[:16]}"


def _build(round_id: str, failures: Sequence[Failure], x: np.ndarray, idx: np.ndarray, *,
           is_noise: bool, radius_floor: float, noise_weight: float,
           rng: np.random.Generator) -> Prototype:
    members = [failures[i] for i in idx]
    pts = x[idx].astype(np.float64)
    centroid = pts.mean(0)
    dist = np.linalg.norm(pts - centroid, axis=1)
    radius = max(float(np.percentile(dist, RADIUS_PERCENTILE)) if len(dist) else 0.0, radius_floor)
    medoid = int(idx[_medoid(pts, rng)])
    mass = float(sum(float(f.severity) for f in members))
    info = _describe(members, is_noise=is_noise)
    ids = [f.item_id for f in members]
    return Prototype(
        prototype_id=prototype_id(round_id, ids, noise=is_noise), round_id=round_id,
        members=ids, member_index=[int(i) for i in idx], medoid_index=medoid,
        medoid_item_id=failures[medoid].item_id, medoid_image_id=failures[medoid].image_id,
        centroid=centroid.astype(np.float32), error_mass=mass, radius=radius,
        modality=info["modality"], degradation=info["degradation"],
        degradation_level=info["degradation_level"], question_type=info["question_type"],
        summary=info["summary"], is_noise=is_noise,
        weight=mass * (noise_weight if is_noise else 1.0))


def _validate(failures: Sequence[Failure], embeddings: np.ndarray) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) != len(failures):
        raise DiscoveryError(f"discover: embeddings must be (N={len(failures)}, d), got {x.shape}")
    if not np.isfinite(x).all():
        bad = int(np.where(~np.isfinite(x).all(1))[0][0])
        raise DiscoveryError(f"discover: embedding of failure {failures[bad].item_id!r} is not finite")
    seen = set()
    for f in failures:
        if f.item_id in seen:
            raise DiscoveryError(f"discover: failure item_id {f.item_id!r} appears twice")
        seen.add(f.item_id)
        if not np.isfinite(f.severity) or f.severity < 0:
            raise DiscoveryError(f"discover: failure {f.item_id!r} has severity {f.severity}; "
                                 "expected a finite value >= 0")
    return x


def discover_prototypes(round_id: str, failures: Sequence[Failure], embeddings: np.ndarray, *,
                        min_cluster_size: int = 5, reduce_dims: int = 8,
                        min_samples: int | None = None, noise_weight: float = 0.5,
                        seed: int = 0, n_jobs: int = 2) -> DiscoveryResult:
    """Cluster a round's failures into prototypes (see module docstring for the policy).

    `embeddings`: (N, d) float32, row i belongs to ``failures[i]``. Every knob is an explicit
    keyword (the loop passes its ``settings.loop`` values; nothing overrides them behind the
    caller's back). Deterministic for a given input and `seed`."""
    failures = list(failures)
    x = _validate(failures, embeddings)
    n = len(failures)
    rng = np.random.default_rng(seed)
    if n == 0:
        return DiscoveryResult([], {}, np.zeros(0, np.int64), np.zeros((0, 0)))
    reduced = reduce_dimensions(x, reduce_dims, seed=seed) if n >= 3 else x.astype(np.float64)
    radius_floor = _nn_spacing(x)
    if n < min_cluster_size:
        # too few for density clustering: one ordinary prototype holding every failure
        labels = np.zeros(n, np.int64)
    else:
        labels = cluster_labels(reduced, min_cluster_size=min_cluster_size,
                                min_samples=min_samples, n_jobs=n_jobs)
    labels = trim_outliers(x, attach_noise(x, labels))
    protos: list[Prototype] = []
    assignment: dict[str, str | None] = {}
    for lab in sorted(set(labels.tolist()) - {-1}):
        idx = np.where(labels == lab)[0]
        p = _build(round_id, failures, x, idx, is_noise=False, radius_floor=radius_floor,
                   noise_weight=noise_weight, rng=rng)
        protos.append(p)
        for i in idx:
            assignment[failures[i].item_id] = p.prototype_id
    protos.sort(key=lambda p: (-p.error_mass, p.prototype_id))
    noise_idx = np.where(labels == -1)[0]
    if len(noise_idx):
        protos.append(_build(round_id, failures, x, noise_idx, is_noise=True,
                             radius_floor=radius_floor, noise_weight=noise_weight, rng=rng))
        for i in noise_idx:
            assignment[failures[i].item_id] = None
    return DiscoveryResult(protos, assignment, labels, reduced)
