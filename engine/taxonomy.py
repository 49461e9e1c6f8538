"""Med-IQA taxonomy: modalities, degradation types, levels, verdicts, question types.

This is the *known* vocabulary (the identifiers of ../shared/DESIGN.md). It is a reference for
simulators, question generation and the rule-based judge; models learn their own vocabulary from
data, and user data may bring types that are not listed here (see :func:`is_known_degradation`).

Levels: 0 = none, 1 = mild, 2 = severe. Verdicts, best to worst: good, usable, reject.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

MODALITIES: tuple[str, ...] = ("CT", "MRI", "X-ray", "fundus", "histopathology", "endoscopy",
                               "ultrasound")
VERDICTS: tuple[str, ...] = ("good", "usable", "reject")
LEVELS: dict[int, str] = {0: "none", 1: "mild", 2: "severe"}
QUESTION_TYPES: tuple[str, ...] = ("Yes-or-No", "What", "How")
OPTION_LETTERS: tuple[str, ...] = ("A", "B", "C", "D")
VERDICT_SENTENCE = "Overall, the quality of this image is {verdict}."
# The one reader of that sentence (labels, MLLM outputs, description scoring): MedQ-Bench's
# wording plus the variants models write ("**good**", quotes, "rejected", "the image quality of
# the image was ...", "can be considered ...").
_STATED_VERDICT = re.compile(
    r"overall\s*,?\s+the\s+(?:overall\s+)?(?:image\s+)?quality\s+of\s+(?:this|the)\s+image\s+"
    r"(?:is|was|would\s+be|can\s+be\s+(?:considered|rated)(?:\s+as)?)\s*[\s*\"'\[(]*"
    r"(good|usable|reject(?:ed)?)\b", re.IGNORECASE)


def stated_verdict(text: str | None) -> str | None:
    """The verdict ("good" / "usable" / "reject") of the last "Overall, the quality of this image
    is <verdict>" sentence in `text` (see :data:`VERDICT_SENTENCE`), None when there is none."""
    if not text:
        return None
    hits = _STATED_VERDICT.findall(str(text))
    if not hits:
        return None
    word = hits[-1].lower()
    return "reject" if word.startswith("reject") else word

# Degradation identifiers per modality family. `general` applies to every modality.
DEGRADATIONS: dict[str, tuple[str, ...]] = {
    "CT": ("low_dose", "sparse_view", "limited_angle", "metal_streak"),
    "MRI": ("motion", "ghosting", "bias_field", "undersampling", "rician_noise", "spike"),
    "X-ray": ("exposure", "scatter"),
    "histopathology": ("stain_variation", "focus_blur", "compression"),
    "fundus": ("uneven_illumination", "specular_reflection", "color_distortion", "motion_blur"),
    "endoscopy": ("uneven_illumination", "specular_reflection", "color_distortion", "motion_blur"),
    "ultrasound": ("speckle", "shadowing"),
    "general": ("gaussian_noise", "blur", "low_resolution", "exposure", "reduce_contrast",
                "brightness"),
}

# Human-readable names used in questions, descriptions and the rule-based judge's lexicon.
DEGRADATION_NAMES: dict[str, str] = {
    "low_dose": "low-dose noise",
    "sparse_view": "sparse-view streak artifacts",
    "limited_angle": "limited-angle artifacts",
    "metal_streak": "metal streak artifacts",
    "motion": "motion artifacts",
    "ghosting": "ghosting artifacts",
    "bias_field": "intensity inhomogeneity (bias field)",
    "undersampling": "undersampling aliasing",
    "rician_noise": "Rician noise",
    "spike": "spike (herringbone) artifacts",
    "scatter": "scatter haze",
    "stain_variation": "stain variation",
    "focus_blur": "focus blur",
    "compression": "compression artifacts",
    "uneven_illumination": "uneven illumination",
    "specular_reflection": "specular reflections",
    "color_distortion": "color distortion",
    "motion_blur": "motion blur",
    "speckle": "speckle noise",
    "shadowing": "acoustic shadowing",
    "gaussian_noise": "Gaussian noise",
    "blur": "blur",
    "low_resolution": "low resolution",
    "exposure": "exposure error",
    "reduce_contrast": "reduced contrast",
    "brightness": "brightness shift",
}


@dataclass(frozen=True)
class Degradation:
    """One degradation applied to an image. `level` is 1 (mild) or 2 (severe)."""

    type: str
    level: int
    params: dict = field(default_factory=dict, compare=False, hash=False)

    def to_record(self) -> dict:
        return {"type": self.type, "level": int(self.level)}


def degradations_for(modality: str) -> tuple[str, ...]:
    """Known degradation types that make sense for `modality` (modality-specific first)."""
    specific = DEGRADATIONS.get(modality, ())
    general = tuple(d for d in DEGRADATIONS["general"] if d not in specific)
    return specific + general


def all_degradations() -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for names in DEGRADATIONS.values():
        for name in names:
            seen.setdefault(name, None)
    return tuple(seen)


def is_known_degradation(name: str) -> bool:
    return name in DEGRADATION_NAMES


def verdict_for(degradations: list[dict] | list[Degradation]) -> str:
    """Ground-truth verdict from degradation levels: none -> good, worst mild -> usable,
    any severe -> reject."""
    worst = 0
    for d in degradations:
        level = d.level if isinstance(d, Degradation) else int(d["level"])
        worst = max(worst, level)
    return VERDICTS[worst]


def verdict_distance(a: str, b: str) -> int:
    """Ordinal distance between verdicts (0, 1 or 2)."""
    return abs(VERDICTS.index(a) - VERDICTS.index(b))


def verdict_sentence(verdict: str) -> str:
    return VERDICT_SENTENCE.format(verdict=verdict)
