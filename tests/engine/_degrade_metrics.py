"""Measurable effects of each simulator (test helper): metric(original, degraded) >= 0, zero for
an unchanged image, growing with severity."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def gray(a):
    return a if a.ndim == 2 else a @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def residual_rms(img, out):
    return float(np.sqrt(np.mean((out.astype(np.float64) - img) ** 2)))


def noise_sigma(img, out):
    """Std of the high-pass residual (noise estimate; signal edges cancel)."""
    d = gray(out).astype(np.float64) - gray(img)
    return float(np.std(d - ndimage.gaussian_filter(d, 2.0)))


def sharpness_drop(img, out):
    """log(var(Laplacian(img)) / var(Laplacian(out))): 0 = as sharp, grows as detail is lost
    (the log keeps it from saturating the way a plain ratio does)."""
    lap = lambda a: ndimage.laplace(gray(a).astype(np.float64))
    return float(max(0.0, np.log(lap(img).var() / max(lap(out).var(), 1e-12))))


def contrast_drop(img, out):
    return float(max(0.0, 1.0 - gray(out).std() / gray(img).std()))


def mean_shift(img, out):
    return float(abs(gray(out).mean() - gray(img).mean()))


def mean_abs(img, out):
    return float(np.mean(np.abs(out.astype(np.float64) - img)))


def low_freq_log_variance(img, out):
    """Variance of the smoothed log ratio out/img over the object (a multiplicative field)."""
    g_in, g_out = gray(img).astype(np.float64), gray(out).astype(np.float64)
    mask = (g_in > 0.1) & (g_out > 0.02) & (g_out < 0.99)
    ratio = np.zeros_like(g_in)
    ratio[mask] = np.log(g_out[mask] / g_in[mask])
    w = ndimage.gaussian_filter(mask.astype(float), 4) + 1e-9
    smooth = ndimage.gaussian_filter(ratio, 4) / w
    return float(smooth[mask].var()) if mask.any() else 0.0


def background_energy(img, out):
    """Mean signal where the object has none (ghosts, smearing, aliasing replicas)."""
    bg = ndimage.binary_erosion(gray(img) < 0.02, iterations=2)
    return float(gray(out)[bg].mean())


def spike_peak(img, out):
    """Peak of the residual spectrum outside the centre (a plane wave = spike stripes)."""
    d = gray(out).astype(np.float64) - gray(img)
    spec = np.abs(np.fft.fftshift(np.fft.fft2(d))) / d.size
    h, w = spec.shape
    spec[h // 2 - 3:h // 2 + 4, w // 2 - 3:w // 2 + 4] = 0
    return float(spec.max())


def streak_energy(img, out):
    """RMS residual outside the (saturated) implants."""
    d = out.astype(np.float64) - img
    keep = gray(out) < 0.98
    return float(np.sqrt(np.mean(d[keep] ** 2)))


def saturated_fraction(img, out):
    sat = lambda a: (a.min(axis=-1) if a.ndim == 3 else a) >= 0.98
    return float(max(0.0, sat(out).mean() - sat(img).mean()))


def chroma_shift(img, out):
    def chroma(a):
        s = a.sum(axis=-1, keepdims=True) + 1e-6
        return a / s
    if img.ndim == 2:
        return mean_abs(img, out)
    return float(np.mean(np.abs(chroma(out) - chroma(img))) + mean_shift(img, out))


def speckle_cv(img, out):
    """Coefficient of variation of out/img where there is echo signal."""
    g_in, g_out = gray(img), gray(out)
    m = g_in > 0.2
    return float(np.std(g_out[m] / g_in[m]))


def shadow_loss(img, out):
    return float(np.mean(np.clip(gray(img) - gray(out), 0, None)))


METRICS = {
    "low_dose": noise_sigma, "sparse_view": residual_rms, "limited_angle": residual_rms,
    "metal_streak": streak_energy, "motion": residual_rms, "ghosting": background_energy,
    "spike": spike_peak, "bias_field": low_freq_log_variance, "undersampling": residual_rms,
    "rician_noise": noise_sigma, "scatter": contrast_drop, "stain_variation": mean_abs,
    "focus_blur": sharpness_drop, "compression": residual_rms,
    "uneven_illumination": low_freq_log_variance, "specular_reflection": saturated_fraction,
    "color_distortion": chroma_shift, "motion_blur": sharpness_drop, "speckle": speckle_cv,
    "shadowing": shadow_loss, "gaussian_noise": noise_sigma, "blur": sharpness_drop,
    "low_resolution": residual_rms, "exposure": mean_abs, "reduce_contrast": contrast_drop,
    "brightness": mean_shift,
}
