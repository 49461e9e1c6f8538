"""World planning (pure): determinism, mixes, seed bias, rare pool cases."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from medq.engine import taxonomy
from medq.engine.world_plan import (
    Mix,
    Selection,
    WorldSpec,
    WorldSpecError,
    apply_view,
    base_size,
    plan_world,
    render_item,
)

REFS = {m: [f"{m}/base/{k}" for k in range(5)] for m in taxonomy.MODALITIES}


def _spec(**kw):
    base = {"eval_size": 40, "pool_size": 400, "seed_size": 200, "seed": 7}
    base.update(kw)
    return WorldSpec(**base)


def test_plan_is_deterministic_and_labelled():
    a, b = plan_world(_spec(), REFS), plan_world(_spec(), REFS)
    assert [i.to_dict() for i in a.all_items()] == [i.to_dict() for i in b.all_items()]
    other = plan_world(_spec(seed=8), REFS)
    assert [i.to_dict() for i in other.pool] != [i.to_dict() for i in a.pool]
    for item in a.all_items():
        assert item.verdict == taxonomy.verdict_for(item.degradations)
        assert item.base_ref in REFS[item.modality]
        for d in item.degradations:
            assert d["type"] in taxonomy.degradations_for(item.modality)
            assert d["level"] in (1, 2)
        assert len({d["type"] for d in item.degradations}) == len(item.degradations)
    assert len({i.seed for i in a.all_items()}) == len(a.all_items())


def test_eval_set_does_not_depend_on_pool_or_seed_size():
    a = plan_world(_spec(pool_size=100, seed_size=10), REFS)
    b = plan_world(_spec(pool_size=300, seed_size=50), REFS)
    assert [i.to_dict() for i in a.eval] == [i.to_dict() for i in b.eval]


def test_level_mix_sets_verdicts():
    plan = plan_world(_spec(pool_size=3000, mix=Mix(levels=(0.2, 0.5, 0.3))), REFS)
    counts = Counter(i.verdict for i in plan.pool)
    assert abs(counts["good"] / 3000 - 0.2) < 0.04
    assert abs(counts["usable"] / 3000 - 0.5) < 0.04
    only_clean = plan_world(_spec(mix=Mix(levels=(1, 0, 0))), REFS)
    assert all(not i.degradations for i in only_clean.all_items())


def test_modality_and_degradation_weights():
    mix = Mix(modalities={"CT": 1.0, "MRI": 3.0}, degradations={"low_dose": 0.0})
    plan = plan_world(_spec(pool_size=2000, mix=mix), REFS)
    counts = Counter(i.modality for i in plan.pool)
    assert set(counts) == {"CT", "MRI"}
    assert 2.4 < counts["MRI"] / counts["CT"] < 3.8
    assert not any(d["type"] == "low_dose" for i in plan.pool for d in i.degradations)


def test_seed_bias_under_represents_in_seed_set_only():
    bias = Selection(modalities=("endoscopy",), degradations=("blur",), factor=0.0)
    plan = plan_world(_spec(seed_bias=bias), REFS)
    assert not any(i.modality == "endoscopy" for i in plan.seed)
    assert not any(d["type"] == "blur" for i in plan.seed for d in i.degradations)
    assert any(i.modality == "endoscopy" for i in plan.pool)
    assert any(d["type"] == "blur" for i in plan.pool for d in i.degradations)


def test_pool_rare_share_is_exact():
    rare = Selection(modalities=("fundus",), degradations=("motion_blur",), share=0.05)
    plan = plan_world(_spec(pool_size=1000, pool_rare=rare), REFS)
    is_rare = [i.modality == "fundus" or any(d["type"] == "motion_blur" for d in i.degradations)
               for i in plan.pool]
    assert sum(is_rare) == 50
    first, last = is_rare.index(True), len(is_rare) - 1 - is_rare[::-1].index(True)
    assert last - first > 500  # shuffled through the pool, not bunched at one end


def test_paired_items_share_content():
    plan = plan_world(_spec(paired=6), REFS)
    assert len(plan.paired) == 6
    for a, b in plan.paired:
        assert (a.base_ref, a.view, a.modality) == (b.base_ref, b.view, b.modality)


@pytest.mark.parametrize("bad", [
    {"eval_size": -1}, {"image_size": 8},
    {"mix": Mix(modalities={"PET": 1.0})}, {"mix": Mix(modalities={"CT": 0.0})},
    {"mix": Mix(degradations={"lens_flare": 1.0})}, {"mix": Mix(levels=(1, 1))},
    {"pool_rare": Selection(degradations=("nope",))},
    {"seed_bias": Selection(modalities=tuple(taxonomy.MODALITIES), factor=0.0)},
])
def test_invalid_specs_are_refused(bad):
    with pytest.raises(WorldSpecError):
        plan_world(_spec(**bad), REFS)


def test_rare_selection_that_never_happens_is_refused():
    mix = Mix(modalities={"CT": 1.0})
    with pytest.raises(WorldSpecError, match="never produces"):
        plan_world(_spec(mix=mix, pool_rare=Selection(degradations=("speckle",), share=0.1)), REFS)


def test_spec_round_trips_through_dict():
    spec = _spec(seed_bias=Selection(modalities=("CT",)), pool_rare=Selection(
        degradations=("blur",), share=0.1), mix=Mix(levels=(0.1, 0.2, 0.7)), paired=2)
    assert WorldSpec.from_dict(spec.to_dict()) == spec


def test_apply_view_and_render():
    rng = np.random.default_rng(0)
    base = rng.random((64, 64, 3)).astype(np.float32)
    view = {"crop": [0.5, 0.0, 1.0], "flip_h": True, "flip_v": False, "rot90": 1}
    out = apply_view(base, view, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    same = apply_view(base, {"crop": [0.5, 0.0, 1.0], "flip_h": True, "rot90": 1}, 32)
    assert np.array_equal(out, same)
    # Crop of the top-right quarter, rotated then mirrored: exact pixels at full size.
    exact = apply_view(base, view, 32)
    expected = np.clip(np.rot90(base[0:32, 32:64], 1)[:, ::-1], 0, 1)
    assert np.allclose(exact, expected)
    plan = plan_world(_spec(eval_size=2, pool_size=0, seed_size=0), REFS)
    item = plan.eval[0]
    big = rng.random((base_size(32), base_size(32))).astype(np.float32)
    img1, prov = render_item(item, big, 32)
    img2, _ = render_item(item, big, 32)
    assert np.array_equal(img1, img2) and img1.shape == (32, 32)
    assert prov["base_ref"] == item.base_ref and prov["verdict"] == item.verdict
