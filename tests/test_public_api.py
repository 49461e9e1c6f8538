"""The public API: everything here goes through ``import medq`` only (README example)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import medq


def test_every_public_name_resolves_and_all_matches_the_table():
    assert set(medq.__all__) == {"__version__", *medq._API}
    for name in medq.__all__:
        assert getattr(medq, name) is not None
    with pytest.raises(AttributeError, match="public names"):
        medq.no_such_thing  # noqa: B018


def test_import_medq_is_light():
    code = "import sys, medq; print('prefect' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def _failures_and_embeddings(rng):
    """Two tight blobs of wrong MCQs (MRI motion, CT noise) in a 16-d embedding space."""
    failures, rows = [], []
    for blob, (modality, degradation) in enumerate([("MRI", "motion"), ("CT", "noise")]):
        centre = np.zeros(16, np.float32)
        centre[blob] = 5.0
        for i in range(12):
            failures.append(medq.Failure(item_id=f"{modality}-{i}", image_id=f"img-{modality}-{i}",
                                         kind="wrong_mcq", severity=1.0, modality=modality,
                                         degradations=[{"type": degradation, "level": 2}]))
            rows.append(centre + rng.normal(0, 0.1, 16).astype(np.float32))
    return failures, np.stack(rows)


def test_discover_plan_route_and_score_on_plain_arrays(tmp_path):
    rng = np.random.default_rng(0)
    failures, embeddings = _failures_and_embeddings(rng)
    found = medq.discover_prototypes("r001", failures, embeddings, min_cluster_size=5,
                                     reduce_dims=4, seed=0)
    real = [p for p in found.prototypes if not p.is_noise]
    assert {p.modality for p in real} == {"MRI", "CT"}
    assert all(len(p.members) >= 10 for p in real)

    shares = medq.allocate_budget(found.prototypes, 40)
    assert sum(shares.values()) == 40 and all(shares[p.prototype_id] >= 1 for p in real)
    anchors = medq.plan_anchors(found.prototypes, embeddings, budgets=shares, per_prototype=2)
    assert anchors and {a.prototype_id for a in anchors} >= {p.prototype_id for p in real}

    settings = medq.load_settings(workspace=tmp_path / "ws")
    ids = [f"pool-{i}" for i in range(20)]
    entropies = np.linspace(0.0, 1.0, 20)
    routed = medq.route_candidates(ids, entropies, settings.lanes, budget=10.0)
    assert isinstance(routed, medq.RoutingResult)
    assert routed.spend <= 10.0 + 1e-9
    assert {r.lane for r in routed.routes} <= {"expert", "verify", "auto"}
    assert medq.normalized_entropy({"A": 0.5, "B": 0.5}) == pytest.approx(1.0)

    assert medq.extract_answer("The answer is (B).") == "B"


def test_typos_in_settings_are_errors(tmp_path):
    with pytest.raises(Exception, match="extra|unknown|not permitted"):
        medq.load_settings(workspace=tmp_path / "ws", no_such_section={"x": 1})
