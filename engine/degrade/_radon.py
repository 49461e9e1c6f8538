"""A fast parallel-beam projector (radon) and filtered back-projection (FBP) for square images.

skimage's ``radon`` warps the whole image once per angle (about 120 ms at 128 px); the CT
simulators call it for every image, so here the projector is a sparse system matrix built once
per (size, number of views) and cached: a forward projection is one sparse mat-vec (a few ms).
Pixel-driven linear interpolation onto detector bins; the back-projector is its transpose, which
is the linear-interpolation back-projection of classic FBP (as in ``skimage.transform.iradon``).

Units: pixel values are attenuation per pixel; a sinogram entry is the line integral in
pixel-lengths. Angles in degrees over [0, 180).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.sparse as sp


def n_detectors(size: int) -> int:
    """Detector bins covering the image diagonal."""
    return int(np.ceil(size * np.sqrt(2.0))) + 2


@lru_cache(maxsize=4)
def system_matrix(size: int, n_views: int) -> sp.csr_matrix:
    """(n_views * n_det, size*size) CSR matrix of the projector for equally spaced views."""
    n_det = n_detectors(size)
    c = (size - 1) / 2.0
    ys, xs = np.mgrid[0:size, 0:size]
    x = (xs - c).ravel().astype(np.float64)
    y = (c - ys).ravel().astype(np.float64)  # image rows go down, y axis goes up
    pix = np.arange(size * size)
    theta = np.deg2rad(np.arange(n_views) * 180.0 / n_views)
    rows, cols, vals = [], [], []
    det_c = (n_det - 1) / 2.0
    for k, th in enumerate(theta):
        t = x * np.cos(th) + y * np.sin(th) + det_c
        i0 = np.floor(t).astype(np.int64)
        frac = t - i0
        base = k * n_det
        rows += [base + i0, base + i0 + 1]
        cols += [pix, pix]
        vals += [1.0 - frac, frac]
    mat = sp.csr_matrix((np.concatenate(vals).astype(np.float32),
                         (np.concatenate(rows), np.concatenate(cols))),
                        shape=(n_views * n_det, size * size))
    return mat


@lru_cache(maxsize=8)
def ramp_filter(n_det: int) -> np.ndarray:
    """Frequency response of the spatially sampled Ram-Lak filter (Kak & Slaney), length of the
    zero-padded projection (power of two >= 2 * n_det)."""
    n = max(64, int(2 ** np.ceil(np.log2(2 * n_det))))
    k = np.concatenate([np.arange(1, n // 2 + 1, 2), np.arange(n // 2 - 1, 0, -2)])
    h = np.zeros(n)
    h[0] = 0.25
    h[1::2] = -1.0 / (np.pi * k) ** 2
    return 2.0 * np.real(np.fft.fft(h))


def forward(image: np.ndarray, n_views: int) -> np.ndarray:
    """Sinogram (n_views, n_det) of a square (size, size) image."""
    size = image.shape[0]
    mat = system_matrix(size, n_views)
    return (mat @ image.astype(np.float32).ravel()).reshape(n_views, n_detectors(size))


def fbp(sinogram: np.ndarray, size: int, views: np.ndarray | None = None,
        n_views_full: int | None = None, weight: float | None = None) -> np.ndarray:
    """Filtered back-projection to a (size, size) image.

    `sinogram` holds rows for `views` (indices into the full equally spaced set of
    `n_views_full` views; default all). Each view is weighted by `weight` (default pi / number of
    views used, the FBP quadrature for the views present)."""
    n_det = n_detectors(size)
    n_full = n_views_full or sinogram.shape[0]
    if views is None:
        views = np.arange(n_full)
    filt = ramp_filter(n_det)
    n = filt.shape[0]
    padded = np.zeros((sinogram.shape[0], n), dtype=np.float64)
    padded[:, :n_det] = sinogram
    filtered = np.real(np.fft.ifft(np.fft.fft(padded, axis=1) * filt, axis=1))[:, :n_det]
    full = np.zeros((n_full, n_det), dtype=np.float32)
    full[views] = filtered
    mat = system_matrix(size, n_full)
    w = weight if weight is not None else np.pi / (2.0 * len(views))
    back = mat.T @ full.ravel()
    return (back * w).reshape(size, size).astype(np.float32)
