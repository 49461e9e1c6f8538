"""CT acquisition degradations, simulated in the projection domain.

The displayed image is taken as an attenuation map. It is forward projected (parallel beam,
:mod:`._radon`), the acquisition is degraded in the sinogram (photon counts, missing views, metal)
and reconstructed with filtered back-projection. Only the *change* that the degraded acquisition
makes to the reconstruction is added to the input image (FBP is linear), so image detail that a
128-px reconstruction would lose is kept and level 0 is exactly the identity.

Work happens on a square image of at most ``WORK_SIZE`` px (the projector is cached per size);
larger inputs get their artifact computed at that size and resampled.
"""
from __future__ import annotations

import numpy as np

from medq.engine.degrade import _radon
from medq.engine.degrade._util import on_luminance, pick, r, resize, uniform

WORK_SIZE = 128
N_VIEWS = 180            # fully sampled scan at the work size (1 degree apart)
MAX_LINE_INTEGRAL = 4.0  # the most attenuating ray of the image: transmission exp(-4) ~ 2 %


def _work_shape(shape: tuple[int, int]) -> int:
    return int(min(WORK_SIZE, max(shape)))


def _artifact(y: np.ndarray, residual_fn) -> np.ndarray:
    """Run `residual_fn(square_work_image) -> residual` at the work size, resample it back and
    add it to `y`."""
    n = _work_shape(y.shape)
    work = resize(y, (n, n))
    residual = residual_fn(work)
    return y + resize(residual, y.shape)


def _attenuation_scale(sino: np.ndarray) -> float:
    """Attenuation per image unit so that the strongest ray integrates to MAX_LINE_INTEGRAL."""
    peak = float(sino.max())
    return MAX_LINE_INTEGRAL / peak if peak > 1e-6 else 1.0


def low_dose(image: np.ndarray, level: int, rng: np.random.Generator):
    """Quantum noise of a reduced tube current: detected counts ~ Poisson(I0 * exp(-p)), the
    sinogram becomes -log(counts / I0), reconstructed with FBP (streaky, ramp-coloured noise).
    Lower I0 (incident photons per detector bin) = more noise."""
    i0 = uniform(rng, *pick(level, (7.0e3, 1.2e4), (1.0e3, 2.0e3)))

    def residual(work):
        p_raw = _radon.forward(work, N_VIEWS)
        scale = _attenuation_scale(p_raw)
        p = p_raw * scale
        counts = rng.poisson(i0 * np.exp(-p)).astype(np.float64)
        counts = np.maximum(counts, 1.0)  # photon starvation floor (no log of zero)
        p_noisy = -np.log(counts / i0)
        return _radon.fbp(p_noisy - p, work.shape[0]) / scale

    out = on_luminance(image, lambda y: _artifact(y, residual))
    return out, {"incident_photons": r(i0, 1), "views": N_VIEWS}


def sparse_view(image: np.ndarray, level: int, rng: np.random.Generator):
    """Only every `step`-th view is acquired: FBP of the sparse sinogram shows radial streaks."""
    step = int(rng.integers(*pick(level, (3, 5), (8, 13))))
    offset = int(rng.integers(0, step))
    views = np.arange(offset, N_VIEWS, step)

    def residual(work):
        p = _radon.forward(work, N_VIEWS)
        sparse = _radon.fbp(p[views], work.shape[0], views=views, n_views_full=N_VIEWS)
        return sparse - _radon.fbp(p, work.shape[0])

    out = on_luminance(image, lambda y: _artifact(y, residual))
    return out, {"views": len(views), "of_views": N_VIEWS, "step": step, "offset": offset}


def limited_angle(image: np.ndarray, level: int, rng: np.random.Generator):
    """Views cover only an arc of `arc` degrees (of the 180 needed): edges tangent to the missing
    directions blur out and wedge-shaped streaks appear."""
    arc = int(rng.integers(*pick(level, (125, 151), (70, 101))))
    start = int(rng.integers(0, N_VIEWS))
    views = np.sort((start + np.arange(arc * N_VIEWS // 180)) % N_VIEWS)

    def residual(work):
        p = _radon.forward(work, N_VIEWS)
        # Full-scan quadrature weight: missing views contribute nothing (the missing wedge).
        limited = _radon.fbp(p[views], work.shape[0], views=views, n_views_full=N_VIEWS,
                             weight=np.pi / (2.0 * N_VIEWS))
        # Detectors keep the mean (gain calibration): restore it so only the wedge shows.
        full = _radon.fbp(p, work.shape[0])
        limited = limited * (full.mean() / limited.mean() if abs(limited.mean()) > 1e-6 else 1.0)
        return limited - full

    out = on_luminance(image, lambda y: _artifact(y, residual))
    return out, {"arc_degrees": arc, "start_degrees": start * 180 // N_VIEWS}


def _metal_mask(work: np.ndarray, n: int, radius: float, rng: np.random.Generator) -> tuple:
    size = work.shape[0]
    yy, xx = np.mgrid[0:size, 0:size]
    # Implants sit inside the body: choose centres among bright-enough, not-too-peripheral pixels.
    fg = (work > 0.15 * work.max()) & (np.hypot(yy - size / 2, xx - size / 2) < size * 0.35)
    candidates = np.argwhere(fg) if fg.any() else np.argwhere(np.ones_like(fg))
    mask = np.zeros((size, size), dtype=np.float32)
    centres = []
    for _ in range(n):
        cy, cx = candidates[int(rng.integers(0, len(candidates)))]
        ry, rx = radius * uniform(rng, 0.7, 1.3), radius * uniform(rng, 0.7, 1.3)
        mask = np.maximum(mask, (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0)
                          .astype(np.float32))
        centres.append([int(cy), int(cx)])
    return mask, centres


def metal_streak(image: np.ndarray, level: int, rng: np.random.Generator):
    """Metal implants: a polychromatic beam hardens through metal (measured line integrals
    saturate, ``log(1 + a p) / a``) and metal traces are photon-starved (Poisson noise at low
    counts). FBP turns both into dark/bright streaks between and around the implants."""
    n = int(rng.integers(*pick(level, (1, 2), (2, 4))))
    radius_ref = uniform(rng, *pick(level, (1.5, 2.5), (2.5, 4.0)))
    metal_mu = uniform(rng, *pick(level, (4.0, 6.0), (8.0, 12.0)))  # x the brightest tissue
    hardening = uniform(rng, *pick(level, (0.2, 0.3), (0.35, 0.5)))
    i0 = 1.0e5
    info: dict = {}

    def residual(work):
        size = work.shape[0]
        mask, centres = _metal_mask(work, n, radius_ref * size / 128.0, rng)
        info["centres"] = centres
        p_raw = _radon.forward(work, N_VIEWS)
        scale = _attenuation_scale(p_raw)
        p = p_raw * scale
        pm = _radon.forward(mask, N_VIEWS) * metal_mu * scale
        measured = p + np.log1p(hardening * pm) / hardening
        counts = np.maximum(rng.poisson(i0 * np.exp(-measured)).astype(np.float64), 1.0)
        p_noisy = -np.log(counts / i0)
        # Reconstruction of the measured data minus that of the metal-free ideal data: the
        # implant (far above the display window) plus its beam-hardening and starvation streaks.
        return _radon.fbp(p_noisy - p, size) / scale

    out = on_luminance(image, lambda y: _artifact(y, residual))
    return out, {"implants": n, "radius_px_at_128": r(radius_ref, 3), "metal_mu": r(metal_mu, 3),
                 "beam_hardening": r(hardening, 4), "incident_photons": i0, **info}
