"""Handcrafted, model-independent, quality-aware image features.

:func:`quality_features` maps a batch of images (float32 in [0, 1], (H, W) or (H, W, 3), any size)
to an ``(N, D)`` float32 matrix. It needs no weights, is deterministic and costs about 1-3 ms per
128x128 image on one CPU core. The columns are named by :func:`feature_names` and grouped by
:data:`FEATURE_GROUPS` (group -> column slice), so a consumer can weight or drop groups.

Every image is first reduced to a luminance plane (Rec.601 weights for RGB) and resampled to a
fixed ``WORK x WORK`` working image (area averaging when shrinking, bilinear when enlarging). Fine
scale statistics that resampling would wash out (noise, blockiness, native sharpness) are also
measured on a ``NATIVE x NATIVE`` centre crop at the image's own resolution, aligned to the 8x8
JPEG grid. Units: intensities are in [0, 1]; energies and noise levels are reported as log10 so that
the scale of a column does not span orders of magnitude. No column has an intrinsic "good"
direction; they describe, the model decides.

Feature groups (``name``: columns, what it responds to):

- ``mscn`` (22): mean-subtracted contrast-normalized coefficients (BRISQUE-style) at the working
  scale and half of it: variance, skewness, excess kurtosis, and the mean and standard deviation of
  the products of neighbouring coefficients in the horizontal, vertical and two diagonal directions.
  Natural-scene statistics: noise, blur, speckle and compression all move these.
- ``noise`` (6): noise sigma from the median absolute deviation of the finest Haar diagonal band
  (Donoho) on the working image and on the native crop, Immerkaer's Laplacian estimate on the native
  crop, the same MAD estimate restricted to the darkest and brightest quarter of the native crop
  (Rician background noise, multiplicative speckle), and log(dark/bright) ratio.
- ``sharpness`` (6): Laplacian variance and gradient energy (Sobel) on the working image and the
  native crop, Laplacian variance normalized by the image variance (contrast-free focus), and the
  ratio of gradient energy at the working scale to that after a 2x reduction (edge width proxy).
- ``spectrum`` (9): share of the (Hann-windowed, DC-removed) power in 8 log-spaced radial bands of
  spatial frequency, and the slope of log power against log frequency (blur, low resolution,
  noise, undersampling all reshape it).
- ``exposure`` (13): mean, standard deviation, skewness, excess kurtosis, percentiles 1/5/50/95/99,
  fractions of clipped dark (<= 0.02) and bright (>= 0.98) pixels, the entropy of a 32-bin
  histogram (bits / 5) and the 1-99 % dynamic range (exposure, brightness, contrast).
- ``colour`` (14): 1 if the image has distinct colour channels, per-channel mean and standard
  deviation, HSV saturation mean and std, Hasler-Suesstrunk colourfulness, mean red-green and
  yellow-blue opponent values, and the fraction of bright unsaturated pixels (specular highlights).
  All zero for grayscale images (2-D arrays or three identical channels).
- ``illumination`` (7): the low-frequency field (16x16 block means, divided by the global mean):
  coefficient of variation, range, magnitude and explained variance of a best-fit plane (smooth
  gradients such as bias fields), centre-to-periphery ratio, and the spread of the column and row
  profiles (vertical/horizontal shadow bands).
- ``streaks`` (15): share of mid/high-frequency power in 12 orientation bins over [0, pi) (by the
  projection-slice theorem, a Radon-like directional energy), plus anisotropy (max / mean bin),
  orientation entropy and the max bin share (streaks, limited-angle wedges, motion blur direction).
- ``periodic`` (6): prominence of the strongest secondary peak of the normalized autocorrelation
  of the gradient image (power whitened by |f|^2) along rows and along columns, and its lag as a
  fraction of the working size (ghost replicas, aliasing wrap-around); spectral peakiness (log
  max / mean high-frequency power; spikes, herringbone) and the share of high-frequency power in
  bins stronger than 20x the mean.
- ``blockiness`` (3): log ratio of absolute intensity steps across 8-pixel block boundaries to
  steps inside blocks, horizontally and vertically, on the grid-aligned native crop, and the
  fraction of near-zero high-frequency 8x8 DCT coefficients (JPEG quantization).
- ``content`` (64): the working luminance averaged into 8x8 blocks (a coarse content descriptor,
  row-major), so that quality statistics can be read in the context of what is depicted.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import ndimage

from medq.errors import MedQError

WORK = 128          # working size (pixels) every image is resampled to
NATIVE = 64         # side of the native-resolution centre crop (multiple of 8)
_CHUNK = 256        # images processed together (bounds memory at ~ CHUNK * 1 MB)
_EPS = 1e-8


class FeatureInputError(MedQError, ValueError):
    """An image given to :func:`quality_features` is not a usable array."""


def _names() -> list[tuple[str, list[str]]]:
    dirs = ("h", "v", "d1", "d2")
    mscn = []
    for s in ("s1", "s2"):
        mscn += [f"mscn_{s}_var", f"mscn_{s}_skew", f"mscn_{s}_kurt"]
        mscn += [f"mscn_{s}_pair_{d}_mean" for d in dirs]
        mscn += [f"mscn_{s}_pair_{d}_std" for d in dirs]
    return [
        ("mscn", mscn),
        ("noise", ["noise_mad_work", "noise_mad_native", "noise_immerkaer_native",
                   "noise_mad_dark", "noise_mad_bright", "noise_dark_bright_ratio"]),
        ("sharpness", ["lap_var_work", "lap_var_native", "grad_energy_work", "grad_energy_native",
                       "lap_var_normalized", "grad_ratio_half"]),
        ("spectrum", [f"radial_band_{i}" for i in range(8)] + ["spectral_slope"]),
        ("exposure", ["lum_mean", "lum_std", "lum_skew", "lum_kurt", "lum_p01", "lum_p05",
                      "lum_p50", "lum_p95", "lum_p99", "clip_dark", "clip_bright",
                      "hist_entropy", "dynamic_range"]),
        ("colour", ["is_colour", "mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b",
                    "sat_mean", "sat_std", "colourfulness", "opp_rg_mean", "opp_yb_mean",
                    "specular_fraction", "sat_max_fraction"]),
        ("illumination", ["illum_cv", "illum_range", "illum_plane_slope", "illum_plane_r2",
                          "illum_centre_ratio", "illum_col_std", "illum_row_std"]),
        ("streaks", [f"orient_band_{i}" for i in range(12)]
         + ["orient_anisotropy", "orient_entropy", "orient_max"]),
        ("periodic", ["acf_peak_rows", "acf_peak_cols", "acf_lag_rows", "acf_lag_cols",
                      "spectral_peakiness", "spectral_top_share"]),
        ("blockiness", ["block_h", "block_v", "dct_zero_fraction"]),
        ("content", [f"content_{r}_{c}" for r in range(8) for c in range(8)]),
    ]


def _groups() -> dict[str, slice]:
    out, start = {}, 0
    for group, names in _names():
        out[group] = slice(start, start + len(names))
        start += len(names)
    return out


FEATURE_GROUPS: dict[str, slice] = _groups()


def feature_names() -> list[str]:
    """Column names of :func:`quality_features`, in order."""
    return [n for _, names in _names() for n in names]


FEATURE_DIM = len(feature_names())


# --------------------------------------------------------------------------------------------
# Input normalization and resampling
# --------------------------------------------------------------------------------------------

def _as_float_image(img, index: int) -> np.ndarray:
    """(H, W) or (H, W, 3) float32 in [0, 1]; integers are scaled by their dtype's maximum."""
    if not isinstance(img, np.ndarray):
        raise FeatureInputError(f"image {index}: expected a numpy array, got {type(img).__name__}")
    a = img
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]  # alpha carries no quality information
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise FeatureInputError(f"image {index}: expected shape (H, W) or (H, W, 3), got {img.shape}")
    if a.shape[0] < 8 or a.shape[1] < 8:
        raise FeatureInputError(f"image {index}: too small ({a.shape[0]}x{a.shape[1]}), need >= 8x8")
    if np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    elif a.dtype == np.bool_:
        a = a.astype(np.float32)
    else:
        a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise FeatureInputError(f"image {index}: contains NaN or infinite values")
    if a.ndim == 3 and np.array_equal(a[:, :, 0], a[:, :, 1]) and np.array_equal(a[:, :, 1], a[:, :, 2]):
        a = a[:, :, 0]  # three identical channels are grayscale: identical features to the 2-D form
    return np.clip(a, 0.0, 1.0)


@lru_cache(maxsize=64)
def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix: area averaging when shrinking, linear interpolation when enlarging."""
    m = np.zeros((n_out, n_in), np.float64)
    if n_in >= n_out:
        scale = n_in / n_out
        for j in range(n_out):
            lo, hi = j * scale, (j + 1) * scale
            for i in range(int(np.floor(lo)), min(int(np.ceil(hi)), n_in)):
                m[j, i] = max(0.0, min(hi, i + 1) - max(lo, i))
            m[j] /= scale
    else:
        pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        pos = np.clip(pos, 0, n_in - 1)
        i0 = np.floor(pos).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        w = pos - i0
        m[np.arange(n_out), i0] += 1 - w
        m[np.arange(n_out), i1] += w
    return m.astype(np.float32)


def _resize(planes: np.ndarray, size: int) -> np.ndarray:
    """Resample a stack of planes (..., H, W) to (..., size, size). Exact multiples of `size` are
    block means; otherwise integer block means first keep large images cheap, then the area /
    bilinear matrices."""
    h, w = planes.shape[-2:]
    if h == size and w == size:
        return planes
    kh, kw = max(1, h // size if h % size == 0 else h // (2 * size)), \
        max(1, w // size if w % size == 0 else w // (2 * size))
    if kh > 1 or kw > 1:
        h2, w2 = (h // kh) * kh, (w // kw) * kw
        lead = planes.shape[:-2]
        planes = planes[..., :h2, :w2].reshape(*lead, h2 // kh, kh, w2 // kw, kw).mean(axis=(-3, -1))
        h, w = planes.shape[-2:]
    lead = planes.shape[:-2]
    if h != size:  # one GEMM for the whole stack: (size, h) @ (h, n*w)
        flat = np.moveaxis(planes.reshape(-1, h, w), 1, 0).reshape(h, -1)
        planes = np.moveaxis((_resize_matrix(h, size) @ flat).reshape(size, -1, w), 0, 1)
        h = size
    if w != size:  # (n*h, w) @ (w, size)
        planes = np.ascontiguousarray(planes).reshape(-1, w) @ _resize_matrix(w, size).T
    return np.ascontiguousarray(planes).reshape(*lead, size, size)


def _luminance(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2:
        return a
    return a[:, :, 0] * 0.299 + a[:, :, 1] * 0.587 + a[:, :, 2] * 0.114


def _native_crop(lum: np.ndarray, work: np.ndarray) -> np.ndarray:
    """NATIVE x NATIVE centre crop at native resolution, top-left on the 8x8 grid; images smaller
    than the crop fall back to the centre of the working image."""
    h, w = lum.shape
    if h < NATIVE or w < NATIVE:
        o = (WORK - NATIVE) // 2
        return work[o:o + NATIVE, o:o + NATIVE]
    y = ((h - NATIVE) // 2) // 8 * 8
    x = ((w - NATIVE) // 2) // 8 * 8
    return lum[y:y + NATIVE, x:x + NATIVE]


# --------------------------------------------------------------------------------------------
# Feature groups, vectorized over a batch (N, S, S)
# --------------------------------------------------------------------------------------------

def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, std, skewness, excess kurtosis over all but the first axis."""
    flat = x.reshape(x.shape[0], -1)
    mu = flat.mean(1, dtype=np.float64)
    d = flat - mu[:, None].astype(flat.dtype)
    d2 = d * d
    var = d2.mean(1, dtype=np.float64)
    sd = np.sqrt(var)
    skew = (d2 * d).mean(1, dtype=np.float64) / (sd ** 3 + _EPS)
    kurt = (d2 * d2).mean(1, dtype=np.float64) / (var ** 2 + _EPS) - 3.0
    # flat images: moments undefined, report 0 instead of noise from the epsilon
    flat_img = sd < 1e-6
    skew[flat_img] = 0.0
    kurt[flat_img] = 0.0
    return mu, sd, skew, kurt


def _mscn(x: np.ndarray) -> np.ndarray:
    # Gaussian local mean/std, sigma 7/6 as in BRISQUE, truncated at 2 sigma (5 taps) for speed
    mu = ndimage.gaussian_filter(x, sigma=7 / 6, axes=(1, 2), truncate=2.0, mode="reflect")
    sq = ndimage.gaussian_filter(x * x, sigma=7 / 6, axes=(1, 2), truncate=2.0, mode="reflect")
    sigma = np.sqrt(np.maximum(sq - mu * mu, 0))
    m = (x - mu) / (sigma + 1.0 / 255)
    n = len(x)
    _, sd, skew, kurt = _moments(m)
    pairs = [m[:, :, :-1] * m[:, :, 1:], m[:, :-1, :] * m[:, 1:, :],
             m[:, :-1, :-1] * m[:, 1:, 1:], m[:, :-1, 1:] * m[:, 1:, :-1]]
    means = [p.reshape(n, -1).mean(1, dtype=np.float64) for p in pairs]
    sq_means = [np.einsum("ij,ij->i", p.reshape(n, -1), p.reshape(n, -1), dtype=np.float64)
                / p[0].size for p in pairs]
    stds = [np.sqrt(np.maximum(q - mm * mm, 0)) for q, mm in zip(sq_means, means)]
    return np.stack([sd ** 2, skew, kurt, *means, *stds], 1)


def _haar(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Finest Haar level: (LL / 2 = local 2x2 mean, HH diagonal detail), each (N, S/2, S/2)."""
    a, b = x[:, 0::2, 0::2], x[:, 0::2, 1::2]
    c, d = x[:, 1::2, 0::2], x[:, 1::2, 1::2]
    return (a + b + c + d) / 4, (a - b - c + d) / 2


def _log(v, floor: float = 1e-6) -> np.ndarray:
    return np.log10(np.maximum(v, floor))


def _noise(work: np.ndarray, native: np.ndarray) -> np.ndarray:
    _, hh_w = _haar(work)
    ll_n, hh_n = _haar(native)
    n = len(work)
    mad_w = np.median(np.abs(hh_w).reshape(n, -1), 1) / 0.6745
    abs_n = np.abs(hh_n).reshape(n, -1)
    mad_n = np.median(abs_n, 1) / 0.6745
    # Immerkaer's mask [[1,-2,1],[-2,4,-2],[1,-2,1]] is the outer product of [1,-2,1]
    r1 = native[:, :, :-2] - 2 * native[:, :, 1:-1] + native[:, :, 2:]
    conv = r1[:, :-2] - 2 * r1[:, 1:-1] + r1[:, 2:]
    immerkaer = np.sqrt(np.pi / 2) * np.abs(conv).reshape(n, -1).mean(1) / 6
    ll = ll_n.reshape(n, -1)
    lo = np.quantile(ll, 0.25, axis=1, keepdims=True)
    hi = np.quantile(ll, 0.75, axis=1, keepdims=True)
    # mean |HH| * sqrt(pi/2) is the Gaussian sigma; cheaper than a masked median per image
    dark_m, bright_m = ll <= lo, ll >= hi
    dark = (abs_n * dark_m).sum(1) / np.maximum(dark_m.sum(1), 1) * np.sqrt(np.pi / 2)
    bright = (abs_n * bright_m).sum(1) / np.maximum(bright_m.sum(1), 1) * np.sqrt(np.pi / 2)
    return np.stack([_log(mad_w), _log(mad_n), _log(immerkaer), _log(dark), _log(bright),
                     _log(dark) - _log(bright)], 1)


def _grad_energy(x: np.ndarray) -> np.ndarray:
    """Mean squared Sobel gradient magnitude over the interior (Sobel gain of 8 divided out)."""
    sx = x[:, :, 2:] - x[:, :, :-2]                       # central difference along columns
    gx = sx[:, :-2] + 2 * sx[:, 1:-1] + sx[:, 2:]        # smoothed along rows
    sy = x[:, 2:, :] - x[:, :-2, :]
    gy = sy[:, :, :-2] + 2 * sy[:, :, 1:-1] + sy[:, :, 2:]
    return (gx * gx + gy * gy).reshape(len(x), -1).mean(1, dtype=np.float64) / 64


def _laplacian(x: np.ndarray) -> np.ndarray:
    """4-neighbour Laplacian over the interior, (N, S-2, S-2)."""
    c = x[:, 1:-1, 1:-1]
    return x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:] - 4 * c


def _sharpness(work: np.ndarray, native: np.ndarray, lum_var: np.ndarray) -> np.ndarray:
    n = len(work)
    lap_w = _laplacian(work).reshape(n, -1).var(1, dtype=np.float64)
    lap_n = _laplacian(native).reshape(n, -1).var(1, dtype=np.float64)
    ge_w = _grad_energy(work)
    ge_n = _grad_energy(native)
    half = work.reshape(n, WORK // 2, 2, WORK // 2, 2).mean(axis=(2, 4))
    ge_half = _grad_energy(half)
    return np.stack([_log(lap_w, 1e-9), _log(lap_n, 1e-9), _log(ge_w, 1e-9), _log(ge_n, 1e-9),
                     _log(lap_w / (lum_var + 1e-6), 1e-6),
                     _log(ge_w + 1e-9) - _log(ge_half + 1e-9)], 1)


@lru_cache(maxsize=1)
def _freq_grids():
    """Grids over the rfft2 half-plane: radius and orientation bins, the Hermitian weight of each
    column (interior columns stand for two bins of the full plane) and the 2-D Hann window."""
    fy = np.fft.fftfreq(WORK)[:, None]
    fx = np.fft.rfftfreq(WORK)[None, :]
    r = np.sqrt(fx ** 2 + fy ** 2) + 0 * fy
    theta = np.mod(np.arctan2(fy + 0 * fx, fx + 0 * fy), np.pi)
    weight = np.full(fx.shape[1], 2.0)
    weight[0] = weight[-1] = 1.0
    weight = np.broadcast_to(weight[None, :], r.shape).ravel()
    hann = np.hanning(WORK).astype(np.float32)
    window = np.outer(hann, hann)
    edges = np.array([0.0, 1 / 64, 1 / 32, 1 / 16, 1 / 8, 3 / 16, 1 / 4, 3 / 8, 1.0])
    radial = np.clip(np.digitize(r, edges) - 1, 0, 7).ravel()
    orient = np.minimum((theta / np.pi * 12).astype(int), 11).ravel()
    mid = ((r >= 0.08) & (r <= 0.5)).ravel()
    high = (r >= 0.05).ravel()
    # (bins, freq) summation matrices so that band energies are one matmul
    band_m = (radial[None, :] == np.arange(8)[:, None]) * weight[None, :]
    orient_m = ((orient[None, :] == np.arange(12)[:, None]) & mid[None, :]) * weight[None, :]
    counts = band_m.sum(1)
    return band_m.T.copy(), orient_m.T.copy(), counts, high, weight, window, (r ** 2).astype(np.float32)


def _spectral(work: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Power spectrum features (spectrum, streaks, periodic) and the autocorrelation
    (rows, columns)."""
    from scipy import fft as sfft
    band_m, orient_m, counts, high, weight, window, r2 = _freq_grids()
    n = len(work)
    centred = work - work.mean(axis=(1, 2), keepdims=True)
    spec = sfft.rfft2(centred * window, axes=(1, 2))
    power = spec.real ** 2 + spec.imag ** 2
    power[:, 0, 0] = 0.0
    p = power.reshape(n, -1).astype(np.float64)
    total = p @ weight + _EPS
    band_e = p @ band_m
    bands = band_e / total[:, None]
    mean_band = band_e / counts
    centres = np.array([1 / 128, 1.5 / 64, 1.5 / 32, 1.5 / 16, 5 / 32, 7 / 32, 5 / 16, 0.5])
    lx = np.log10(centres[1:])
    ly = _log(mean_band[:, 1:], 1e-12)
    lxc = lx - lx.mean()
    slope = (ly - ly.mean(1, keepdims=True)) @ lxc / (lxc @ lxc)
    spectrum = np.concatenate([_log(bands, 1e-8), slope[:, None]], 1)

    orient_e = p @ orient_m
    orient_e = orient_e / (orient_e.sum(1, keepdims=True) + _EPS)
    aniso = orient_e.max(1) / (orient_e.mean(1) + _EPS)
    ent = -(orient_e * np.log(orient_e + 1e-12)).sum(1) / np.log(12)
    streaks = np.concatenate([_log(orient_e, 1e-6), aniso[:, None], ent[:, None],
                              orient_e.max(1)[:, None]], 1)

    hf = p[:, high]
    hf_mean = hf.mean(1) + 1e-12
    peaky = _log(hf.max(1) / hf_mean, 1e-6)
    # share of high-frequency power in isolated strong bins (> 20x the mean): spikes, periodic
    # ghost patterns; a threshold instead of a top-k sort keeps it linear
    top = np.where(hf > 20 * hf_mean[:, None], hf, 0).sum(1) / (hf.sum(1) + _EPS)
    # autocorrelation along each axis at zero offset on the other = 1-D inverse transform of the
    # power projected onto that axis (projection-slice theorem); no 2-D inverse FFT needed
    # (rows: the Hermitian weights double the interior columns; the error that introduces is odd
    # in fy, so its transform is imaginary and dropped by .real). The power is whitened by |f|^2
    # (the autocorrelation of the gradient image): smooth content would otherwise give one broad
    # peak that hides the sharp echoes of ghosts.
    pw = (power * r2[None]).astype(np.float64)
    acf_rows = np.fft.ifft((pw * weight.reshape(power.shape[1:])[None]).sum(2), axis=1).real
    acf_cols = np.fft.irfft(pw.sum(1), n=WORK, axis=1)
    acf_rows = acf_rows / (acf_rows[:, :1] + _EPS)
    acf_cols = acf_cols / (acf_cols[:, :1] + _EPS)
    return spectrum, streaks, np.stack([peaky, top], 1), (acf_rows, acf_cols)


def _acf_peaks(acf: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Prominence of the strongest secondary autocorrelation peak along each axis (ghosts)."""
    lags = np.arange(6, WORK // 2)
    out = []
    for line in acf:
        centre = line[:, lags]
        around = 0.5 * (line[:, lags - 4] + line[:, lags + 4])
        prom = centre - around
        best = prom.argmax(1)
        out.append((prom[np.arange(len(prom)), best], lags[best] / WORK))
    (pr, lr), (pc, lc) = out
    return np.stack([pr, pc, lr, lc], 1)


def _exposure(work: np.ndarray) -> np.ndarray:
    n = len(work)
    flat = work.reshape(n, -1)
    mu, sd, skew, kurt = _moments(work)
    # percentiles from a 256-bin histogram (1/256 resolution, linear inside the bin) instead of a
    # sort per image: an order of magnitude cheaper
    idx = np.minimum((flat * 256).astype(np.int64), 255) + 256 * np.arange(n)[:, None]
    hist = np.bincount(idx.ravel(), minlength=256 * n).reshape(n, 256) / flat.shape[1]
    cdf = np.cumsum(hist, 1)
    qs = []
    for q in (0.01, 0.05, 0.5, 0.95, 0.99):
        b = np.minimum((cdf < q).sum(1), 255)
        before = np.where(b > 0, cdf[np.arange(n), b - 1], 0.0)
        inside = hist[np.arange(n), b]
        frac = np.clip((q - before) / np.maximum(inside, 1e-12), 0, 1)
        qs.append((b + frac) / 256)
    quantiles = np.stack(qs, 1)
    clip_dark = (flat <= 0.02).mean(1)
    clip_bright = (flat >= 0.98).mean(1)
    h32 = hist.reshape(n, 32, 8).sum(2)
    ent = -(h32 * np.log2(h32 + 1e-12)).sum(1) / 5.0
    return np.concatenate([np.stack([mu, sd, skew, kurt], 1), quantiles,
                           np.stack([clip_dark, clip_bright, ent,
                                     quantiles[:, 4] - quantiles[:, 0]], 1)], 1)


def _colour(rgb: np.ndarray) -> np.ndarray:
    """Colour features of working-size RGB images (M, WORK, WORK, 3) -> (M, 14)."""
    m = len(rgb)
    ch = rgb.reshape(m, -1, 3)
    mx, mn = ch.max(2), ch.min(2)
    sat = (mx - mn) / (mx + 1e-6)
    rg = ch[:, :, 0] - ch[:, :, 1]
    yb = 0.5 * (ch[:, :, 0] + ch[:, :, 1]) - ch[:, :, 2]
    rg_m, yb_m = rg.mean(1, dtype=np.float64), yb.mean(1, dtype=np.float64)
    colourful = (np.sqrt(rg.var(1, dtype=np.float64) + yb.var(1, dtype=np.float64))
                 + 0.3 * np.sqrt(rg_m ** 2 + yb_m ** 2))
    specular = ((mx >= 0.92) & (sat <= 0.2)).mean(1)
    return np.concatenate([np.ones((m, 1)), ch.mean(1, dtype=np.float64),
                           ch.std(1, dtype=np.float64),
                           np.stack([sat.mean(1, dtype=np.float64), sat.std(1, dtype=np.float64),
                                     colourful, rg_m, yb_m, specular, (sat >= 0.9).mean(1)], 1)], 1)


def _illumination(work: np.ndarray) -> np.ndarray:
    n = len(work)
    field = work.reshape(n, 16, WORK // 16, 16, WORK // 16).mean(axis=(2, 4)).astype(np.float64)
    field = field / (field.mean(axis=(1, 2), keepdims=True) + 1e-3)
    f = field.reshape(n, -1)
    cv = f.std(1)
    rng = np.quantile(f, 0.95, axis=1) - np.quantile(f, 0.05, axis=1)
    yy, xx = np.meshgrid(np.linspace(-1, 1, 16), np.linspace(-1, 1, 16), indexing="ij")
    design = np.stack([np.ones(256), yy.ravel(), xx.ravel()], 1)
    coef, *_ = np.linalg.lstsq(design, f.T, rcond=None)
    fitted = (design @ coef).T
    ss_tot = ((f - f.mean(1, keepdims=True)) ** 2).sum(1) + 1e-9
    r2 = 1 - ((f - fitted) ** 2).sum(1) / ss_tot
    slope = np.sqrt(coef[1] ** 2 + coef[2] ** 2)
    centre = field[:, 4:12, 4:12].mean(axis=(1, 2))
    ring = (field.sum(axis=(1, 2)) - field[:, 4:12, 4:12].sum(axis=(1, 2))) / (256 - 64)
    return np.stack([cv, rng, slope, r2, _log(centre + 1e-3) - _log(ring + 1e-3),
                     field.mean(1).std(1), field.mean(2).std(1)], 1)


def _blockiness(native: np.ndarray) -> np.ndarray:
    n = len(native)
    dh = np.abs(np.diff(native, axis=2))  # (N, S, S-1): step between column j and j+1
    dv = np.abs(np.diff(native, axis=1))
    j = np.arange(NATIVE - 1)
    boundary = (j + 1) % 8 == 0
    bh = dh[:, :, boundary].reshape(n, -1).mean(1) / (dh[:, :, ~boundary].reshape(n, -1).mean(1) + 1e-5)
    bv = dv[:, boundary, :].reshape(n, -1).mean(1) / (dv[:, ~boundary, :].reshape(n, -1).mean(1) + 1e-5)
    blocks = native.reshape(n, NATIVE // 8, 8, NATIVE // 8, 8).transpose(0, 1, 3, 2, 4)
    from scipy.fft import dctn
    coef = dctn(blocks, type=2, axes=(3, 4), norm="ortho")
    u, v = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    high = (u + v) >= 6
    zero = (np.abs(coef[..., high]) < 0.5 / 255).reshape(n, -1).mean(1)
    return np.stack([_log(bh, 1e-3), _log(bv, 1e-3), zero], 1)


def _chunk_features(images: list[np.ndarray]) -> np.ndarray:
    n = len(images)
    work = np.empty((n, WORK, WORK), np.float32)
    native = np.empty((n, NATIVE, NATIVE), np.float32)
    colour = np.zeros((n, 14), np.float64)
    lums = [_luminance(a) for a in images]
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, lum in enumerate(lums):
        by_shape.setdefault(lum.shape, []).append(i)
    for idx in by_shape.values():  # same-size images are resampled as one stack
        work[idx] = _resize(np.stack([lums[i] for i in idx]), WORK)
    rgb_idx, rgb = [], []
    for i, (a, lum) in enumerate(zip(images, lums)):
        native[i] = _native_crop(lum, work[i])
        if a.ndim == 3:
            rgb_idx.append(i)
            rgb.append(_resize(np.ascontiguousarray(a.transpose(2, 0, 1)), WORK).transpose(1, 2, 0))
    if rgb_idx:
        colour[rgb_idx] = _colour(np.clip(np.stack(rgb), 0, 1))
    np.clip(work, 0, 1, out=work)

    exposure = _exposure(work)
    lum_var = exposure[:, 1] ** 2
    half = work.reshape(n, WORK // 2, 2, WORK // 2, 2).mean(axis=(2, 4))
    spectrum, streaks, periodic2, acf = _spectral(work)
    content = work.reshape(n, 8, WORK // 8, 8, WORK // 8).mean(axis=(2, 4)).reshape(n, 64)
    parts = [
        np.concatenate([_mscn(work), _mscn(half)], 1),
        _noise(work, native),
        _sharpness(work, native, lum_var),
        spectrum,
        exposure,
        colour,
        _illumination(work),
        streaks,
        np.concatenate([_acf_peaks(acf), periodic2], 1),
        _blockiness(native),
        content,
    ]
    out = np.concatenate(parts, 1)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def quality_features(images: Sequence[np.ndarray]) -> np.ndarray:
    """Quality-aware features of each image.

    `images`: a sequence of arrays (H, W) or (H, W, 3) (also (H, W, 1) / RGBA), float in [0, 1]
    (integers are scaled by their dtype maximum), each at least 8x8; sizes may differ.
    Returns ``(N, FEATURE_DIM)`` float32, columns named by :func:`feature_names`. Deterministic.
    Raises :class:`FeatureInputError` naming the first bad image.
    """
    prepared = [_as_float_image(img, i) for i, img in enumerate(images)]
    if not prepared:
        return np.zeros((0, FEATURE_DIM), np.float32)
    chunks = [_chunk_features(prepared[s:s + _CHUNK]) for s in range(0, len(prepared), _CHUNK)]
    return np.concatenate(chunks, 0)
