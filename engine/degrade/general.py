"""Degradations that apply to every modality: noise, blur, resolution, exposure, contrast,
brightness. Intensities are display values in [0, 1]; spatial sizes are for a 128-px image and
scale with the image (see :func:`medq.engine.degrade._util.spatial_scale`)."""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from medq.engine.degrade._util import clip01, per_channel, pick, r, resize, spatial_scale, uniform

_RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
             "bicubic": Image.Resampling.BICUBIC}


def gaussian_noise(image: np.ndarray, level: int, rng: np.random.Generator):
    """Additive white Gaussian noise of standard deviation `sigma` (independent per channel)."""
    sigma = uniform(rng, *pick(level, (0.03, 0.05), (0.09, 0.14)))
    noise = rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
    return clip01(image + noise), {"sigma": r(sigma)}


def blur(image: np.ndarray, level: int, rng: np.random.Generator):
    """Isotropic Gaussian blur of standard deviation `sigma_px` pixels."""
    sigma = uniform(rng, *pick(level, (0.9, 1.4), (2.2, 3.2))) * spatial_scale(image)
    out = per_channel(image, lambda c: ndimage.gaussian_filter(c, sigma, mode="reflect"))
    return clip01(out), {"sigma_px": r(sigma, 4)}


def low_resolution(image: np.ndarray, level: int, rng: np.random.Generator):
    """Acquired at a coarser grid: box-downsampled by `factor` then interpolated back."""
    factor = uniform(rng, *pick(level, (2.0, 3.0), (4.0, 6.0)))
    method = str(rng.choice(sorted(_RESAMPLE)))
    h, w = image.shape[:2]
    small = (max(2, round(h / factor)), max(2, round(w / factor)))
    out = per_channel(image, lambda c: resize(resize(c, small, Image.Resampling.BOX), (h, w),
                                              _RESAMPLE[method]))
    return clip01(out), {"factor": r(factor, 4), "interpolation": method}


def exposure(image: np.ndarray, level: int, rng: np.random.Generator):
    """Over-exposure (gain, highlights clip to white) or under-exposure (lower gain and a gamma
    that crushes the shadows)."""
    direction = str(rng.choice(["over", "under"]))
    if direction == "over":
        gain = uniform(rng, *pick(level, (1.35, 1.6), (2.0, 2.6)))
        gamma = 1.0
    else:
        gain = uniform(rng, *pick(level, (0.6, 0.75), (0.3, 0.45)))
        gamma = uniform(rng, *pick(level, (1.1, 1.3), (1.5, 1.9)))
    out = gain * np.power(np.clip(image, 0, 1), gamma)
    return clip01(out), {"direction": direction, "gain": r(gain, 4), "gamma": r(gamma, 4)}


def reduce_contrast(image: np.ndarray, level: int, rng: np.random.Generator):
    """Intensities pulled toward the mean: ``mean + c * (x - mean)``, c < 1."""
    c = uniform(rng, *pick(level, (0.5, 0.65), (0.2, 0.33)))
    mean = float(image.mean())
    return clip01(mean + c * (image - mean)), {"factor": r(c, 4)}


def brightness(image: np.ndarray, level: int, rng: np.random.Generator):
    """Additive brightness offset (either sign), clipped to the display range."""
    shift = uniform(rng, *pick(level, (0.1, 0.17), (0.27, 0.38))) * float(rng.choice([-1, 1]))
    return clip01(image + shift), {"shift": r(shift, 4)}
