"""Ultrasound (B-mode) degradations: speckle and acoustic shadowing. Rows are depth (the beam
travels down the image)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from medq.engine.degrade._util import on_luminance, pick, r, spatial_scale, uniform


def speckle(image: np.ndarray, level: int, rng: np.random.Generator):
    """Fully developed speckle: complex Gaussian scatterer fields convolved with an anisotropic
    point spread function (finer axially than laterally) give a Rayleigh-distributed envelope of
    mean 1, which multiplies the echo amplitude; `weight` mixes it in."""
    weight = uniform(rng, *pick(level, (0.3, 0.45), (0.7, 0.9)))
    scale = spatial_scale(image)
    psf = (0.6 * scale, uniform(rng, 1.0, 1.6) * scale)  # (axial, lateral) sigma in px

    def fn(y):
        re = ndimage.gaussian_filter(rng.normal(size=y.shape), psf, mode="wrap")
        im = ndimage.gaussian_filter(rng.normal(size=y.shape), psf, mode="wrap")
        env = np.hypot(re, im)
        env = env / max(float(env.mean()), 1e-9)
        return (y * ((1.0 - weight) + weight * env)).astype(np.float32)

    out = on_luminance(image, fn)
    return out, {"weight": r(weight, 4), "psf_sigma_px": [r(psf[0], 4), r(psf[1], 4)]}


def shadowing(image: np.ndarray, level: int, rng: np.random.Generator):
    """Acoustic shadow behind a strongly reflecting/attenuating structure (bone, calculus, gas):
    a bright reflector at depth `depth`, below it the echo decays along the beam to
    (1 - strength) in a band of `width` (fraction of the image width), with soft lateral edges."""
    n = int(rng.integers(*pick(level, (1, 2), (1, 3))))
    h, w = image.shape[:2]
    shadows = []
    for _ in range(n):
        shadows.append({
            "centre": r(uniform(rng, 0.2, 0.8), 4),
            "width": r(uniform(rng, *pick(level, (0.08, 0.14), (0.2, 0.32))), 4),
            "depth": r(uniform(rng, 0.15, 0.45), 4),
            "strength": r(uniform(rng, *pick(level, (0.45, 0.6), (0.85, 0.95))), 4),
        })
    decay = 0.08 * h  # how fast the shadow deepens below the reflector (px)
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :] / max(w - 1, 1)
    edge = 0.015 * spatial_scale(image) * 128 / max(w, 1) + 0.01

    def fn(y):
        gain = np.ones((h, w), dtype=np.float32)
        reflect = np.zeros((h, w), dtype=np.float32)
        for s in shadows:
            lateral = np.clip((s["width"] / 2 - np.abs(xs - s["centre"])) / edge, 0.0, 1.0)
            y0 = s["depth"] * h
            below = np.clip((ys - y0), 0.0, None)
            att = 1.0 - s["strength"] * (1.0 - np.exp(-below / decay)) * (ys >= y0)
            gain = np.minimum(gain, 1.0 - lateral * (1.0 - att))
            reflect = np.maximum(reflect, lateral * np.exp(-0.5 * ((ys - y0) / 1.2) ** 2) * 0.5)
        return y * gain + reflect

    out = on_luminance(image, fn)
    return out, {"shadows": shadows}
