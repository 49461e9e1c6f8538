"""MRI acquisition degradations, simulated in k-space.

The image is taken as the magnitude of the object; k-space is its 2-D FFT (centred). Artifacts
are produced where they arise physically (inconsistent phase-encode lines for motion and
ghosting, a corrupted sample for a spike, skipped lines for undersampling, complex thermal noise
for the Rician floor, the receive-coil sensitivity for the bias field) and the magnitude image is
reconstructed. The phase-encode axis is drawn per image and recorded (0 = rows, 1 = columns).
Implemented directly (numpy FFT) rather than through torchio so that every random draw comes from
the caller's generator and a 2-D image needs no 4-D tensor round trip; the parameterizations
follow torchio's RandomMotion / RandomGhosting / RandomSpike / RandomBiasField.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from medq.engine.degrade._util import norm_grid, on_luminance, pick, r, spatial_scale, uniform


def _k(img: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.fft2(img))


def _img(k: np.ndarray) -> np.ndarray:
    return np.abs(np.fft.ifft2(np.fft.ifftshift(k))).astype(np.float32)


def _lines(k: np.ndarray, axis: int, sel) -> tuple:
    """Index selecting phase-encode lines `sel` along `axis`."""
    return (sel, slice(None)) if axis == 0 else (slice(None), sel)


def motion(image: np.ndarray, level: int, rng: np.random.Generator):
    """Rigid patient motion during a sequential (line-by-line) acquisition: after each movement
    the remaining phase-encode lines see a rotated and translated object, so the lines disagree
    and the reconstruction shows ghosts and smearing along the phase-encode axis."""
    axis = int(rng.integers(0, 2))
    n_moves = int(rng.integers(*pick(level, (1, 3), (2, 4))))
    scale = spatial_scale(image)
    times = np.sort(rng.uniform(0.25, 0.75, size=n_moves))
    moves = []
    for _ in range(n_moves):
        deg = uniform(rng, *pick(level, (1.0, 2.5), (3.5, 7.0))) * rng.choice([-1, 1])
        shift = uniform(rng, *pick(level, (0.8, 2.0), (2.5, 5.0))) * scale
        ang = uniform(rng, 0, 2 * np.pi)
        moves.append((float(deg), float(shift * np.cos(ang)), float(shift * np.sin(ang))))

    def fn(y):
        n = y.shape[axis]
        k = _k(y)
        ky = np.fft.fftshift(np.fft.fftfreq(y.shape[0]))[:, None]
        kx = np.fft.fftshift(np.fft.fftfreq(y.shape[1]))[None, :]
        cum_deg, cum_dy, cum_dx = 0.0, 0.0, 0.0
        for t, (deg, dy, dx) in zip(times, moves):
            # Positions accumulate: the patient does not return between movements.
            cum_deg, cum_dy, cum_dx = cum_deg + deg, cum_dy + dy, cum_dx + dx
            moved = ndimage.rotate(y, cum_deg, reshape=False, order=1, mode="constant")
            km = _k(moved) * np.exp(-2j * np.pi * (ky * cum_dy + kx * cum_dx))
            start = int(t * n)
            k[_lines(k, axis, slice(start, n))] = km[_lines(km, axis, slice(start, n))]
        return _img(k)

    out = on_luminance(image, fn)
    return out, {"phase_axis": axis, "movements": [
        {"time": r(t, 4), "degrees": r(d, 4), "dy": r(dy, 4), "dx": r(dx, 4)}
        for t, (d, dy, dx) in zip(times, moves)]}


def ghosting(image: np.ndarray, level: int, rng: np.random.Generator):
    """Periodic inconsistency between phase-encode lines (e.g. respiration, pulsation): every
    `period`-th line is scaled by (1 - intensity), which replicates the object as ghosts shifted
    by N/period along the phase-encode axis (torchio Ghosting)."""
    axis = int(rng.integers(0, 2))
    period = int(rng.integers(2, 7))
    intensity = uniform(rng, *pick(level, (0.3, 0.5), (0.75, 0.95)))

    def fn(y):
        k = _k(y)
        n = y.shape[axis]
        factor = np.ones(n)
        factor[::period] = 1.0 - intensity
        factor[n // 2] = 1.0  # the centre line holds the contrast; keep it
        k = k * (factor[:, None] if axis == 0 else factor[None, :])
        return _img(k)

    out = on_luminance(image, fn)
    return out, {"phase_axis": axis, "period": period, "intensity": r(intensity, 4)}


def spike(image: np.ndarray, level: int, rng: np.random.Generator):
    """A few corrupted k-space samples (RF spikes) of high amplitude: each adds a plane wave,
    seen as a herringbone/striped pattern over the whole image."""
    n_spikes = int(rng.integers(*pick(level, (1, 2), (1, 4))))
    intensity = uniform(rng, *pick(level, (0.10, 0.18), (0.35, 0.6)))
    spikes = []
    for _ in range(n_spikes):
        radius = uniform(rng, 0.08, 0.35)
        ang = uniform(rng, 0, 2 * np.pi)
        spikes.append((radius * np.sin(ang), radius * np.cos(ang)))

    def fn(y):
        k = _k(y)
        h, w = y.shape
        peak = np.abs(k).max()
        for fy, fx in spikes:
            iy, ix = int(h // 2 + fy * h), int(w // 2 + fx * w)
            # The stripe amplitude in the image is intensity * mean pixel value per spike.
            k[iy % h, ix % w] += intensity * peak * np.exp(1j * float(np.angle(k[iy % h, ix % w])))
        return _img(k)

    out = on_luminance(image, fn)
    return out, {"intensity": r(intensity, 4),
                 "positions": [[r(a, 4), r(b, 4)] for a, b in spikes]}


def bias_field(image: np.ndarray, level: int, rng: np.random.Generator):
    """Smooth multiplicative intensity inhomogeneity from the receive-coil sensitivity:
    ``exp(polynomial of order 3)`` over normalized coordinates (torchio BiasField); the
    polynomial is scaled so the log-field has the drawn standard deviation."""
    order = 3
    spread = uniform(rng, *pick(level, (0.10, 0.16), (0.30, 0.42)))
    terms = [(i, j) for i in range(order + 1) for j in range(order + 1 - i) if i + j > 0]
    coeffs = rng.uniform(-1.0, 1.0, size=len(terms))

    def field_for(shape):
        yy, xx = norm_grid(*shape)
        log_f = sum(c * yy ** i * xx ** j for c, (i, j) in zip(coeffs, terms))
        log_f = log_f - log_f.mean()
        std = float(log_f.std())
        return np.exp(log_f * (spread / std if std > 1e-9 else 0.0)).astype(np.float32)

    field = field_for(image.shape[:2])
    out = image * (field if image.ndim == 2 else field[:, :, None])
    return np.clip(out, 0, 1).astype(np.float32), {
        "order": order, "log_std": r(spread, 4),
        "coefficients": [r(c, 4) for c in coeffs]}


def undersampling(image: np.ndarray, level: int, rng: np.random.Generator):
    """Accelerated acquisition: only a fraction 1/R of phase-encode lines is sampled (a fully
    sampled centre plus random outer lines); the zero-filled reconstruction aliases."""
    axis = int(rng.integers(0, 2))
    accel = uniform(rng, *pick(level, (1.7, 2.3), (4.0, 6.0)))
    centre = pick(level, 0.16, 0.06)

    def fn(y):
        n = y.shape[axis]
        keep = np.zeros(n, dtype=bool)
        half = max(1, round(centre * n / 2))
        keep[n // 2 - half:n // 2 + half] = True
        target = max(round(n / accel), int(keep.sum()))
        outer = np.flatnonzero(~keep)
        extra = target - int(keep.sum())
        if extra > 0:
            keep[rng.choice(outer, size=extra, replace=False)] = True
        k = _k(y)
        k = k * (keep[:, None] if axis == 0 else keep[None, :])
        return _img(k)

    out = on_luminance(image, fn)
    return out, {"phase_axis": axis, "acceleration": r(accel, 4), "centre_fraction": centre}


def rician_noise(image: np.ndarray, level: int, rng: np.random.Generator):
    """Thermal noise is complex Gaussian in k-space and in the complex image; the magnitude
    image has Rician statistics (a raised noise floor in dark regions)."""
    sigma = uniform(rng, *pick(level, (0.025, 0.045), (0.075, 0.11)))

    def fn(y):
        re = y + rng.normal(0.0, sigma, size=y.shape)
        im = rng.normal(0.0, sigma, size=y.shape)
        return np.hypot(re, im).astype(np.float32)

    out = on_luminance(image, fn)
    return out, {"sigma": r(sigma, 5)}
