"""Offline rule-based description judge (no network, deterministic).

It reads both texts with :func:`medq.engine.scoring.findings.analyze` and scores the MedQ-Bench
dimensions (0-2 each, higher is better) as follows. "Gold units" are the reference's
degradations: the structured labels when the reference has them, else what its text mentions.

Without gold labels or gold text, completeness and preciseness are None (not scorable).

- completeness: 2 x the mean credit over gold units; a unit is credited 1 when the description
  names it exactly, 0.5 when only by a generic word of its family ("noise" for low-dose noise).
  A clean reference scores 2 when the description asserts no degradation, else 1 (the false
  findings are preciseness' business).
- preciseness: starts at 2; minus 1 for each denied gold degradation ("no noise" on a noisy
  image) and for claiming a clean image when the reference has degradations (once); minus 1 per
  invented degradation on a clean reference, 0.5 per invented one otherwise; minus 0.5 per wrong
  level (mild vs severe) and for a wrong modality. Clipped to [0, 2].
- consistency: the verdict the description's own findings imply (none -> good, only mild ->
  usable, any severe -> reject, un-levelled -> usable or reject) against the verdict it states:
  2 - the ordinal distance (0 when it states none).
- quality_accuracy: :func:`medq.engine.scoring.description.quality_accuracy` (ordinal table).

Paired texts: completeness/preciseness as above against the reference text; consistency checks
that the image the text blames more (sum of levels of the problems said of each image) is not
the one it concludes is better; quality_accuracy is 2 for the matching conclusion, else 0.
"""
from __future__ import annotations

import re
from typing import Any

from medq.engine.scoring.description import (
    IMAGE_REF,
    DescriptionJudge,
    DescriptionReference,
    DescriptionScores,
    PairedReference,
    extract_comparison,
    image_ref_side,
    paired_quality_accuracy,
    quality_accuracy,
)
from medq.engine.scoring.findings import Findings, Mention, analyze, clause_spans
from medq.engine.taxonomy import VERDICTS, verdict_distance

UNLEVELLED = 1.5  # weight of a problem without a level cue when comparing two images


class _GoldUnit:
    """One reference degradation: the ids it may be (one for a label) and its level."""

    def __init__(self, types: frozenset[str], level: int | None, exact_type: str | None):
        self.types, self.level, self.exact_type = types, level, exact_type

    def credit(self, mention: Mention) -> float:
        if not (mention.types & self.types):
            return 0.0
        if self.exact_type is None:  # the reference itself only used a generic word
            return 1.0
        return 1.0 if mention.exact_for(self.exact_type) else 0.5


def _gold_units(degradations: list[dict] | None, findings: Findings) -> list[_GoldUnit]:
    if degradations is not None:
        return [_GoldUnit(frozenset({d["type"]}), int(d["level"]) if d.get("level") is not None
                          else None, d["type"]) for d in degradations]
    units: dict[frozenset[str], _GoldUnit] = {}
    for m in findings.present:
        exact = next(iter(m.types)) if m.specific else m.head
        unit = units.setdefault(m.types, _GoldUnit(m.types, m.level, exact if m.specific else None))
        if unit.level is None:
            unit.level = m.level
    return list(units.values())


def _completeness(units: list[_GoldUnit], pred: Findings) -> float:
    present = pred.present
    if not units:
        return 2.0 if not present else 1.0
    credits = [max((u.credit(m) for m in present), default=0.0) for u in units]
    return 2.0 * sum(credits) / len(units)


def _preciseness(units: list[_GoldUnit], pred: Findings, gold_modality: str | None) -> tuple[float, dict]:
    penalty = 0.0
    notes: dict[str, Any] = {"invented": [], "denied": [], "wrong_level": []}
    seen_invented: set[frozenset[str]] = set()
    for m in pred.present:
        matched = [u for u in units if m.types & u.types]
        if not matched:
            if m.types not in seen_invented:
                seen_invented.add(m.types)
                penalty += 1.0 if not units else 0.5
                notes["invented"].append(m.phrase)
            continue
        for u in matched:
            if m.level is not None and u.level is not None and m.level != u.level:
                penalty += 0.5
                notes["wrong_level"].append(m.phrase)
                break
    denied_units = {id(u) for m in pred.denied for u in units if m.types & u.types}
    penalty += 1.0 * len(denied_units)
    notes["denied"] = [m.phrase for m in pred.denied if any(m.types & u.types for u in units)]
    if units and pred.claims_clean and not pred.present and not denied_units:
        # "no artifacts" on a degraded image (one contradiction, not counted twice when the
        # text also denied the degradation by name)
        penalty += 1.0
        notes["claims_clean"] = True
    if gold_modality and pred.modality and pred.modality != gold_modality:
        penalty += 0.5
        notes["wrong_modality"] = pred.modality
    return max(0.0, 2.0 - penalty), {k: v for k, v in notes.items() if v}


def implied_verdicts(findings: Findings) -> set[str]:
    """Verdicts compatible with the problems a text asserts (see module docstring)."""
    levels = [m.level for m in findings.present]
    if not levels:
        return {"good"}
    if 2 in levels:
        return {"reject"}
    if None in levels:
        return {"usable", "reject"}
    return {"usable"}


def _consistency(findings: Findings) -> float:
    if findings.verdict not in VERDICTS:
        return 0.0
    implied = implied_verdicts(findings)
    return 2.0 - min(verdict_distance(findings.verdict, v) for v in implied)


def _blame(text: str) -> dict[str, float]:
    """Weight of the problems each image ("A"/"B") is said to have. Clause by clause: a clause
    naming one image is about it, a clause naming none continues the previous clause's image
    ("Image A is noisy and blurred, with streaks"), a clause naming both is skipped."""
    blame = {"A": 0.0, "B": 0.0}
    low = text.lower()
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", low):
        side = None
        for start, end in clause_spans(sentence, commas=True):
            clause = sentence[start:end]
            sides = {image_ref_side(r) for r in IMAGE_REF.finditer(clause)}
            if len(sides) > 1:
                side = None
                continue
            if sides:
                side = sides.pop()
            if side is None:
                continue
            for m in analyze(clause).present:
                blame[side] += float(m.level) if m.level is not None else UNLEVELLED
    return blame


def _empty(prediction: str | None) -> bool:
    return not (prediction or "").strip()


def _nothing(quality: float | None) -> DescriptionScores:
    """An empty description covers nothing, asserts nothing and concludes nothing."""
    return DescriptionScores(completeness=0.0, preciseness=0.0, consistency=0.0,
                             quality_accuracy=quality, details={"empty": True})


class RulesJudge(DescriptionJudge):
    """Deterministic offline judge (see module docstring). `details` of each score lists the
    degradations it credited, invented, denied or mislevelled, for audits."""

    name = "rules"

    def score(self, prediction: str, reference: DescriptionReference) -> DescriptionScores:
        gold = analyze(reference.text)
        gold_verdict = reference.verdict or gold.verdict
        if _empty(prediction):
            return _nothing(quality_accuracy(None, gold_verdict))
        pred = analyze(prediction)
        # Without gold labels or gold text nothing says what the image shows: not scorable.
        known = reference.degradations is not None or not _empty(reference.text)
        units = _gold_units(reference.degradations, gold)
        precise, notes = _preciseness(units, pred, reference.modality or gold.modality)
        return DescriptionScores(
            completeness=_completeness(units, pred) if known else None,
            preciseness=precise if known else None,
            consistency=_consistency(pred),
            quality_accuracy=quality_accuracy(pred.verdict, gold_verdict),
            details={"verdict": pred.verdict, "found": sorted({m.phrase for m in pred.present}),
                     **notes})

    def score_paired(self, prediction: str, reference: PairedReference,
                     predicted_better: str | None = None) -> DescriptionScores:
        gold_better = reference.better or extract_comparison(reference.text)
        if _empty(prediction):
            return _nothing(paired_quality_accuracy(predicted_better, gold_better))
        pred = analyze(prediction)
        units = _gold_units(None, analyze(reference.text))
        conclusion = extract_comparison(prediction) or (predicted_better or None)
        known = not _empty(reference.text)
        precise, notes = _preciseness(units, pred, None)
        blame = _blame(prediction or "")
        if conclusion is None:
            consistency = 0.0
        elif blame["A"] == blame["B"]:
            consistency = 1.0  # the text gives no reason either way
        else:
            blamed_more = "A" if blame["A"] > blame["B"] else "B"
            consistency = 0.0 if conclusion == blamed_more else 2.0
        return DescriptionScores(
            completeness=_completeness(units, pred) if known else None,
            preciseness=precise if known else None,
            consistency=consistency,
            quality_accuracy=paired_quality_accuracy(conclusion, gold_better),
            details={"better": conclusion, "blame": blame, **notes})


__all__ = ["RulesJudge", "implied_verdicts"]
