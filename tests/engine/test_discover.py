"""Prototype construction on synthetic blobs: clusters recovered, noise handled, masses add up."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from medq.engine.discover import (
    DiscoveryError,
    Failure,
    Prototype,
    description_severity,
    discover_prototypes,
    mcq_severity,
    prototype_id,
)

MODS = ["CT", "MRI", "fundus", "endoscopy"]
DEGS = ["low_dose", "ghosting", "uneven_illumination", "motion_blur"]


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def blobs(seed=0, sizes=(30, 25, 20), n_noise=8, d=32, spread=0.04):
    """Well separated clusters on the unit sphere + uniformly scattered noise points."""
    rng = np.random.default_rng(seed)
    centers = _unit(rng.normal(size=(len(sizes), d)))
    x, fails, truth = [], [], []
    for c, size in enumerate(sizes):
        for j in range(size):
            x.append(_unit(centers[c] + spread * rng.normal(size=d)))
            fails.append(Failure(f"c{c}-{j}", f"img-c{c}-{j}", "wrong_mcq",
                                 float(rng.uniform(0.2, 1.0)), MODS[c],
                                 [{"type": DEGS[c], "level": 2 if j % 3 else 1}],
                                 "How" if c != 1 else "What"))
            truth.append(c)
    for j in range(n_noise):
        x.append(_unit(rng.normal(size=d)))
        fails.append(Failure(f"n{j}", f"img-n{j}", "low_description", 0.5, "X-ray", [], None))
        truth.append(-1)
    return fails, np.asarray(x, np.float32), np.asarray(truth)


def test_clusters_recovered_and_summarised():
    fails, x, truth = blobs()
    res = discover_prototypes("r1", fails, x, min_cluster_size=5, reduce_dims=8)
    clusters = [p for p in res.prototypes if not p.is_noise]
    assert len(clusters) == 3
    by_id = {f.item_id: i for i, f in enumerate(fails)}
    for p in clusters:
        labels = {truth[by_id[m]] for m in p.members}
        assert len(labels - {-1}) == 1  # pure: one true cluster (maybe a stray noise point)
        true = (labels - {-1}).pop()
        assert sum(truth[by_id[m]] == true for m in p.members) == (30, 25, 20)[true]
        assert p.modality == MODS[true] and p.degradation == DEGS[true]
        assert p.degradation_level == 2  # two thirds of members are severe
        assert p.summary.startswith(f"{p.n_members} failures, mostly {MODS[true]} "
                                    f"{DEGS[true].replace('_', ' ')} (severe)")
        assert p.medoid_item_id in p.members and p.radius > 0
        assert p.centroid.shape == (32,)
    # ordered by error mass, residual last
    masses = [p.error_mass for p in clusters]
    assert masses == sorted(masses, reverse=True)


def test_noise_becomes_one_residual_prototype_and_masses_add_up():
    fails, x, truth = blobs()
    res = discover_prototypes("r1", fails, x, min_cluster_size=5, reduce_dims=8, noise_weight=0.5)
    noise = [p for p in res.prototypes if p.is_noise]
    assert len(noise) == 1 and res.prototypes[-1].is_noise
    residual = noise[0]
    assert residual.summary.startswith("Residual (unclustered)")
    assert residual.weight == pytest.approx(0.5 * residual.error_mass)
    # every failure belongs to exactly one prototype and masses sum to the total severity
    members = [m for p in res.prototypes for m in p.members]
    assert sorted(members) == sorted(f.item_id for f in fails)
    assert sum(p.error_mass for p in res.prototypes) == pytest.approx(sum(f.severity for f in fails))
    # failures table: noise members have prototype_id NULL
    rows = {r["item_id"]: r for r in res.failure_rows("r1", fails)}
    assert all(rows[m]["prototype_id"] is None for m in residual.members)
    assert {rows[m]["prototype_id"] for p in res.prototypes if not p.is_noise for m in p.members} \
        == {p.prototype_id for p in res.prototypes if not p.is_noise}
    assert sum(truth[[i for i, f in enumerate(fails) if f.item_id in residual.members]] == -1) >= 5


def test_ids_are_stable_under_input_order():
    fails, x, _ = blobs(seed=2)
    a = discover_prototypes("r1", fails, x, min_cluster_size=5)
    perm = np.random.default_rng(0).permutation(len(fails))
    b = discover_prototypes("r1", [fails[i] for i in perm], x[perm], min_cluster_size=5)
    assert {p.prototype_id for p in a.prototypes} == {p.prototype_id for p in b.prototypes}
    assert prototype_id("r1", ["b", "a"]) == prototype_id("r1", ["a", "b"])
    assert prototype_id("r2", ["a", "b"]) != prototype_id("r1", ["a", "b"])


def test_small_inputs_do_not_crash():
    fails, x, _ = blobs(sizes=(3,), n_noise=0)
    assert discover_prototypes("r", [], np.zeros((0, 32), np.float32)).prototypes == []
    one = discover_prototypes("r", fails[:1], x[:1], min_cluster_size=5)
    assert len(one.prototypes) == 1 and one.prototypes[0].n_members == 1
    few = discover_prototypes("r", fails, x, min_cluster_size=5)
    assert len(few.prototypes) == 1 and not few.prototypes[0].is_noise
    assert few.prototypes[0].n_members == 3
    # enough points for HDBSCAN but no structure: still a valid partition
    rng = np.random.default_rng(1)
    scattered = [Failure(f"s{i}", f"i{i}", "wrong_mcq", 1.0) for i in range(12)]
    res = discover_prototypes("r", scattered, _unit(rng.normal(size=(12, 16))).astype(np.float32),
                              min_cluster_size=5)
    assert sum(p.n_members for p in res.prototypes) == 12
    assert sum(p.error_mass for p in res.prototypes) == pytest.approx(12.0)


def test_bad_input_is_refused():
    fails, x, _ = blobs(sizes=(6,), n_noise=0)
    with pytest.raises(DiscoveryError, match="embeddings must be"):
        discover_prototypes("r", fails, x[:-1])
    with pytest.raises(DiscoveryError, match="appears twice"):
        discover_prototypes("r", fails + fails[:1], np.vstack([x, x[:1]]))
    bad = [Failure("a", "i", "wrong_mcq", -1.0)]
    with pytest.raises(DiscoveryError, match="severity"):
        discover_prototypes("r", bad, x[:1])
    nan = x[:1].copy()
    nan[0, 0] = np.nan
    with pytest.raises(DiscoveryError, match="not finite"):
        discover_prototypes("r", fails[:1], nan)


def test_catalog_row_round_trip(settings, tmp_path):
    from medq.storage.catalog import Catalog
    fails, x, _ = blobs()
    res = discover_prototypes("r1", fails, x, min_cluster_size=5)
    cat = Catalog.open(tmp_path / "c.duckdb")
    cat.upsert("prototypes", res.prototype_rows())
    cat.upsert("failures", res.failure_rows("r1", fails))
    rows = cat.query("SELECT * FROM prototypes")
    back = {r["prototype_id"]: Prototype.from_row(r) for r in rows}
    for p in res.prototypes:
        q = back[p.prototype_id]
        assert q.members == p.members and q.is_noise == p.is_noise
        np.testing.assert_allclose(q.centroid, p.centroid, atol=1e-6)
        assert (q.degradation, q.degradation_level) == (p.degradation, p.degradation_level)
        assert q.weight == pytest.approx(p.weight)
    assert cat.scalar("SELECT count(*) FROM failures") == len(fails)


def test_severity_helpers():
    assert mcq_severity({"A": 0.9, "B": 0.1}, "B") == pytest.approx(0.9)
    assert mcq_severity({"A": 0.5}, "C") == 1.0
    assert description_severity(0.0, 4.0) == 1.0
    assert description_severity(3.9, 4.0) == pytest.approx(0.1)


@hsettings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 40), seed=st.integers(0, 10_000), mcs=st.integers(2, 8))
def test_partition_property(n, seed, mcs):
    """Any input: prototypes partition the failures and error masses add up."""
    rng = np.random.default_rng(seed)
    fails = [Failure(f"f{i}", f"i{i}", "wrong_mcq", float(rng.uniform(0, 2))) for i in range(n)]
    x = _unit(rng.normal(size=(n, 8)) + (rng.integers(0, 3, size=(n, 1)) * 3.0)).astype(np.float32)
    res = discover_prototypes("r", fails, x.reshape(n, 8), min_cluster_size=mcs, reduce_dims=4)
    members = sorted(m for p in res.prototypes for m in p.members)
    assert members == sorted(f.item_id for f in fails)
    assert sum(p.error_mass for p in res.prototypes) == pytest.approx(sum(f.severity for f in fails))
    assert sum(p.is_noise for p in res.prototypes) <= 1


def test_failures_from_predictions():
    from medq.engine.discover import failures_from_predictions
    items = {
        "q1": {"image_id": "i1", "answer": "B", "modality": "CT", "question_type": "How",
               "degradations": '[{"type": "low_dose", "level": 2}]', "kind": "mcq"},
        "q2": {"image_id": "i2", "answer": "A", "modality": "MRI", "kind": "mcq"},
        "d1": {"image_id": "i3", "modality": "fundus", "kind": "description", "degradations": None},
        "d2": {"image_id": "i4", "modality": "fundus", "kind": "description"},
        "p1": {"image_id": "i5", "kind": "paired"},
    }
    preds = [
        {"item_id": "q2", "kind": "mcq", "probs": {"A": 0.9, "B": 0.1}, "correct": True},
        {"item_id": "q1", "kind": "mcq", "probs": '{"A": 0.7, "B": 0.3}', "correct": False},
        {"item_id": "d1", "kind": "description", "score": 2.0},
        {"item_id": "d2", "kind": "description", "score": 6.5},
        {"item_id": "p1", "kind": "paired", "correct": False},
    ]
    fails = failures_from_predictions(preds, items, description_fail_below=4.0)
    assert [(f.item_id, f.kind) for f in fails] == [("d1", "low_description"), ("q1", "wrong_mcq")]
    assert fails[1].severity == pytest.approx(0.7) and fails[0].severity == pytest.approx(0.5)
    assert fails[1].degradations == [{"type": "low_dose", "level": 2}]
    assert fails[1].question_type == "How" and fails[0].degradations == []
    with pytest.raises(DiscoveryError, match="unknown item"):
        failures_from_predictions([{"item_id": "zz", "kind": "mcq", "correct": False}], items)


@pytest.mark.parametrize("size,n_noise", [(14, 3), (30, 8)])
def test_single_failure_mode_is_one_prototype(size, n_noise):
    """All failures of one kind (plus strays): one prototype with (nearly) all of them."""
    fails, x, truth = blobs(sizes=(size,), n_noise=n_noise)
    res = discover_prototypes("r", fails, x, min_cluster_size=5, reduce_dims=8)
    clusters = [p for p in res.prototypes if not p.is_noise]
    assert len(clusters) == 1
    members = set(clusters[0].members)
    assert sum(f.item_id in members for f, t in zip(fails, truth) if t == 0) >= size - 1
    assert not any(f.item_id in members for f, t in zip(fails, truth) if t == -1)
