"""Multiple-choice (perception) scoring, following the MedQ-Bench evaluator in VLMEvalKit.

Answer extraction (:func:`extract_answer`) reproduces ``MedqbenchMCQDataset._extract_option_letter``
of VLMEvalKit: the response is stripped and upper-cased (so every rule is case-insensitive), then

1. a bare single letter ``A``-``D``,
2. ``^([A-D])[.)\\s]``                               ("B. blurry", "B) blurry", "B blurry"),
3. ``(?:answer\\s+is\\s+|option\\s+)([A-D])`` followed by a non-letter or the end
   ("The answer is B.", "Option C"),
4. ``^([A-D])\\s*[-:]``                              ("C: severe", "D - none"),
5. the first isolated letter ``A``-``D`` (not inside a word): "I think (D)".

Nothing matched -> ``None``, which counts as wrong. Note the official consequence that an English
article counts: "A blurry image" extracts ``A``; the rules are kept as published so that numbers
stay comparable with MedQ-Bench results.

Option-text matching (the response quotes one option's text, e.g. "Severe noise") is **off by
default**, because the MedQ-Bench evaluator does not do it. It is VLMEvalKit's generic MCQ
behaviour (``can_infer_text``: lower-cased containment of exactly one option text, and no match
when the response is longer than twice the options' total length); ``match_option_text=True``
applies exactly that, and only when the letter rules found nothing.

Probabilities: :func:`normalized_entropy` (0 = certain, 1 = uniform; higher = more uncertain) and
:func:`expected_calibration_error` (15 equal-width bins over confidence = max probability; lower
is better calibrated).
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from medq.engine.taxonomy import LEVELS, MODALITIES, QUESTION_TYPES
from medq.errors import MedQError

_BARE = re.compile(r"^[A-D]$")
_LEADING = re.compile(r"^([A-D])[.)\s]")
_PHRASE = re.compile(r"(?:ANSWER\s+IS\s+|OPTION\s+)([A-D])(?:\s|$|[^A-Z])")
_LEADING_SEP = re.compile(r"^([A-D])\s*[-:]")
_ISOLATED = re.compile(r"(?:^|[^A-Z])([A-D])(?:[^A-Z]|$)")

ECE_BINS = 15


class ScoringError(MedQError):
    """Scoring input is malformed (bad probabilities, mismatched lengths, unknown letters)."""


def extract_answer(response: str | None, options: Mapping[str, str] | None = None, *,
                   match_option_text: bool = False) -> str | None:
    """The option letter a free-text `response` gives, by the official rules (module docstring).

    `options` (letter -> text) is only used when `match_option_text` is true. Returns an
    upper-case letter ``A``-``D`` or ``None`` when nothing can be extracted."""
    if response is None:
        return None
    text = str(response).strip().upper()
    if not text:
        return None
    if _BARE.match(text):
        return text
    for pattern, search in ((_LEADING, False), (_PHRASE, True), (_LEADING_SEP, False)):
        m = pattern.search(text) if search else pattern.match(text)
        if m:
            return m.group(1)
    m = _ISOLATED.search(text)
    if m:
        return m.group(1)
    if match_option_text and options:
        return match_option_text_letter(str(response), options)
    return None


def match_option_text_letter(response: str, options: Mapping[str, str]) -> str | None:
    """VLMEvalKit ``can_infer_text``: the one option whose (lower-cased) text the response
    contains; None when none or several do, or when the response is longer than twice the total
    length of the option texts (a long answer mentions many things by accident)."""
    answer = response.lower()
    texts = {k: str(v).lower() for k, v in options.items() if str(v).strip()}
    if not texts or len(answer) > 2 * sum(len(v) for v in texts.values()):
        return None
    hits = [k for k, v in texts.items() if v in answer]
    return hits[0] if len(hits) == 1 else None


# -- probabilities ---------------------------------------------------------------------------

def _as_prob_array(probs: Mapping[str, float] | Sequence[float] | np.ndarray) -> np.ndarray:
    values = list(probs.values()) if isinstance(probs, Mapping) else probs
    arr = np.asarray(values, dtype=np.float64)
    if arr.size and (not np.all(np.isfinite(arr)) or np.any(arr < 0)):
        raise ScoringError(f"probabilities must be finite and non-negative, got {arr.tolist()!r:.200}")
    return arr


def normalized_entropy(probs: Mapping[str, float] | Sequence[float] | np.ndarray):
    """Normalized predictive entropy H(p) / log(K) in [0, 1]; higher = more uncertain.

    `probs`: a mapping letter -> probability, a 1-D vector (returns a float) or a 2-D array of
    shape (N, K) (returns shape (N,)). Rows are renormalized to sum to 1 first; K <= 1 or an
    all-zero row gives 0.0 (nothing to be uncertain about / no information)."""
    arr = _as_prob_array(probs)
    if arr.ndim == 2:
        return np.array([normalized_entropy(row) for row in arr], dtype=np.float64)
    if arr.ndim != 1:
        raise ScoringError(f"normalized_entropy expects a vector or (N, K) array, got shape {arr.shape}")
    k = arr.size
    total = arr.sum()
    if k <= 1 or total <= 0:
        return 0.0
    p = arr / total
    nz = p[p > 0]
    h = float(-(nz * np.log(nz)).sum())
    return float(min(1.0, max(0.0, h / math.log(k))))


def expected_calibration_error(confidence: Sequence[float] | np.ndarray,
                               correct: Sequence[bool] | np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE = sum_b |B_b|/N * |accuracy(B_b) - mean confidence(B_b)| over `n_bins` equal-width
    bins of (0, 1] (a bin holds lo < c <= hi; c = 0 goes to the first bin). Lower is better;
    0.0 for empty input."""
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    corr = np.asarray(correct, dtype=np.float64).ravel()
    if conf.shape != corr.shape:
        raise ScoringError(f"ECE: {conf.size} confidences but {corr.size} correctness values")
    if conf.size == 0:
        return 0.0
    if np.any((conf < 0) | (conf > 1)) or not np.all(np.isfinite(conf)):
        raise ScoringError("ECE: confidences must lie in [0, 1]")
    # Bin index: ceil(c * n) - 1, so c in (lo, hi] lands in the bin whose upper edge is hi.
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = idx == b
        if mask.any():
            ece += mask.mean() * abs(corr[mask].mean() - conf[mask].mean())
    return float(ece)


def ece_from_probs(probs: Sequence[Mapping[str, float]], gold: Sequence[str | None],
                   n_bins: int = ECE_BINS) -> float:
    """ECE of option probabilities: confidence = max probability, correct = arg-max == gold.
    Items without probabilities (empty mapping) are skipped."""
    if len(probs) != len(gold):
        raise ScoringError(f"ECE: {len(probs)} probability sets but {len(gold)} gold answers")
    conf, corr = [], []
    for p, g in zip(probs, gold):
        if not p:
            continue
        arr = _as_prob_array(p)
        total = arr.sum()
        if total <= 0:
            continue
        letters = list(p)
        best = int(np.argmax(arr))
        conf.append(float(arr[best] / total))
        corr.append(letters[best] == gold_letter(g))
    return expected_calibration_error(conf, corr, n_bins)


# -- accuracy --------------------------------------------------------------------------------

def gold_letter(answer: str | int | None) -> str | None:
    """A gold answer as a letter: "b" -> "B", and 0-3 -> A-D as MedQ-Bench TSVs allow."""
    if answer is None:
        return None
    text = str(answer).strip().upper()
    if text in ("0", "1", "2", "3"):
        return "ABCD"[int(text)]
    return text or None


@dataclass
class MCQResult:
    """One scored MCQ. `gold` is the gold letter (None = no usable gold answer, counts wrong);
    `predicted` is the extracted letter (None = unparseable, counts wrong); `probs` the option
    probabilities (may be empty for a text-only model); `level` the worst degradation level
    0/1/2 of the image (None = unknown)."""

    item_id: str
    gold: str | None
    predicted: str | None
    probs: Mapping[str, float] | None = None
    modality: str | None = None
    question_type: str | None = None
    level: int | None = None

    @property
    def correct(self) -> bool:
        return self.predicted is not None and self.predicted == gold_letter(self.gold)

    @property
    def entropy(self) -> float | None:
        return normalized_entropy(self.probs) if self.probs else None


def _group(results: Iterable[MCQResult], key, order: Sequence[str] = ()) -> dict[str, dict]:
    """Accuracy per key value; keys in `order` first (in that order), the rest sorted."""
    groups: dict[str, list[bool]] = {}
    for r in results:
        k = key(r)
        if k is None:
            continue
        groups.setdefault(str(k), []).append(r.correct)
    rank = {k: i for i, k in enumerate(order)}
    keys = sorted(groups, key=lambda k: (rank.get(k, len(rank)), k))
    return {k: _acc(groups[k]) for k in keys}


def _acc(flags: Sequence[bool]) -> dict:
    n = len(flags)
    c = int(sum(flags))
    return {"n": n, "correct": c, "accuracy": (c / n) if n else None}


def accuracy_report(results: Sequence[MCQResult]) -> dict:
    """Accuracy in [0, 1] (higher is better) overall, per modality, per question type and per
    degradation level ("none" / "mild" / "severe"), plus ECE (15 bins), mean normalized entropy
    and the number of unparseable responses. Groups with an unknown key are left out of that
    breakdown but still count overall. Every group is {"n", "correct", "accuracy"}."""
    results = list(results)
    overall = _acc([r.correct for r in results])
    # (probabilities, gold) of the results that have option probabilities
    with_probs = [(r.probs, r.gold) for r in results if r.probs]
    entropies = [normalized_entropy(p) for p, _ in with_probs]  # = r.entropy
    return {
        **overall,
        "per_modality": _group(results, lambda r: r.modality, order=MODALITIES),
        "per_type": _group(results, lambda r: r.question_type, order=QUESTION_TYPES),
        "per_level": _group(results, lambda r: LEVELS.get(int(r.level)) if r.level is not None
                            else None, order=tuple(LEVELS.values())),
        "ece": ece_from_probs([p for p, _ in with_probs], [g for _, g in with_probs])
        if with_probs else None,
        "mean_entropy": float(np.mean(entropies)) if entropies else None,
        "unparsed": sum(r.predicted is None for r in results),
    }
