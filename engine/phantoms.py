"""Procedural base images where no real image of a modality ships offline (pure, seeded).

- :func:`ct_phantom`: random-ellipse attenuation phantoms in the spirit of Shepp-Logan (body
  outline, a dense rim, soft-tissue and low-density inclusions, small calcifications).
- :func:`endoscopy_frame`: an endoscopy-like RGB frame: a dark lumen, haustral folds around it,
  mucosal texture, vessels, light fall-off with depth and the round field stop of the scope.

Both return float32 in [0, 1]; the same (seed, size) gives the same pixels.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def _ellipse(yy, xx, cy, cx, ry, rx, theta):
    dy, dx = yy - cy, xx - cx
    u = (dy * np.cos(theta) + dx * np.sin(theta)) / ry
    v = (-dy * np.sin(theta) + dx * np.cos(theta)) / rx
    return (u * u + v * v) <= 1.0


def ct_phantom(seed: int, size: int = 256) -> np.ndarray:
    """(size, size) random-ellipse CT phantom; values are display intensities (0 = air)."""
    rng = np.random.default_rng([seed, 7331])
    g = np.linspace(-1, 1, size, dtype=np.float32)
    yy, xx = np.meshgrid(g, g, indexing="ij")
    img = np.zeros((size, size), dtype=np.float32)
    ry, rx = rng.uniform(0.7, 0.9), rng.uniform(0.55, 0.85)
    tilt = rng.uniform(-0.2, 0.2)
    body = _ellipse(yy, xx, 0, 0, ry, rx, tilt)
    inner_ry, inner_rx = ry - rng.uniform(0.03, 0.06), rx - rng.uniform(0.03, 0.06)
    rim = body & ~_ellipse(yy, xx, 0, 0, inner_ry, inner_rx, tilt)
    img[body] = rng.uniform(0.35, 0.45)
    img[rim] = rng.uniform(0.85, 1.0)
    for _ in range(int(rng.integers(5, 11))):
        cy, cx = rng.uniform(-0.5, 0.5) * ry, rng.uniform(-0.5, 0.5) * rx
        e = _ellipse(yy, xx, cy, cx, rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3),
                     rng.uniform(0, np.pi)) & body & ~rim
        img[e] = np.clip(img[e] + rng.uniform(-0.25, 0.25), 0.05, 0.8)
    for _ in range(int(rng.integers(1, 5))):  # small dense calcifications
        cy, cx = rng.uniform(-0.45, 0.45) * ry, rng.uniform(-0.45, 0.45) * rx
        img[_ellipse(yy, xx, cy, cx, 0.02, 0.02, 0.0) & body] = rng.uniform(0.75, 0.95)
    texture = ndimage.gaussian_filter(rng.normal(size=(size, size)), size / 128) * 0.01
    return np.clip(ndimage.gaussian_filter(img, 0.6 * size / 256) + texture * body, 0, 1
                   ).astype(np.float32)


def _smooth_noise(rng, size: int, scales=(4, 12, 32)) -> np.ndarray:
    out = np.zeros((size, size))
    for s in scales:
        n = ndimage.gaussian_filter(rng.normal(size=(size, size)), s * size / 256, mode="wrap")
        out += n / (n.std() + 1e-9) / len(scales)
    return out


def endoscopy_frame(seed: int, size: int = 256) -> np.ndarray:
    """(size, size, 3) synthetic endoscopy-like frame (colonoscopy look)."""
    rng = np.random.default_rng([seed, 4242])
    g = np.linspace(-1, 1, size)
    yy, xx = np.meshgrid(g, g, indexing="ij")
    cy, cx = rng.uniform(-0.45, 0.45, size=2)
    warp = _smooth_noise(rng, size, (24, 48)) * 0.12
    r = np.hypot(yy - cy, xx - cx) + warp
    ang = np.arctan2(yy - cy, xx - cx)
    # Light falls off with depth: the lumen (small r) is far and dark.
    depth_light = 1.0 - np.exp(-(r / rng.uniform(0.25, 0.4)) ** 2)
    n_folds = rng.uniform(5.0, 9.0)
    folds = 0.5 + 0.5 * np.cos(2 * np.pi * n_folds * np.sqrt(np.maximum(r, 0)) +
                               0.6 * np.sin(3 * ang + rng.uniform(0, 6)))
    folds = ndimage.gaussian_filter(folds, 1.0 * size / 256)
    texture = _smooth_noise(rng, size, (2, 6, 16))
    shade = depth_light * (0.65 + 0.25 * folds) * (1 + 0.06 * texture)
    base = np.array([rng.uniform(0.8, 0.95), rng.uniform(0.38, 0.5), rng.uniform(0.3, 0.42)])
    img = shade[:, :, None] * base[None, None, :]
    # Vessels: smooth random walks drawn darker and redder.
    vessels = np.zeros((size, size))
    for _ in range(int(rng.integers(4, 9))):
        p = rng.uniform(0, size, size=2)
        heading = rng.uniform(0, 2 * np.pi)
        for _ in range(int(size * 0.8)):
            heading += rng.normal(0, 0.15)
            p = p + np.array([np.sin(heading), np.cos(heading)])
            iy, ix = int(p[0]) % size, int(p[1]) % size
            vessels[iy, ix] = 1.0
    vessels = np.clip(ndimage.gaussian_filter(vessels, 0.8 * size / 256) * 3.0, 0, 1) * depth_light
    img = img * (1 - 0.35 * vessels[:, :, None] * np.array([0.3, 0.9, 0.9]))
    # The scope's round field stop.
    field = np.hypot(yy, xx)
    stop = np.clip((0.98 - field) / 0.03, 0.0, 1.0)
    return np.clip(img * stop[:, :, None], 0, 1).astype(np.float32)
