"""Small helpers shared by the simulators (pure numpy / scipy, no I/O).

Conventions: images are float32 in [0, 1], (H, W) or (H, W, 3). Spatial parameters of the
simulators are defined for a 128-pixel reference image and scaled by :func:`spatial_scale` so that
a level means the same visual severity at any working size.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from medq.errors import MedQError

REFERENCE_SIZE = 128
# ITU-R BT.601 luma weights: the "gray" of an RGB image for grayscale physics.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class DegradationError(MedQError):
    """A degradation cannot be applied: unknown type, bad level or bad image."""


def check_image(image: np.ndarray, where: str = "image") -> np.ndarray:
    """Validate and return `image` as float32 (H, W) or (H, W, 3); raises DegradationError."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise DegradationError(f"{where}: expected shape (H, W) or (H, W, 3), got {arr.shape}")
    if min(arr.shape[:2]) < 8:
        raise DegradationError(f"{where}: image too small to degrade ({arr.shape[:2]})")
    if not np.issubdtype(arr.dtype, np.floating):
        raise DegradationError(f"{where}: expected a float image in [0, 1], got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise DegradationError(f"{where}: image contains NaN or infinite values")
    return arr


def clip01(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 1.0).astype(np.float32, copy=False)


def spatial_scale(image: np.ndarray) -> float:
    """Side of the image relative to the 128-px reference (spatial parameters scale with it)."""
    return min(image.shape[:2]) / REFERENCE_SIZE


def luminance(image: np.ndarray) -> np.ndarray:
    """(H, W) luma of an RGB image; a grayscale image is returned as is."""
    if image.ndim == 2:
        return image
    return (image @ LUMA).astype(np.float32)


def on_luminance(image: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply a grayscale physics model `fn` ((H, W) -> (H, W)).

    For RGB the model runs once on the luma and its change is added to every channel, which keeps
    the colours and costs one run instead of three (CT/MRI/US physics has no colour)."""
    if image.ndim == 2:
        return clip01(fn(image))
    y = luminance(image)
    delta = fn(y) - y
    return clip01(image + delta[:, :, None])


def per_channel(image: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply a linear spatial operation channel by channel."""
    if image.ndim == 2:
        return fn(image).astype(np.float32, copy=False)
    return np.stack([fn(image[:, :, c]) for c in range(image.shape[2])], axis=-1).astype(np.float32)


def resize(img2d: np.ndarray, shape: tuple[int, int],
           resample: int = Image.Resampling.BILINEAR) -> np.ndarray:
    """Resize one float channel to `shape` (H, W) with PIL's float mode (fast, no clipping)."""
    if img2d.shape == tuple(shape):
        return img2d.astype(np.float32, copy=False)
    pil = Image.fromarray(np.ascontiguousarray(img2d, dtype=np.float32), mode="F")
    return np.asarray(pil.resize((shape[1], shape[0]), resample), dtype=np.float32)


def resize_image(image: np.ndarray, shape: tuple[int, int],
                 resample: int = Image.Resampling.BILINEAR) -> np.ndarray:
    """Resize an (H, W) or (H, W, 3) float image to `shape` (H, W)."""
    return per_channel(image, lambda c: resize(c, shape, resample))


def uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def pick(level: int, mild, severe):
    """The level-dependent parameter range: level 1 -> `mild`, level 2 -> `severe`."""
    return mild if level == 1 else severe


def norm_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in [-1, 1]: (yy, xx) of shape (H, W)."""
    y = np.linspace(-1.0, 1.0, h, dtype=np.float32)
    x = np.linspace(-1.0, 1.0, w, dtype=np.float32)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    return yy, xx


def fft_convolve(img2d: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Same-size convolution with reflect padding (FFT; kernels here are up to ~40 px)."""
    kh, kw = kernel.shape
    ph, pw = kh // 2 + 1, kw // 2 + 1
    padded = np.pad(img2d, ((ph, ph), (pw, pw)), mode="reflect")
    from scipy.signal import fftconvolve
    out = fftconvolve(padded, kernel, mode="same")
    return out[ph:ph + img2d.shape[0], pw:pw + img2d.shape[1]].astype(np.float32)


def r(x: float, nd: int = 5) -> float:
    """A parameter rounded for provenance (JSON-friendly, stable text)."""
    return round(float(x), nd)
