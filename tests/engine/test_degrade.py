"""Degradation simulators: deterministic by seed, labelled, and each one's measurable effect
grows with its level (0 = identity < mild < severe)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medq.engine import taxonomy
from medq.engine.degrade import SIMULATORS, DegradationError, apply, degrade, ordered
from medq.engine.phantoms import ct_phantom, endoscopy_frame
from tests.engine._degrade_metrics import METRICS

N = 96


@pytest.fixture(scope="module")
def images():
    """Small test images per modality family (procedural or skimage-bundled, no downloads)."""
    from skimage import data
    from skimage.transform import resize
    histo = resize(data.immunohistochemistry()[:256, :256] / 255.0, (N, N)).astype(np.float32)
    fundus = resize(data.retina()[::4, ::4] / 255.0, (N, N)).astype(np.float32)
    return {"gray": ct_phantom(3, N), "histopathology": histo, "fundus": fundus,
            "endoscopy": endoscopy_frame(2, N)}


def _image_for(name: str, images) -> np.ndarray:
    family = SIMULATORS[name].families[0]
    return images.get(family, images["gray"])


def test_every_taxonomy_degradation_has_a_simulator():
    missing = set(taxonomy.all_degradations()) - set(SIMULATORS)
    assert not missing
    for name, sim in SIMULATORS.items():
        assert sim.families, f"{name} belongs to no taxonomy family"
        assert sim.doc, f"{name} has no docstring"
        assert name in METRICS, f"no effect metric for {name}"


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(SIMULATORS)), level=st.integers(0, 2),
       seed=st.integers(0, 2 ** 32 - 1), rgb=st.booleans())
def test_apply_is_deterministic_and_well_formed(images, name, level, seed, rgb):
    img = images["fundus"] if rgb else images["gray"]
    a, pa = apply(img, name, level, np.random.default_rng(seed))
    b, pb = apply(img, name, level, np.random.default_rng(seed))
    assert np.array_equal(a, b) and pa == pb
    assert a.shape == img.shape and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0 and np.isfinite(a).all()
    if level == 0:
        assert np.array_equal(a, img) and pa == {}
    else:
        import json
        json.dumps(pa)  # parameters are JSON-safe provenance


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(types=st.lists(st.sampled_from(sorted(SIMULATORS)), min_size=0, max_size=3, unique=True),
       levels=st.lists(st.integers(0, 2), min_size=3, max_size=3), seed=st.integers(0, 2 ** 40))
def test_degrade_is_deterministic_and_labelled(images, types, levels, seed):
    degs = [{"type": t, "level": lv} for t, lv in zip(types, levels)]
    a, prov_a = degrade(images["gray"], degs, seed)
    b, prov_b = degrade(images["gray"], degs, seed)
    assert np.array_equal(a, b) and prov_a == prov_b
    labelled = sorted((s["type"], s["level"]) for s in prov_a["steps"])
    assert labelled == sorted((d["type"], d["level"]) for d in degs if d["level"] > 0)
    assert prov_a["verdict"] == taxonomy.verdict_for(degs)
    assert prov_a["seed"] == seed


def test_degrade_seed_changes_output(images):
    degs = [{"type": "gaussian_noise", "level": 1}]
    a, _ = degrade(images["gray"], degs, 1)
    b, _ = degrade(images["gray"], degs, 2)
    assert not np.array_equal(a, b)


def test_degrade_orders_by_imaging_chain():
    degs = [{"type": "compression", "level": 1}, {"type": "gaussian_noise", "level": 1},
            {"type": "bias_field", "level": 1}]
    assert [d["type"] for d in ordered(degs)] == ["bias_field", "gaussian_noise", "compression"]


@pytest.mark.parametrize("name", sorted(SIMULATORS))
def test_effect_grows_with_level(images, name):
    img = _image_for(name, images)
    metric = METRICS[name]
    means = {}
    for level in (0, 1, 2):
        vals = [metric(img, apply(img, name, level, np.random.default_rng(s))[0])
                for s in range(4)]
        means[level] = float(np.mean(vals))
    assert means[0] == pytest.approx(0.0, abs=1e-9)
    assert means[1] > 1e-3, f"{name}: mild level has no measurable effect ({means})"
    assert means[2] > means[1] * 1.15, f"{name}: severe is not clearly worse than mild ({means})"


def test_gray_physics_keeps_colour_of_rgb_images(images):
    """CT/MRI/US physics on an RGB image changes luminance only (same delta on every channel)."""
    img = images["fundus"]
    out, _ = apply(img, "rician_noise", 2, np.random.default_rng(0))
    delta = out.astype(np.float64) - img
    inside = (img > 0.05).all(axis=-1) & (img < 0.9).all(axis=-1) & (out > 0.0).all(axis=-1) & \
        (out < 1.0).all(axis=-1)
    assert np.allclose(delta[inside][:, 0], delta[inside][:, 1], atol=1e-5)


def test_non_square_and_large_images(images):
    img = np.ascontiguousarray(np.tile(images["gray"], (1, 2))[:, :150])  # 96 x 150
    for name in ("sparse_view", "motion", "shadowing", "focus_blur"):
        out, _ = apply(img, name, 2, np.random.default_rng(0))
        assert out.shape == img.shape


def test_bad_inputs_raise_clear_errors(images):
    with pytest.raises(DegradationError, match="no simulator for degradation type 'lens_flare'"):
        apply(images["gray"], "lens_flare", 1, np.random.default_rng(0))
    with pytest.raises(DegradationError, match="level must be"):
        apply(images["gray"], "blur", 3, np.random.default_rng(0))
    with pytest.raises(DegradationError, match="shape"):
        apply(np.zeros((4, 16, 16), np.float32), "blur", 1, np.random.default_rng(0))
    with pytest.raises(DegradationError, match="NaN"):
        apply(np.full((16, 16), np.nan, np.float32), "blur", 1, np.random.default_rng(0))
    with pytest.raises(DegradationError, match="float"):
        apply(np.zeros((16, 16), np.uint8), "blur", 1, np.random.default_rng(0))
    with pytest.raises(DegradationError, match="#0"):
        degrade(images["gray"], [{"type": "blur"}], 0)
