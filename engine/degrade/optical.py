"""Degradations of optical imaging (fundus cameras, endoscopes): illumination, colour,
specular highlights, motion blur."""
from __future__ import annotations

import numpy as np

from medq.engine.degrade._util import (
    clip01,
    fft_convolve,
    luminance,
    norm_grid,
    per_channel,
    pick,
    r,
    spatial_scale,
    uniform,
)


def uneven_illumination(image: np.ndarray, level: int, rng: np.random.Generator):
    """Off-axis or falling-off light source: a smooth multiplicative field that darkens with the
    distance from a displaced light centre plus a linear gradient; `strength` is the darkening
    at the far edge."""
    strength = uniform(rng, *pick(level, (0.3, 0.45), (0.6, 0.8)))
    cy, cx = uniform(rng, -0.6, 0.6), uniform(rng, -0.6, 0.6)
    ang = uniform(rng, 0, 2 * np.pi)
    yy, xx = norm_grid(*image.shape[:2])
    d = np.hypot(yy - cy, xx - cx)
    radial = (d / max(float(d.max()), 1e-6)) ** 1.5
    linear = 0.5 * (1 + (np.cos(ang) * xx + np.sin(ang) * yy) / np.sqrt(2))
    field = 1.0 - strength * (0.7 * radial + 0.3 * linear)
    out = image * (field if image.ndim == 2 else field[:, :, None])
    return clip01(out), {"strength": r(strength, 4), "centre": [r(cy, 4), r(cx, 4)],
                         "gradient_angle": r(ang, 4)}


def color_distortion(image: np.ndarray, level: int, rng: np.random.Generator):
    """White-balance / sensor colour error: per-channel gains and a saturation change (RGB).
    A grayscale image gets the same severity as a tone-curve (gamma) error."""
    lo, hi = pick(level, (0.08, 0.15), (0.25, 0.4))
    if image.ndim == 3:
        gains = 1.0 + rng.uniform(lo, hi, size=3) * rng.choice([-1.0, 1.0], size=3)
        sat = 1.0 + uniform(rng, lo, hi) * 2.0 * float(rng.choice([-1, 1]))
        out = image * gains.astype(np.float32)
        gray = luminance(out)[:, :, None]
        out = gray + max(sat, 0.0) * (out - gray)
        return clip01(out), {"gains": [r(g, 4) for g in gains], "saturation": r(sat, 4)}
    gamma = float(np.exp(uniform(rng, lo, hi) * 2.5 * float(rng.choice([-1, 1]))))
    return clip01(np.power(np.clip(image, 0, 1), gamma)), {"gamma": r(gamma, 4)}


def specular_reflection(image: np.ndarray, level: int, rng: np.random.Generator):
    """Specular highlights from wet tissue or the cornea: saturated elliptical spots with soft
    halos, placed on the illuminated (non-background) area."""
    n = int(rng.integers(*pick(level, (2, 5), (7, 13))))
    scale = spatial_scale(image)
    h, w = image.shape[:2]
    lum = luminance(image)
    fg = np.argwhere(lum > max(0.08, float(np.percentile(lum, 30))))
    if len(fg) == 0:
        fg = np.argwhere(np.ones((h, w), dtype=bool))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    spots, total = [], np.zeros((h, w), dtype=np.float32)
    for _ in range(n):
        cy, cx = fg[int(rng.integers(0, len(fg)))]
        ry = uniform(rng, *pick(level, (0.8, 2.0), (1.8, 4.0))) * scale
        rx = ry * uniform(rng, 0.6, 1.8)
        th = uniform(rng, 0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dy * np.cos(th) + dx * np.sin(th)) / ry
        v = (-dy * np.sin(th) + dx * np.cos(th)) / rx
        total = np.maximum(total, np.exp(-0.5 * (u * u + v * v)))
        spots.append([int(cy), int(cx), r(ry, 3), r(rx, 3)])
    # The core saturates (alpha 1), the halo blends toward white.
    alpha = np.clip(1.6 * total, 0.0, 1.0)
    out = image + (1.0 - image) * (alpha if image.ndim == 2 else alpha[:, :, None])
    return clip01(out), {"spots": spots}


def _line_kernel(length: float, angle: float) -> np.ndarray:
    """Normalized linear motion PSF of `length` pixels at `angle` radians (bilinear splat)."""
    half = int(np.ceil(length / 2)) + 1
    k = np.zeros((2 * half + 1, 2 * half + 1), dtype=np.float64)
    for t in np.linspace(-length / 2, length / 2, max(2, int(length * 4))):
        y, x = half + t * np.sin(angle), half + t * np.cos(angle)
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        fy, fx = y - y0, x - x0
        k[y0, x0] += (1 - fy) * (1 - fx)
        k[y0 + 1, x0] += fy * (1 - fx)
        k[y0, x0 + 1] += (1 - fy) * fx
        k[y0 + 1, x0 + 1] += fy * fx
    return k / k.sum()


def motion_blur(image: np.ndarray, level: int, rng: np.random.Generator):
    """Camera or tissue movement during exposure: convolution with a straight line of
    `length_px` pixels at `angle_deg`."""
    length = uniform(rng, *pick(level, (4.0, 7.0), (11.0, 16.0))) * spatial_scale(image)
    angle = uniform(rng, 0, np.pi)
    kernel = _line_kernel(length, angle)
    out = per_channel(image, lambda c: fft_convolve(c, kernel))
    return clip01(out), {"length_px": r(length, 4), "angle_deg": r(np.degrees(angle), 3)}
