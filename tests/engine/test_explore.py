"""Retrieval planning: budget allocation, anchors, exclusion, de-duplication, diversity."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from medq.engine.discover import Failure, Prototype, discover_prototypes
from medq.engine.explore import (
    Anchor,
    ExploreError,
    allocate_budget,
    anchor_queries,
    farthest_point_order,
    k_center_greedy,
    plan_anchors,
    retrieval_k,
    select_candidates,
)


def proto(pid: str, mass: float, *, noise: bool = False, members=("a",), centroid=(0.0, 0.0)):
    return Prototype(prototype_id=pid, round_id="r", members=list(members),
                     member_index=list(range(len(members))), medoid_index=0,
                     medoid_item_id=members[0], medoid_image_id=None,
                     centroid=np.asarray(centroid, np.float32), error_mass=mass, radius=0.1,
                     modality=None, degradation=None, degradation_level=None, question_type=None,
                     summary="", is_noise=noise, weight=mass * (0.5 if noise else 1.0))


# -- budget -------------------------------------------------------------------------------------

def test_budget_proportional_largest_remainder():
    ps = [proto("a", 6.0), proto("b", 3.0), proto("c", 1.0)]
    assert allocate_budget(ps, 10) == {"a": 6, "b": 3, "c": 1}
    # quotas 6.67 / 3.33 / 0 -> largest remainder gives the extra unit to a
    assert allocate_budget(ps[:2], 10) == {"a": 7, "b": 3}
    assert allocate_budget(ps, 0) == {"a": 0, "b": 0, "c": 0}
    assert allocate_budget([], 5) == {}


def test_budget_minimum_one_for_clusters_not_noise():
    ps = [proto("big", 100.0), proto("tiny", 0.1), proto("noise", 0.2, noise=True)]
    alloc = allocate_budget(ps, 10)
    assert sum(alloc.values()) == 10 and alloc["tiny"] == 1 and alloc["big"] == 9
    assert alloc["noise"] == 0  # noise gets no guaranteed minimum
    # budget smaller than the number of clusters: the heaviest get one each
    ps = [proto("a", 5.0), proto("b", 4.0), proto("c", 3.0)]
    assert allocate_budget(ps, 2) == {"a": 1, "b": 1, "c": 0}


def test_budget_zero_weights_split_equally_and_errors():
    assert allocate_budget([proto("a", 0.0), proto("b", 0.0)], 4) == {"a": 2, "b": 2}
    with pytest.raises(ExploreError):
        allocate_budget([proto("a", 1.0)], -1)
    with pytest.raises(ExploreError):
        allocate_budget([proto("a", 1.0), proto("a", 2.0)], 3)


@hsettings(max_examples=200, deadline=None)
@given(masses=st.lists(st.floats(0.0, 100.0), min_size=1, max_size=12),
       noise=st.lists(st.booleans(), min_size=12, max_size=12), budget=st.integers(0, 500))
def test_budget_properties(masses, noise, budget):
    ps = [proto(f"p{i}", m, noise=noise[i]) for i, m in enumerate(masses)]
    alloc = allocate_budget(ps, budget)
    assert sum(alloc.values()) == budget
    assert all(v >= 0 for v in alloc.values())
    non_noise = [p for p in ps if not p.is_noise]
    if budget >= len(non_noise):
        assert all(alloc[p.prototype_id] >= 1 for p in non_noise)
    w = np.array([p.weight for p in ps])
    if w.sum() > 0:
        quota = budget * w / w.sum()
        got = np.array([alloc[p.prototype_id] for p in ps])
        fixed = sum(1 for p, q in zip(ps, quota) if not p.is_noise and q < 1)
        # each share is within one of its exact quota, up to the units moved for the minimums
        assert np.abs(got - quota).max() < 1 + fixed + 1e-9
        if (quota >= 1).all():  # no minimum adjustments: heavier never gets less
            for i in range(len(w)):
                for j in range(len(w)):
                    if w[i] > w[j]:
                        assert got[i] >= got[j]


# -- anchors ------------------------------------------------------------------------------------

def test_farthest_point_order_covers_spread():
    x = np.array([[0.0], [1.0], [2.0], [10.0], [-5.0]])
    assert farthest_point_order(x, 3, start=1) == [1, 3, 4]
    assert farthest_point_order(x, 10, start=0) == [0, 3, 4, 2, 1]
    assert farthest_point_order(np.ones((4, 2)), 3) == [0]  # identical points: one anchor


def test_plan_anchors_medoid_first_and_limited_by_budget():
    rng = np.random.default_rng(0)
    centers = np.array([[5.0, 0, 0], [0, 5.0, 0]])
    x = np.vstack([c + rng.normal(size=(12, 3)) * 0.3 for c in centers]).astype(np.float32)
    fails = [Failure(f"f{i}", f"i{i}", "wrong_mcq", 1.0) for i in range(24)]
    res = discover_prototypes("r", fails, x, min_cluster_size=5, reduce_dims=3)
    ps = [p for p in res.prototypes if not p.is_noise]
    anchors = plan_anchors(ps, x, per_prototype=3, budgets={ps[0].prototype_id: 2,
                                                           ps[1].prototype_id: 10})
    first = [a for a in anchors if a.prototype_id == ps[0].prototype_id]
    second = [a for a in anchors if a.prototype_id == ps[1].prototype_id]
    assert len(first) == 2 and len(second) == 3
    assert first[0].item_id == ps[0].medoid_item_id and first[0].anchor == 0
    # the second anchor is the member farthest from the medoid
    mem = x[ps[1].member_index]
    med = x[ps[1].medoid_index]
    far = ps[1].members[int(np.linalg.norm(mem - med, axis=1).argmax())]
    assert second[1].item_id == far
    q = anchor_queries(anchors)
    assert q.shape == (5, 3) and q.dtype == np.float32
    assert retrieval_k({ps[0].prototype_id: 2, ps[1].prototype_id: 10}, anchors) >= 14


# -- selection ----------------------------------------------------------------------------------

def _grid_pool():
    """Pool: points on a line at x = 0..19 (ids p0..p19) plus an exact duplicate of p1."""
    vecs = {f"p{i}": np.array([float(i), 0.0], np.float32) for i in range(20)}
    vecs["p1dup"] = vecs["p1"].copy()
    return vecs


def _knn(anchor_vec, vecs, k):
    ids = sorted(vecs, key=lambda i: (np.linalg.norm(vecs[i] - anchor_vec), i))[:k]
    return ids, [float(np.linalg.norm(vecs[i] - anchor_vec)) for i in ids]


def _search(anchors, vecs, k):
    ids, dist = zip(*[_knn(a.vector, vecs, k) for a in anchors])
    return np.array(ids, dtype=object), np.array(dist)


def test_exclusion_dedup_and_budget():
    vecs = _grid_pool()
    anchors = [Anchor("A", 0, "fa", np.array([0.0, 0.0], np.float32))]
    ids, dist = _search(anchors, vecs, 10)
    got = select_candidates(anchors, ids, dist, {"A": 5}, vectors=vecs, exclude={"p0", "p2"},
                            near_duplicate_distance=0.01, diversity=0.0)
    chosen = [c.image_id for c in got]
    assert len(chosen) == 5
    assert "p0" not in chosen and "p2" not in chosen
    assert not {"p1", "p1dup"} <= set(chosen)  # a near-duplicate pair contributes one image
    assert chosen == ["p1", "p3", "p4", "p5", "p6"]
    assert [c.rank for c in got] == list(range(5))
    assert all(c.prototype_id == "A" and c.anchor == 0 for c in got)


def test_missing_hits_and_reference_leakage_guard():
    vecs = _grid_pool()
    anchors = [Anchor("A", 0, "fa", np.array([0.0, 0.0], np.float32))]
    ids = np.array([["p0", None, "", "p1", "p2"]], dtype=object)
    dist = np.array([[0.0, 0.1, 0.2, 1.0, 2.0]])
    got = select_candidates(anchors, ids, dist, {"A": 5}, vectors=vecs,
                            reference_vectors=np.array([[2.0, 0.0]], np.float32),
                            near_duplicate_distance=0.01)
    assert [c.image_id for c in got] == ["p0", "p1"]  # p2 duplicates an eval vector
    ints = select_candidates(anchors, np.array([[3, -1, 4]]), np.array([[0.0, 0.1, 0.2]]),
                             {"A": 3})
    assert [c.image_id for c in ints] == [3, 4]


def test_diversity_spreads_the_batch():
    rng = np.random.default_rng(0)
    # a tight clump of 30 near the anchor and 10 points a bit further out, spread around it
    clump = {f"c{i}": (rng.normal(size=2) * 0.01).astype(np.float32) for i in range(30)}
    ring = {f"r{i}": np.array([np.cos(t), np.sin(t)], np.float32) * 0.5
            for i, t in enumerate(np.linspace(0, 2 * np.pi, 10, endpoint=False))}
    vecs = clump | ring
    anchors = [Anchor("A", 0, "fa", np.zeros(2, np.float32))]
    ids, dist = _search(anchors, vecs, 40)
    near = select_candidates(anchors, ids, dist, {"A": 8}, vectors=vecs, diversity=0.0)
    spread = select_candidates(anchors, ids, dist, {"A": 8}, vectors=vecs, diversity=0.7)
    assert all(c.image_id.startswith("c") for c in near)
    assert sum(c.image_id.startswith("r") for c in spread) >= 5

    def min_pair(cands):
        v = np.stack([vecs[c.image_id] for c in cands])
        d = np.linalg.norm(v[:, None] - v[None], axis=-1)
        return d[np.triu_indices(len(v), 1)].min()
    assert min_pair(spread) > 10 * min_pair(near)


def test_each_image_once_nearest_prototype_and_redistribution():
    vecs = _grid_pool()
    anchors = [Anchor("A", 0, "fa", np.array([0.0, 0.0], np.float32)),
               Anchor("B", 0, "fb", np.array([19.0, 0.0], np.float32)),
               Anchor("B", 1, "fb2", np.array([15.0, 0.0], np.float32))]
    ids, dist = _search(anchors, vecs, 21)
    got = select_candidates(anchors, ids, dist, {"A": 4, "B": 4}, vectors=vecs, diversity=0.0)
    images = [c.image_id for c in got]
    assert len(images) == len(set(images)) == 8
    for c in got:
        x = vecs[c.image_id][0]
        assert (c.prototype_id == "A") == (x < 7.5)  # closest anchor wins
        if c.prototype_id == "B":
            assert c.anchor == (0 if x >= 17 else 1)
    # prototype C's neighbourhood has only 2 images: its unused share goes to A
    anchors_c = anchors[:1] + [Anchor("C", 0, "fc", np.array([100.0, 0.0], np.float32))]
    ids = np.array([[f"p{i}" for i in range(12)], ["p19", "p18"] + [None] * 10], dtype=object)
    dist = np.array([list(range(12)), [81.0, 82.0] + [np.inf] * 10])
    got = select_candidates(anchors_c, ids, dist, {"A": 3, "C": 5}, vectors=vecs, diversity=0.0)
    assert sum(c.prototype_id == "C" for c in got) == 2
    assert sum(c.prototype_id == "A" for c in got) == 6
    off = select_candidates(anchors_c, ids, dist, {"A": 3, "C": 5}, vectors=vecs,
                            redistribute=False)
    assert len(off) == 5


def test_selection_input_errors():
    anchors = [Anchor("A", 0, "fa", np.zeros(2, np.float32))]
    with pytest.raises(ExploreError, match="must both be"):
        select_candidates(anchors, np.array([["a", "b"]]), np.array([[0.0]]), {"A": 1})
    with pytest.raises(ExploreError, match="without a budget"):
        select_candidates(anchors, np.array([["a"]]), np.array([[0.0]]), {"B": 1})
    with pytest.raises(ExploreError, match="diversity"):
        select_candidates(anchors, np.array([["a"]]), np.array([[0.0]]), {"A": 1}, diversity=2)


def test_k_center_greedy_picks_far_points_first():
    rng = np.random.default_rng(0)
    cluster = rng.normal(0, 0.01, (50, 2)).astype(np.float32)          # around the center
    far = np.array([[5, 0], [0, 5], [-5, 0]], np.float32)              # three outliers
    pool = np.concatenate([cluster, far])
    picks = k_center_greedy(pool, 3, centers=np.zeros((1, 2), np.float32))
    assert sorted(picks) == [50, 51, 52]
    # a labelled center sitting on an outlier removes it from the picks
    picks = k_center_greedy(pool, 2, centers=np.array([[0, 0], [5, 0]], np.float32))
    assert sorted(picks) == [51, 52]


def test_k_center_greedy_no_repeats_and_bounds():
    pool = np.random.default_rng(1).normal(size=(20, 4)).astype(np.float32)
    picks = k_center_greedy(pool, 50, centers=np.zeros((0, 4), np.float32))
    assert len(picks) == 20 and len(set(picks)) == 20
    assert k_center_greedy(pool, 0) == []


def test_k_center_greedy_without_centers_starts_farthest_from_the_mean():
    pool = np.array([[0, 0], [1, 0], [0, 1], [9, 9]], np.float64)
    assert k_center_greedy(pool, 2) == [3, 0]
    assert k_center_greedy(np.ones((5, 3)), 4) == [0]  # coinciding rows: no duplicate picks
