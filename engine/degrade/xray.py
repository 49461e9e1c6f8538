"""Radiography (X-ray) degradations. Exposure errors are the general `exposure` simulator."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from medq.engine.degrade._util import on_luminance, pick, r, uniform

MU = 3.0  # display value 1 = transmission exp(-3) (dense bone); 0 = open beam


def scatter(image: np.ndarray, level: int, rng: np.random.Generator):
    """Compton scatter without an anti-scatter grid: a broad, low-frequency copy of the primary
    fluence (scatter-to-primary ratio `spr`) reaches the detector. In the log (display) domain it
    adds a haze that lowers contrast most in dense regions. The mean display value is kept
    (automatic windowing)."""
    spr = uniform(rng, *pick(level, (0.5, 1.0), (2.2, 4.0)))
    kernel_frac = uniform(rng, 0.08, 0.16)  # scatter kernel width, fraction of the image side

    def fn(y):
        primary = np.exp(-MU * y)
        sigma = kernel_frac * min(y.shape)
        s = ndimage.gaussian_filter(primary, sigma, mode="nearest")
        s = s * (spr * primary.mean() / max(float(s.mean()), 1e-9))
        shown = -np.log(primary + s) / MU
        return (shown + (y.mean() - shown.mean())).astype(np.float32)

    out = on_luminance(image, fn)
    return out, {"scatter_to_primary": r(spr, 4), "kernel_fraction": r(kernel_frac, 4)}
