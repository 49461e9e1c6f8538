"""Histopathology (whole-slide / microscope) degradations: stain variation, focus blur,
compression."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image
from skimage.color import hed2rgb, rgb2hed

from medq.engine.degrade._util import (
    clip01,
    fft_convolve,
    per_channel,
    pick,
    r,
    spatial_scale,
    uniform,
)


def _signed(rng: np.random.Generator, lo: float, hi: float) -> float:
    return uniform(rng, lo, hi) * float(rng.choice([-1, 1]))


def stain_variation(image: np.ndarray, level: int, rng: np.random.Generator):
    """Staining protocol / scanner differences. RGB: colour deconvolution into haematoxylin,
    eosin and DAB optical densities (Ruifrok & Johnston, skimage ``rgb2hed``); each stain's
    density is scaled by ``alpha`` and shifted by ``beta`` (Tellez et al. HED augmentation), then
    recomposed. Only the change of the recomposed image is applied, so level 0 is the identity.
    Grayscale: the same idea on the single optical density (a gain and offset in -log space)."""
    a_lo, a_hi = pick(level, (0.12, 0.25), (0.4, 0.65))
    b_lo, b_hi = pick(level, (0.005, 0.012), (0.02, 0.04))
    if image.ndim == 3:
        alpha = np.array([1.0 + _signed(rng, a_lo, a_hi) for _ in range(3)], dtype=np.float64)
        beta = np.array([_signed(rng, b_lo, b_hi) for _ in range(3)], dtype=np.float64)
        hed = rgb2hed(image)
        base = hed2rgb(hed)
        changed = hed2rgb(np.clip(hed * alpha + beta, 0, None))
        out = image + (changed - base)
    else:
        alpha = np.array([1.0 + _signed(rng, a_lo, a_hi)])
        beta = np.array([_signed(rng, b_lo, b_hi) * 10.0])
        od = -np.log(np.clip(image, 1e-3, 1.0))
        out = np.exp(-np.clip(od * alpha[0] + beta[0], 0, None))
    return clip01(out), {"alpha": [r(a, 4) for a in alpha], "beta": [r(b, 5) for b in beta]}


def _disk(radius: float) -> np.ndarray:
    """Anti-aliased pillbox (defocus point spread function), normalized to sum 1."""
    half = int(np.ceil(radius)) + 1
    ss = 4  # supersampling for partial pixel coverage
    g = (np.arange(-half * ss, (half + 1) * ss) + 0.5) / ss - 0.5 / ss
    yy, xx = np.meshgrid(g, g, indexing="ij")
    inside = (yy ** 2 + xx ** 2 <= radius ** 2).astype(np.float64)
    n = 2 * half + 1
    k = inside[: n * ss, : n * ss].reshape(n, ss, n, ss).mean(axis=(1, 3))
    return k / k.sum()


def focus_blur(image: np.ndarray, level: int, rng: np.random.Generator):
    """Out-of-focus scan: convolution with a defocus disk of radius `radius_px`."""
    radius = uniform(rng, *pick(level, (1.3, 2.0), (3.2, 4.5))) * spatial_scale(image)
    kernel = _disk(radius)
    out = per_channel(image, lambda c: fft_convolve(c, kernel))
    return clip01(out), {"radius_px": r(radius, 4)}


def compression(image: np.ndarray, level: int, rng: np.random.Generator):
    """Lossy JPEG storage (8x8 DCT blocks, 4:2:0 chroma for RGB) at `quality` (PIL, in memory)."""
    quality = int(rng.integers(*pick(level, (18, 33), (3, 9))))
    stored = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(stored, mode="L" if image.ndim == 2 else "RGB").save(
        buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        out = np.asarray(im.convert("L" if image.ndim == 2 else "RGB"), dtype=np.float32) / 255.0
    return out, {"quality": quality}
