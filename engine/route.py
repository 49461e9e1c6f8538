"""Route: candidates -> annotation lanes by predictive entropy, within a round budget.

Lanes (costs in cost units per item from :class:`medq.settings.LaneSettings`):

- ``expert``: full annotation, for normalized entropy >= ``expert_entropy``,
- ``verify``: accept or correct the model's pre-annotation, for entropies in between,
- ``auto``: pseudo-label from the model, for entropy < the auto threshold (``auto_entropy``, or
  a tightened value from :func:`adapt_auto_threshold`).

Rules on top of the thresholds:

- **Confidently wrong**: a low-entropy candidate whose embedding lies within
  ``confidently_wrong_distance x radius`` of a (non-noise) failure prototype's centroid sits where
  the model is known to fail while being sure of itself; it never goes to ``auto`` and is promoted
  to ``verify``. The residual noise prototype is ignored (its centroid/radius describe no
  neighbourhood).
- **Spot checks**: a seeded random share (``spot_check_rate``, rounded up) of the ``auto`` lane is
  routed through ``verify`` with ``spot_check=True``; their outcomes feed
  :func:`adapt_auto_threshold`. The draw hashes (seed, image id), so it does not depend on input
  order and is the same when a crashed round is re-run.

Budget policy (documented order, greedy, each item costs its lane's cost): the round budget is
spent on (1) spot checks (the safety net of the free lane comes first), (2) the human lanes
(``expert`` and ``verify``) in the order set by ``lanes.expert_order``, (3) ``auto`` by ascending
entropy. Items that do not fit are *deferred* (not routed this round; they are not silently
downgraded to a cheaper lane, which would give the most uncertain items the weakest labels). A
spot check that does not fit leaves its item in ``auto`` unchecked (recorded in its reason).

``lanes.expert_order`` decides which human-lane items the budget funds first:

- ``entropy``: ``expert`` by descending entropy, then ``verify`` (confidently-wrong promotions
  first, then by descending entropy); within a lane filling stops at the first item that no
  longer fits and the next (cheaper) lane is still tried.
- ``prototype``: one sequence of expert and verify items **apportioned over the failure
  prototypes** the candidates were retrieved for, so that any prefix of it - whatever the budget
  buys - gives each prototype a share proportional to its budget weight (error mass); most
  uncertain first within a prototype (Webster / Sainte-Lague sequence: the j-th item of prototype
  g has key (j + 1/2) / weight_g). An item that does not fit is deferred and the walk goes on (a
  cheaper verify item further down may still fit).
- ``retrieval``: the same, but within a prototype in retrieval order (the explore step's rank:
  nearest to the failure anchors first, diversified). The failure mode decides *which items
  first*, entropy decides *how much human effort* each gets (expert, verify or auto).

Why not entropy alone: a model is often *confidently* wrong on the rare failure modes retrieval
found, so "highest entropy first" spends the budget on the uncertain common cases and labels few
of the rare ones (measured in ``benchmarks/README.md``). Without prototype ids the order falls
back to ``entropy``.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from medq.engine.discover import Prototype
from medq.errors import MedQError

LANES: tuple[str, ...] = ("expert", "verify", "auto")


class RouteError(MedQError):
    """Routing inputs that do not fit together or lane settings that make no sense."""


@dataclass
class Route:
    """The lane of one candidate. `entropy` in [0, 1] (1 = uniform over the options); `cost` in
    cost units; `spot_check`: an auto-lane item checked through verify; `reason`: why this lane;
    `prototype_id`: the failure prototype that triggered the confidently-wrong rule (else None)."""

    image_id: str
    lane: str
    entropy: float
    cost: float
    spot_check: bool = False
    reason: str = ""
    prototype_id: str | None = None

    def to_row(self, round_id: str) -> dict:
        """Row of the catalog's ``routes`` table."""
        return {"round_id": round_id, "image_id": self.image_id, "lane": self.lane,
                "entropy": float(self.entropy), "cost": float(self.cost),
                "spot_check": bool(self.spot_check), "reason": self.reason}


@dataclass
class Deferred:
    """A candidate that did not fit in the budget (its intended lane and entropy)."""

    image_id: str
    lane: str
    entropy: float
    reason: str


@dataclass
class RoutingResult:
    routes: list[Route]
    deferred: list[Deferred]
    spend: float
    budget: float | None
    auto_threshold: float
    by_lane: dict[str, dict[str, float]] = field(default_factory=dict)

    def rows(self, round_id: str) -> list[dict]:
        return [r.to_row(round_id) for r in self.routes]


# --------------------------------------------------------------------------------------------
# Entropy
# --------------------------------------------------------------------------------------------

def normalized_entropy(probs: Mapping[str, float] | Sequence[float] | np.ndarray) -> float:
    """Shannon entropy of an option distribution divided by log(K) (K = number of options):
    0 = certain, 1 = uniform. Probabilities are renormalized; K <= 1 gives 0."""
    p = np.asarray(list(probs.values()) if isinstance(probs, Mapping) else probs, np.float64)
    if p.ndim != 1 or not np.isfinite(p).all() or (p < 0).any():
        raise RouteError(f"normalized_entropy: expected finite non-negative probabilities, got {p}")
    k = len(p)
    total = p.sum()
    if k <= 1:
        return 0.0
    if total <= 0:
        raise RouteError("normalized_entropy: probabilities sum to 0")
    p = p / total
    nz = p[p > 0]
    return float(min(1.0, max(0.0, -(nz * np.log(nz)).sum() / math.log(k))))


# --------------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------------

def _unit_hash(seed: int, key: str) -> float:
    h = hashlib.sha256(f"{seed}|{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2 ** 64


def _lanes_settings(settings):
    return getattr(settings, "lanes", settings)


def near_failure(vectors: np.ndarray, prototypes: Sequence[Prototype], factor: float
                 ) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """For each row of `vectors` (n, d): whether it lies within ``factor x radius`` of a non-noise
    prototype centroid, the smallest distance/radius ratio and that prototype's id."""
    n = len(vectors)
    protos = [p for p in prototypes if not p.is_noise and len(p.centroid)]
    if n == 0 or not protos or factor <= 0:
        return np.zeros(n, bool), np.full(n, np.inf), [None] * n
    c = np.stack([np.asarray(p.centroid, np.float64) for p in protos])
    if c.shape[1] != vectors.shape[1]:
        raise RouteError(f"route: candidate vectors have d={vectors.shape[1]} but prototype "
                         f"centroids d={c.shape[1]} (different embedder?)")
    r = np.array([max(p.radius, 1e-9) for p in protos])
    v = np.asarray(vectors, np.float64)
    d = np.sqrt(np.maximum((v * v).sum(1)[:, None] + (c * c).sum(1)[None] - 2 * v @ c.T, 0))
    ratio = d / r[None]
    j = ratio.argmin(1)
    best = ratio[np.arange(n), j]
    # relative tolerance: float32 embeddings should not flip the rule exactly at the boundary
    return best <= factor * (1 + 1e-6), best, [protos[i].prototype_id for i in j]


def stratified_order(ids: Sequence[str], within: Mapping[str, tuple],
                     group_of: Mapping[str, str | None], weights: Mapping[str | None, float]
                     ) -> list[str]:
    """`ids` interleaved over their groups in proportion to the groups' weights (Webster /
    Sainte-Lague apportionment: the j-th item of group g, in the order of its `within` sort key,
    gets key (j + 1/2) / w_g; the sequence is sorted by that key, ties by `within`, then id).
    Every prefix of the result splits its length over the groups as the weights do, up to
    rounding (a little over one item off the exact quota at worst). A group of weight <= 0 (or
    unknown to `weights`) comes after every group of positive weight."""
    by_group: dict[str | None, list[str]] = {}
    for iid in ids:
        by_group.setdefault(group_of.get(iid), []).append(iid)
    keyed = []
    for g, members in by_group.items():
        w = float(weights.get(g, 0.0))
        members.sort(key=lambda k: (within[k], k))
        for j, iid in enumerate(members):
            # weightless groups after all weighted ones, still in their own order
            key = (0, (j + 0.5) / w) if w > 0 else (1, float(j))
            keyed.append((key, within[iid], iid))
    return [iid for _, _, iid in sorted(keyed)]


def route_candidates(image_ids: Sequence[str], entropies: Sequence[float] | np.ndarray,
                     settings, *, budget: float | None, vectors: np.ndarray | None = None,
                     prototypes: Sequence[Prototype] = (), auto_threshold: float | None = None,
                     prototype_of: Sequence[str | None] | None = None,
                     retrieval_rank: Sequence[int] | None = None,
                     seed: int = 0) -> RoutingResult:
    """Assign lanes (see module docstring for thresholds, rules and the budget policy).

    `entropies` (n,) normalized entropies in [0, 1] (see :func:`normalized_entropy`), higher =
    more uncertain. `settings`: :class:`LaneSettings` or the whole settings tree. `budget` in cost
    units (None = unlimited). `vectors` (n, d): candidate embeddings, needed for the
    confidently-wrong rule together with `prototypes`. `auto_threshold` overrides
    ``lanes.auto_entropy`` (e.g. after :func:`adapt_auto_threshold`). `prototype_of` (n,): the
    prototype each candidate was retrieved for (None = unknown) and `retrieval_rank` (n,) its
    selection order within that prototype (0 = first); with `prototypes` they set the order in
    which the budget funds the human lanes (``lanes.expert_order``, see the module docstring)."""
    lanes = _lanes_settings(settings)
    ids = list(image_ids)
    e = np.asarray(entropies, np.float64)
    if e.shape != (len(ids),):
        raise RouteError(f"route: {len(ids)} image ids but entropies of shape {e.shape}")
    if len(set(ids)) != len(ids):
        raise RouteError("route: duplicate image ids among candidates")
    if len(e) and (not np.isfinite(e).all() or e.min() < 0 or e.max() > 1 + 1e-9):
        raise RouteError("route: entropies must be normalized to [0, 1]")
    if budget is not None and budget < 0:
        raise RouteError(f"route: budget must be >= 0, got {budget}")
    for name, seq in (("prototype ids", prototype_of), ("retrieval ranks", retrieval_rank)):
        if seq is not None and len(seq) != len(ids):
            raise RouteError(f"route: {len(ids)} image ids but {len(seq)} {name}")
    order = lanes.expert_order if prototype_of is not None and prototypes else "entropy"
    if order == "retrieval" and retrieval_rank is None:
        raise RouteError("route: lanes.expert_order 'retrieval' needs the candidates' retrieval ranks")
    auto_t = lanes.auto_entropy if auto_threshold is None else float(auto_threshold)
    if not 0 <= auto_t <= lanes.expert_entropy:
        raise RouteError(f"route: auto threshold {auto_t} must be in [0, expert_entropy="
                         f"{lanes.expert_entropy}]")
    cost = {"expert": lanes.expert_cost, "verify": lanes.verify_cost, "auto": lanes.auto_cost}

    if vectors is not None and len(ids):
        v = np.asarray(vectors, np.float64)
        if v.ndim != 2 or len(v) != len(ids):
            raise RouteError(f"route: vectors must be (n={len(ids)}, d), got {v.shape}")
        near, ratio, near_pid = near_failure(v, prototypes, lanes.confidently_wrong_distance)
    else:
        near, ratio, near_pid = np.zeros(len(ids), bool), np.full(len(ids), np.inf), [None] * len(ids)

    plan: dict[str, dict[str, Any]] = {}
    auto_ids: list[str] = []
    for i, (iid, h) in enumerate(zip(ids, e)):
        if h >= lanes.expert_entropy:
            plan[iid] = {"lane": "expert", "reason": f"entropy {h:.3f} >= expert threshold "
                                                     f"{lanes.expert_entropy:.3f}"}
        elif h >= auto_t:
            plan[iid] = {"lane": "verify", "reason": f"entropy {h:.3f} between auto {auto_t:.3f} "
                                                     f"and expert {lanes.expert_entropy:.3f}"}
        elif near[i]:
            plan[iid] = {"lane": "verify", "promoted": True, "prototype_id": near_pid[i],
                         "reason": f"low entropy {h:.3f} but {ratio[i]:.2f} x radius from failure "
                                   f"prototype {near_pid[i]} (<= "
                                   f"{lanes.confidently_wrong_distance:g}): likely confidently wrong"}
        else:
            plan[iid] = {"lane": "auto", "reason": f"entropy {h:.3f} < auto threshold {auto_t:.3f}"}
            auto_ids.append(iid)
        plan[iid]["entropy"] = float(h)

    n_spot = math.ceil(lanes.spot_check_rate * len(auto_ids)) if auto_ids else 0
    spot = set(sorted(auto_ids, key=lambda k: (_unit_hash(seed, k), k))[:n_spot])

    remaining = math.inf if budget is None else float(budget)
    routes: list[Route] = []
    deferred: list[Deferred] = []

    def fits(c: float) -> bool:
        return c <= remaining + 1e-9

    # (1) spot checks
    for iid in sorted(spot, key=lambda k: (plan[k]["entropy"], k)):
        p = plan[iid]
        if fits(cost["verify"]):
            remaining -= cost["verify"]
            routes.append(Route(iid, "verify", p["entropy"], cost["verify"], True,
                                f"spot-check of auto ({p['reason']})"))
            p["done"] = True
        else:
            p["reason"] += "; spot-check not funded by the budget"
    # (2) expert, (3) verify, (4) auto - or, ordered by failure mode, (2+3) one human sequence
    orders = {
        "expert": lambda k: (-plan[k]["entropy"], k),
        "verify": lambda k: (not plan[k].get("promoted", False), -plan[k]["entropy"], k),
        "auto": lambda k: (plan[k]["entropy"], k),
    }

    def members(*lanes_: str) -> list[str]:
        return sorted((k for k, p in plan.items() if p["lane"] in lanes_ and not p.get("done")),
                      key=orders[lanes_[0]])

    if order == "entropy":
        sequences = [(members("expert"), True), (members("verify"), True)]
    else:
        assert prototype_of is not None  # an order other than "entropy" needs it (see above)
        rank = {}
        if order == "retrieval":
            assert retrieval_rank is not None  # checked above
            rank = dict(zip(ids, retrieval_rank))
        human = members("expert", "verify")
        within = {k: (math.inf if rank[k] is None else rank[k], -plan[k]["entropy"])
                  if order == "retrieval" else (-plan[k]["entropy"],) for k in human}
        sequences = [(stratified_order(human, within, dict(zip(ids, prototype_of)),
                                       {p.prototype_id: p.weight for p in prototypes}), False)]
    sequences.append((members("auto"), True))
    for sequence, close_on_miss in sequences:
        open_seq = True
        for iid in sequence:
            p = plan[iid]
            c = cost[p["lane"]]
            if open_seq and fits(c):
                remaining -= c
                routes.append(Route(iid, p["lane"], p["entropy"], c, False, p["reason"],
                                    p.get("prototype_id")))
            else:
                # one lane, one cost: the first miss closes it; a mixed sequence goes on, a
                # cheaper verify item further down may still fit
                open_seq = open_seq and not close_on_miss
                deferred.append(Deferred(iid, p["lane"], p["entropy"], "round budget spent"))

    spend = float(sum(r.cost for r in routes))
    by_lane: dict[str, dict[str, float]] = {}
    for lane in LANES:
        rs = [r for r in routes if r.lane == lane]
        by_lane[lane] = {"n": len(rs), "spend": float(sum(r.cost for r in rs)),
                         "spot_checks": sum(r.spot_check for r in rs)}
    return RoutingResult(routes, deferred, spend, budget, auto_t, by_lane)


# --------------------------------------------------------------------------------------------
# Spot-check feedback
# --------------------------------------------------------------------------------------------

@dataclass
class ThresholdUpdate:
    """Outcome of :func:`adapt_auto_threshold`: the threshold to use next round and why."""

    threshold: float
    previous: float
    disagreement: float | None
    n_checks: int
    tightened: bool
    reason: str


def _agreed(result: Any) -> bool:
    if isinstance(result, (bool, np.bool_)):
        return bool(result)
    if isinstance(result, Mapping):
        return bool(result["agreed"])
    return bool(result.agreed)


def adapt_auto_threshold(spot_check_results: Sequence[Any], settings, *,
                         current: float | None = None, min_checks: int = 5,
                         max_step: float = 0.8) -> ThresholdUpdate:
    """Tighten the auto threshold when spot checks disagree too often.

    `spot_check_results`: one entry per finished spot check: a bool (True = the verifier agreed
    with the auto pseudo-label) or a record/mapping with an ``agreed`` field. With at least
    `min_checks` results and a disagreement rate above ``spot_check_max_disagreement``, the
    threshold is multiplied by ``min(limit / rate, max_step)`` (at least a 20 % cut by default,
    more the worse the disagreement); otherwise it is kept. It is never raised here: relaxing
    the auto lane is a human decision."""
    lanes = _lanes_settings(settings)
    prev = lanes.auto_entropy if current is None else float(current)
    results = [_agreed(r) for r in spot_check_results]
    n = len(results)
    if n == 0:
        return ThresholdUpdate(prev, prev, None, 0, False, "no spot checks: threshold kept")
    rate = 1.0 - sum(results) / n
    limit = lanes.spot_check_max_disagreement
    if n < min_checks:
        return ThresholdUpdate(prev, prev, rate, n, False,
                               f"only {n} spot checks (< {min_checks}): threshold kept")
    if rate <= limit:
        return ThresholdUpdate(prev, prev, rate, n, False,
                               f"spot-check disagreement {rate:.0%} <= limit {limit:.0%}: kept")
    factor = min(limit / rate, max_step) if rate > 0 else max_step
    new = max(0.0, prev * factor)
    return ThresholdUpdate(new, prev, rate, n, True,
                           f"spot-check disagreement {rate:.0%} > limit {limit:.0%} on {n} checks: "
                           f"auto threshold {prev:.3f} -> {new:.3f}")
