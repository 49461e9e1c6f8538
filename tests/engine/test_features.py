"""Handcrafted quality features: shape, names, determinism, input errors, and that each group
responds to the degradation it is meant to see (these can fail)."""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
from scipy import ndimage

from medq.engine.features import (
    FEATURE_DIM,
    FEATURE_GROUPS,
    FeatureInputError,
    feature_names,
    quality_features,
)
from medq.errors import MedQError


def _scene(size: int = 128, seed: int = 0) -> np.ndarray:
    """A deterministic textured grayscale scene in [0.1, 0.9]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 0.5 + 0.2 * np.sin(2 * np.pi * 3 * xx) * np.cos(2 * np.pi * 2 * yy)
    for _ in range(6):
        cy, cx, r = rng.random(3) * [1, 1, 0.2] + [0, 0, 0.05]
        img += 0.25 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r ** 2) * rng.choice([-1, 1])
    img = ndimage.gaussian_filter(img, 0.7)
    return np.clip(img, 0.1, 0.9).astype(np.float32)


def _col(name: str) -> int:
    return feature_names().index(name)


def test_shape_names_groups_and_determinism():
    imgs = [_scene(seed=s) for s in range(3)] + [np.random.default_rng(0).random((90, 150, 3))
                                                  .astype(np.float32)]
    f1 = quality_features(imgs)
    f2 = quality_features(imgs)
    assert f1.shape == (4, FEATURE_DIM) and f1.dtype == np.float32
    assert np.array_equal(f1, f2)
    assert np.isfinite(f1).all()
    names = feature_names()
    assert len(names) == FEATURE_DIM == len(set(names))
    covered = sorted(i for sl in FEATURE_GROUPS.values() for i in range(sl.start, sl.stop))
    assert covered == list(range(FEATURE_DIM))
    # batch composition does not change an image's row
    assert np.allclose(quality_features(imgs[1:2])[0], f1[1], atol=1e-6)
    assert quality_features([]).shape == (0, FEATURE_DIM)


def test_grayscale_forms_agree_and_colour_is_zero_for_gray():
    g = _scene()
    f2d, f3 = quality_features([g, np.repeat(g[:, :, None], 3, axis=2)])
    assert np.allclose(f2d, f3, atol=1e-6)
    assert np.all(f2d[FEATURE_GROUPS["colour"]] == 0)
    rgb = np.stack([g, g * 0.6, g * 0.3], -1)
    fc = quality_features([rgb])[0]
    assert fc[_col("is_colour")] == 1 and fc[_col("colourfulness")] > 0.05
    assert fc[_col("mean_r")] > fc[_col("mean_g")] > fc[_col("mean_b")]


def test_uint8_and_odd_sizes_accepted():
    g = _scene(200)
    f_float = quality_features([g])[0]
    f_uint = quality_features([(g * 255).round().astype(np.uint8)])[0]
    assert np.allclose(f_float[FEATURE_GROUPS["content"]], f_uint[FEATURE_GROUPS["content"]], atol=0.01)
    out = quality_features([np.zeros((20, 33), np.float32), np.ones((300, 77), np.float32)])
    assert np.isfinite(out).all()


@pytest.mark.parametrize("bad, msg", [
    (np.zeros((4, 4)), "too small"),
    (np.zeros((32, 32, 2)), "shape"),
    (np.full((32, 32), np.nan), "NaN"),
    ([[0.0] * 32] * 32, "numpy array"),
])
def test_bad_input_names_the_image(bad, msg):
    with pytest.raises(FeatureInputError, match=msg) as info:
        quality_features([_scene(), bad])
    assert "image 1" in str(info.value)
    assert isinstance(info.value, MedQError)


def test_features_respond_to_their_degradations():
    rng = np.random.default_rng(3)
    clean = _scene(256)
    noisy = np.clip(clean + rng.normal(0, 0.08, clean.shape), 0, 1)
    blurred = ndimage.gaussian_filter(clean, 3)
    dark = clean * 0.3
    _, xx = np.mgrid[0:256, 0:256] / 256
    biased = np.clip(clean * (0.4 + 1.2 * xx), 0, 1)
    ghost = np.clip(0.75 * clean + 0.35 * np.roll(clean, 48, axis=0), 0, 1)
    streak = clean.copy()
    streak[:, ::9] = np.clip(streak[:, ::9] + 0.4, 0, 1)   # vertical lines
    f = dict(zip(["clean", "noisy", "blurred", "dark", "biased", "ghost", "streak"],
                 quality_features([clean, noisy, blurred, dark, biased, ghost, streak])))
    assert f["noisy"][_col("noise_mad_native")] > f["clean"][_col("noise_mad_native")] + 0.5
    assert f["noisy"][_col("noise_immerkaer_native")] > f["clean"][_col("noise_immerkaer_native")]
    assert f["blurred"][_col("lap_var_work")] < f["clean"][_col("lap_var_work")] - 0.5
    assert f["blurred"][_col("radial_band_7")] < f["clean"][_col("radial_band_7")]
    assert f["dark"][_col("lum_mean")] < 0.3 * f["clean"][_col("lum_mean")] + 0.01
    assert f["dark"][_col("lum_p99")] < f["clean"][_col("lum_p99")]
    assert f["biased"][_col("illum_plane_slope")] > f["clean"][_col("illum_plane_slope")] + 0.25
    assert f["ghost"][_col("acf_peak_rows")] > f["clean"][_col("acf_peak_rows")] + 0.1
    assert abs(f["ghost"][_col("acf_lag_rows")] - 48 / 256) < 0.02
    assert f["streak"][_col("orient_anisotropy")] > f["clean"][_col("orient_anisotropy")]
    assert f["streak"][_col("spectral_top_share")] > f["clean"][_col("spectral_top_share")]


def test_jpeg_blockiness():
    from PIL import Image
    clean = _scene(256, seed=5)
    buf = io.BytesIO()
    Image.fromarray((clean * 255).astype(np.uint8)).save(buf, format="JPEG", quality=8)
    jpeg = np.asarray(Image.open(io.BytesIO(buf.getvalue())), np.float32) / 255
    fc, fj = quality_features([clean, jpeg])
    assert fj[_col("block_h")] > fc[_col("block_h")] + 0.1
    assert fj[_col("block_v")] > fc[_col("block_v")] + 0.1


def test_speed_128():
    rng = np.random.default_rng(0)
    imgs = [rng.random((128, 128), dtype=np.float32) for _ in range(128)]
    quality_features(imgs[:2])
    t = time.perf_counter()
    quality_features(imgs)
    per_image_ms = (time.perf_counter() - t) / len(imgs) * 1e3
    assert per_image_ms < 20, per_image_ms  # ~2-4 ms here; loose bound for a loaded shared machine
