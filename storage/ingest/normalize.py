"""Intensity normalization of decoded medical pixels to the stored integer image.

Windowing follows DICOM PS3.3 C.11.2.1.2 (linear): values at or below ``center - width/2`` map
to 0, at or above ``center + width/2`` to 1. Without a window the frame's own finite min-max is
used, so no information is clipped. Constant frames carry no content and are refused.
"""
from __future__ import annotations

import numpy as np

from medq.engine.formats.images import to_stored
from medq.storage.ingest.errors import CONSTANT_IMAGE, NAN_VALUES, TOO_SMALL, Rejected

# Default display windows (center, width) for modalities whose values are physical (HU).
DEFAULT_WINDOWS = {"CT": (40.0, 400.0)}


def apply_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Linear DICOM window -> float32 in [0, 1]."""
    width = max(float(width), 1.0)
    out = ((values.astype(np.float64) - (center - 0.5)) / (width - 1.0)) + 0.5
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def minmax(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Scale to [0, 1] by (lo, hi), default the finite min and max of `values`."""
    v = values.astype(np.float64)
    finite = np.isfinite(v)
    if not finite.any():
        raise Rejected(NAN_VALUES, "no finite pixel values")
    if lo is None or hi is None:
        lo, hi = float(v[finite].min()), float(v[finite].max())
    if hi <= lo:
        raise Rejected(CONSTANT_IMAGE, f"every pixel has the value {lo:g}")
    v = np.where(finite, v, lo)
    return np.clip((v - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def finish(img: np.ndarray, *, bits: int, min_side: int) -> np.ndarray:
    """Checks shared by every decoder, then the stored integer image (uint8/uint16).

    `img` is float in [0, 1] or already uint8/uint16; (H, W) or (H, W, 3)."""
    if img.ndim < 2 or min(img.shape[:2]) < min_side:
        raise Rejected(TOO_SMALL, f"{'x'.join(map(str, img.shape[:2]))} px, the minimum side "
                       f"is {min_side} px")
    if img.dtype.kind == "f" and not np.all(np.isfinite(img)):
        raise Rejected(NAN_VALUES, "image holds NaN or infinite values")
    stored = to_stored(img, bits=bits) if img.dtype.kind == "f" else img
    if stored.dtype == np.uint16 and bits == 8:
        stored = to_stored(minmax(stored), bits=8)
    if stored.size and stored.min() == stored.max():
        raise Rejected(CONSTANT_IMAGE, f"every pixel has the value {int(stored.flat[0])}")
    return stored


def to_unit_gray(values: np.ndarray) -> np.ndarray:
    """Any-dtype grayscale/RGB frame without a window -> float [0, 1] (uint8 kept exact)."""
    if values.dtype == np.uint8:
        return values.astype(np.float32) / 255.0
    return minmax(values)


def evenly_spaced(n_total: int, n_take: int) -> list[int]:
    """`n_take` indices spread over range(n_total), avoiding the extreme ends when sampling."""
    if n_take >= n_total:
        return list(range(n_total))
    picks = np.linspace(0, n_total - 1, n_take + 2)[1:-1]
    return sorted({round(p) for p in picks})
