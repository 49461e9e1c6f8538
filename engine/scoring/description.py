"""Description scoring on the four MedQ-Bench dimensions.

Each dimension is scored 0-2 per item (higher is better):

- ``completeness``: how much of the reference's low-level information the description covers,
- ``preciseness``: no contradiction with the reference (blur for sharp, noise for clean, ...),
- ``consistency``: the description's own findings support its own final verdict,
- ``quality_accuracy``: the final verdict against the reference verdict, ordinal
  (:func:`quality_accuracy`: exact 2, adjacent 1, reject-vs-good 0); for paired items 2 when the
  "which image is better" conclusion matches, else 0 (:func:`paired_quality_accuracy`).

A dimension a judge could not score is ``None`` and is left out of that dimension's mean (as the
MedQ-Bench evaluator does). The benchmark figure ``overall`` (0-8) is the sum of the four
dimension means (:func:`aggregate_descriptions`).

Judges (:class:`DescriptionJudge`) turn (prediction text, reference) into
:class:`DescriptionScores`: the offline :class:`~medq.engine.scoring.rules_judge.RulesJudge` and
the LLM :class:`~medq.engine.scoring.llm_judge.LLMJudge`.
"""
from __future__ import annotations

import abc
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medq.engine.taxonomy import (
    DEGRADATION_NAMES,
    LEVELS,
    VERDICTS,
    stated_verdict,
    verdict_distance,
    verdict_sentence,
)

DIMENSIONS: tuple[str, ...] = ("completeness", "preciseness", "consistency", "quality_accuracy")
MAX_DIMENSION = 2.0
MAX_OVERALL = MAX_DIMENSION * len(DIMENSIONS)

# Exact distance -> score table of MedQ-Bench's quality accuracy (reject < usable < good).
QUALITY_ACCURACY_TABLE: dict[int, float] = {0: 2.0, 1: 1.0, 2: 0.0}


# -- verdicts --------------------------------------------------------------------------------

# Words that carry a verdict, longest first so "not usable" wins over "usable".
_VERDICT_WORDS: tuple[tuple[str, str], ...] = (
    (r"not\s+usable", "reject"), (r"unusable", "reject"), (r"non-?diagnostic", "reject"),
    (r"unacceptable", "reject"), (r"rejected", "reject"), (r"reject", "reject"),
    (r"poor", "reject"), (r"bad", "reject"),
    (r"not\s+good", "usable"), (r"usable", "usable"), (r"acceptable", "usable"),
    (r"adequate", "usable"), (r"fair", "usable"), (r"moderate", "usable"),
    (r"good", "good"), (r"excellent", "good"), (r"optimal", "good"),
)
_VERDICT_WORD = re.compile(r"\b(" + "|".join(w for w, _ in _VERDICT_WORDS) + r")\b")
# "<adjective> quality" ("high-quality image", "poor quality").
_ADJ_QUALITY = re.compile(r"\b(high|excellent|good|acceptable|adequate|fair|moderate|low|poor|bad)"
                          r"[\s-]+(?:image\s+)?quality\b")
_ADJ_VERDICT = {"high": "good", "excellent": "good", "good": "good", "acceptable": "usable",
                "adequate": "usable", "fair": "usable", "moderate": "usable", "low": "reject",
                "poor": "reject", "bad": "reject"}
_AFTER_QUALITY_CHARS = 40
_STRICT_VERDICT = re.compile(r"\b(not\s+usable|unusable|not\s+good|good|usable|rejected|reject)\b")


def _verdict_of(word: str) -> str:
    word = re.sub(r"\s+", " ", word)
    for pattern, verdict in _VERDICT_WORDS:
        if re.fullmatch(pattern, word):
            return verdict
    raise AssertionError(word)


def extract_verdict(text: str | None) -> str | None:
    """The final verdict ("good" / "usable" / "reject") a description states, or None.

    Tried in order: the last "Overall, the quality of this image is X" sentence; in the last
    sentence that rates "quality", a verdict word right after it ("image quality is poor",
    "quality: acceptable") or an adjective right before it ("high-quality image"); the last bare
    good/usable/reject in the text."""
    if not text:
        return None
    low = str(text).lower()
    stated = stated_verdict(low)
    if stated is not None:
        return stated
    for sentence in reversed(re.split(r"(?<=[.!?])\s+|\n+", low)):
        q = sentence.rfind("quality")
        if q < 0:
            continue
        m = _VERDICT_WORD.search(sentence[q:q + _AFTER_QUALITY_CHARS])
        if m:
            return _verdict_of(m.group(1))
        adj = list(_ADJ_QUALITY.finditer(sentence))
        if adj:
            return _ADJ_VERDICT[adj[-1].group(1)]
    strict = list(_STRICT_VERDICT.finditer(low))
    if strict:
        return _verdict_of(strict[-1].group(1))
    return None


def quality_accuracy(predicted: str | None, reference: str | None) -> float | None:
    """Ordinal verdict score: exact 2, adjacent (good/usable, usable/reject) 1, reject vs good 0.
    No predicted verdict scores 0; no (or an unknown) reference verdict gives None."""
    if reference not in VERDICTS:
        return None
    if predicted not in VERDICTS:
        return 0.0
    return QUALITY_ACCURACY_TABLE[verdict_distance(predicted, reference)]


# -- paired comparison ------------------------------------------------------------------------

IMAGE_REF = re.compile(
    r"\b(?:(?:image|picture|scan|img)\s*(?P<tag>[ab12])\b"
    r"|(?:the\s+)?(?P<ord>first|second|former|latter|left|right)\b(?:\s+(?:image|one|picture|scan))?)")
_BETTER = re.compile(r"\b(better|higher|superior|clearer|sharper|preferable|preferred|cleaner|"
                     r"less\s+(?:noisy|degraded|blurry|artifacts?))\b")
_WORSE = re.compile(r"\b(worse|lower|inferior|poorer|noisier|blurrier|more\s+(?:noisy|degraded|"
                    r"blurry|artifacts?))\b")
_STRUCTURED_BETTER = re.compile(r"\bbetter\s*(?:image)?\s*[:=]\s*(?:image\s*)?([ab12])\b")


def image_ref_side(match: re.Match) -> str:
    """"A" or "B" for an :data:`IMAGE_REF` match."""
    tag = match.group("tag")
    if tag:
        return "A" if tag in "a1" else "B"
    return "A" if match.group("ord") in ("first", "former", "left") else "B"


def extract_comparison(text: str | None) -> str | None:
    """Which image a paired description concludes is better: "A" (first) or "B" (second).

    Uses the last sentence with a comparative ("better", "higher quality", "worse", ...): its
    first image reference is the subject; a worse-word flips the answer. None when undecidable."""
    if not text:
        return None
    low = str(text).lower()
    m = _STRUCTURED_BETTER.search(low)
    if m:
        return "A" if m.group(1) in "a1" else "B"
    for sentence in reversed(re.split(r"(?<=[.!?])\s+|\n+", low)):
        good, bad = _BETTER.search(sentence), _WORSE.search(sentence)
        if not (good or bad):
            continue
        ref = IMAGE_REF.search(sentence)
        if not ref:
            continue
        side = image_ref_side(ref)
        # Polarity of the comparative nearest after the subject.
        first_cue = min((c for c in (good, bad) if c is not None), key=lambda c: c.start())
        positive = first_cue is good
        return side if positive else ("B" if side == "A" else "A")
    return None


def paired_quality_accuracy(predicted: str | None, reference: str | None) -> float | None:
    """2 if the predicted better image ("A"/"B") matches the reference, else 0; None without a
    reference."""
    ref = (reference or "").strip().upper()
    if ref not in ("A", "B"):
        return None
    return 2.0 if (predicted or "").strip().upper() == ref else 0.0


# -- scores and aggregation -------------------------------------------------------------------

@dataclass
class DescriptionScores:
    """Per-item scores, each 0-2 or None (not scorable); higher is better."""

    completeness: float | None = None
    preciseness: float | None = None
    consistency: float | None = None
    quality_accuracy: float | None = None
    details: dict = field(default_factory=dict, compare=False)

    def values(self) -> dict[str, float | None]:
        return {d: getattr(self, d) for d in DIMENSIONS}

    @property
    def overall(self) -> float | None:
        """Item score 0-8: the sum of the four dimensions. When some are None the mean of the
        scored ones is scaled to four dimensions so it stays on the 0-8 scale; None if none."""
        scored = [v for v in self.values().values() if v is not None]
        if not scored:
            return None
        return float(sum(scored) * len(DIMENSIONS) / len(scored))

    def to_dict(self) -> dict:
        out: dict[str, Any] = {**self.values(), "overall": self.overall}
        if self.details:
            out["details"] = self.details
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> DescriptionScores:
        return cls(**{d: data.get(d) for d in DIMENSIONS}, details=dict(data.get("details") or {}))


def aggregate_descriptions(scores: Sequence[DescriptionScores]) -> dict:
    """Benchmark aggregates: per dimension the mean over items where it is not None (and how many
    were scored), and ``overall`` = sum of the four means (0-8; None when a dimension has no
    scored item at all, where the MedQ-Bench script would silently count 0)."""
    out: dict = {"n": len(scores)}
    means = []
    for d in DIMENSIONS:
        vals = [float(getattr(s, d)) for s in scores if getattr(s, d) is not None]
        mean = sum(vals) / len(vals) if vals else None
        out[d] = mean
        out[f"n_{d}"] = len(vals)
        means.append(mean)
    scored = [m for m in means if m is not None]
    out["overall"] = None if len(scored) < len(means) else float(sum(scored))
    return out


# -- references and judges --------------------------------------------------------------------

@dataclass
class DescriptionReference:
    """What a single-image description is judged against. Any field may be missing: a judge
    derives what it needs from `text` (the gold description) when the labels are absent.
    `degradations` is [{"type": str, "level": 1|2}], empty for a clean image."""

    text: str = ""
    verdict: str | None = None
    degradations: list[dict] | None = None
    modality: str | None = None


@dataclass
class PairedReference:
    """Gold for a paired comparison: the gold comparative description and which image ("A" =
    first, "B" = second) has the better quality."""

    text: str = ""
    better: str | None = None


Reference = DescriptionReference | PairedReference


def reference_text(reference: Reference) -> str:
    """The gold text a text-only judge reads; built from the labels when the text is empty
    ("Mild low-dose noise. Overall, the quality of this image is usable.")."""
    if reference.text and reference.text.strip():
        return reference.text
    if isinstance(reference, PairedReference):
        if reference.better not in ("A", "B"):
            return ""
        return f"The {'first' if reference.better == 'A' else 'second'} image has the better quality."
    parts = []
    for d in reference.degradations or []:
        level = LEVELS.get(int(d.get("level") or 0), "")
        parts.append(f"{level} {DEGRADATION_NAMES.get(d['type'], d['type'].replace('_', ' '))}".strip())
    text = ("The image shows " + ", ".join(parts) + ". ") if parts else (
        "No noticeable degradation. " if reference.degradations is not None else "")
    if reference.verdict in VERDICTS:
        text += verdict_sentence(reference.verdict)
    return text.strip()


class DescriptionJudge(abc.ABC):
    """Scores descriptions on the four dimensions. `name` identifies the judge in eval ids."""

    name: str = "abstract"

    @abc.abstractmethod
    def score(self, prediction: str, reference: DescriptionReference) -> DescriptionScores:
        """Scores of one single-image description."""

    @abc.abstractmethod
    def score_paired(self, prediction: str, reference: PairedReference,
                     predicted_better: str | None = None) -> DescriptionScores:
        """Scores of one paired comparison text. `predicted_better` is the model's structured
        answer, used when the text itself does not say which image is better."""

    def score_many(self, predictions: Sequence[str], references: Sequence[Reference],
                   predicted_better: Sequence[str | None] | None = None) -> list[DescriptionScores]:
        """Score a batch (same order); paired references dispatch to :meth:`score_paired`."""
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        better = list(predicted_better) if predicted_better is not None else [None] * len(predictions)
        return [self.score_paired(p, r, b) if isinstance(r, PairedReference) else self.score(p, r)
                for p, r, b in zip(predictions, references, better)]
