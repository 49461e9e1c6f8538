"""The registry of degradation simulators and the entry points `apply` and `degrade`.

``apply(image, type, level, rng) -> (degraded, params)`` runs one simulator;
``degrade(image, [{"type", "level"}, ...], seed) -> (image, provenance)`` runs a list of them in
physical order with per-step generators derived from `seed`, so the same call always returns the
same pixels. Level 0 is the identity, 1 mild, 2 severe.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from medq.engine import taxonomy
from medq.engine.degrade import ct, general, histo, mri, optical, ultrasound, xray
from medq.engine.degrade._util import DegradationError, check_image

SimFn = Callable[[np.ndarray, int, np.random.Generator], tuple[np.ndarray, dict]]

# Where in the imaging chain a degradation arises; `degrade` applies them in this order so that
# e.g. noise is added before JPEG compression and a bias field before k-space sampling.
STAGES = ("scene", "acquisition", "detector", "storage")


@dataclass(frozen=True)
class Simulator:
    """One degradation type: its simulator function, the modality families it belongs to (from
    the taxonomy) and its stage in the imaging chain."""

    name: str
    simulate: SimFn
    stage: str
    families: tuple[str, ...]

    @property
    def doc(self) -> str:
        return (self.simulate.__doc__ or "").strip()


_TABLE: dict[str, tuple[SimFn, str]] = {
    # CT
    "low_dose": (ct.low_dose, "acquisition"),
    "sparse_view": (ct.sparse_view, "acquisition"),
    "limited_angle": (ct.limited_angle, "acquisition"),
    "metal_streak": (ct.metal_streak, "acquisition"),
    # MRI
    "bias_field": (mri.bias_field, "scene"),
    "motion": (mri.motion, "acquisition"),
    "ghosting": (mri.ghosting, "acquisition"),
    "spike": (mri.spike, "acquisition"),
    "undersampling": (mri.undersampling, "acquisition"),
    "rician_noise": (mri.rician_noise, "acquisition"),
    # X-ray
    "scatter": (xray.scatter, "acquisition"),
    # histopathology
    "stain_variation": (histo.stain_variation, "scene"),
    "focus_blur": (histo.focus_blur, "acquisition"),
    "compression": (histo.compression, "storage"),
    # fundus / endoscopy
    "uneven_illumination": (optical.uneven_illumination, "scene"),
    "specular_reflection": (optical.specular_reflection, "scene"),
    "motion_blur": (optical.motion_blur, "acquisition"),
    "color_distortion": (optical.color_distortion, "detector"),
    # ultrasound
    "shadowing": (ultrasound.shadowing, "scene"),
    "speckle": (ultrasound.speckle, "acquisition"),
    # general
    "blur": (general.blur, "acquisition"),
    "low_resolution": (general.low_resolution, "detector"),
    "gaussian_noise": (general.gaussian_noise, "detector"),
    "exposure": (general.exposure, "detector"),
    "reduce_contrast": (general.reduce_contrast, "detector"),
    "brightness": (general.brightness, "detector"),
}


def _families(name: str) -> tuple[str, ...]:
    return tuple(fam for fam, names in taxonomy.DEGRADATIONS.items() if name in names)


SIMULATORS: dict[str, Simulator] = {
    name: Simulator(name, fn, stage, _families(name)) for name, (fn, stage) in _TABLE.items()}


def simulator(name: str) -> Simulator:
    """The simulator for `name`; :class:`DegradationError` for a type nothing simulates."""
    try:
        return SIMULATORS[name]
    except KeyError:
        raise DegradationError(
            f"no simulator for degradation type {name!r}; simulated types: "
            f"{', '.join(sorted(SIMULATORS))}") from None


def _check_level(level, where: str) -> int:
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) \
            or int(level) not in (0, 1, 2):
        raise DegradationError(f"{where}: level must be 0 (none), 1 (mild) or 2 (severe), "
                               f"got {level!r}")
    return int(level)


def apply(image: np.ndarray, type: str, level: int, rng: np.random.Generator
          ) -> tuple[np.ndarray, dict]:
    """Apply one degradation.

    `image`: float [0, 1], (H, W) or (H, W, 3). Returns the degraded float32 image of the same
    shape, clipped to [0, 1], and the parameters drawn from `rng` (JSON-safe). Level 0 returns an
    unchanged copy and ``{}``."""
    sim = simulator(type)
    level = _check_level(level, f"degradation {type!r}")
    img = check_image(image, f"degradation {type!r}")
    if level == 0:
        return img.copy(), {}
    out, params = sim.simulate(img, level, rng)
    out = np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)
    if out.shape != img.shape:  # a simulator bug, never the caller's
        raise DegradationError(f"simulator {type!r} changed the shape {img.shape} -> {out.shape}")
    return out, params


def step_rng(seed: int, index: int, type: str) -> np.random.Generator:
    """The generator of step `index` of a `degrade` call: independent of the other steps and
    stable across processes (crc32 of the name, not Python's salted hash)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(seed) >> 32 & 0xFFFFFFFF, index,
                                  zlib.crc32(type.encode())])


def ordered(degradations: list[dict]) -> list[dict]:
    """Degradations in imaging-chain order (stable for equal stages)."""
    def stage(d: dict) -> int:
        sim = SIMULATORS.get(d["type"])
        return STAGES.index(sim.stage) if sim else len(STAGES)
    return sorted(degradations, key=stage)


def degrade(image: np.ndarray, degradations: list[dict], seed: int
            ) -> tuple[np.ndarray, dict]:
    """Apply `degradations` (``[{"type": str, "level": 0|1|2}, ...]``) to `image`.

    Deterministic in (image, degradations, seed). Steps run in imaging-chain order (see
    :data:`STAGES`); level-0 entries are skipped. Returns the degraded float32 image and the
    provenance ``{"seed", "steps": [{"type", "level", "params"}], "verdict"}`` where the
    verdict follows :func:`medq.engine.taxonomy.verdict_for`."""
    img = check_image(image)
    steps = []
    for n, d in enumerate(degradations):
        if not isinstance(d, dict) or "type" not in d or "level" not in d:
            raise DegradationError(f"degradation #{n}: expected {{'type', 'level'}}, got {d!r}")
        simulator(d["type"])
        _check_level(d["level"], f"degradation #{n} ({d['type']})")
    for index, d in enumerate(ordered(list(degradations))):
        level = int(d["level"])
        if level == 0:
            continue
        img, params = apply(img, d["type"], level, step_rng(seed, index, d["type"]))
        steps.append({"type": d["type"], "level": level, "params": params})
    records = [{"type": s["type"], "level": s["level"]} for s in steps]
    return img, {"seed": int(seed), "steps": steps, "verdict": taxonomy.verdict_for(records)}
