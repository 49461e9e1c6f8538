"""Promotion gate: keep a fine-tuned model only if it is better on the evaluation set.

The primary metric (MCQ accuracy by default, higher = better) must improve by *more than*
``margin`` (``settings.loop.promotion_margin``, absolute, e.g. 0.005 = half a point). Optional
guards bound how much secondary metrics may drop (e.g. ``{"description_overall": 0.25}``: the
description score may not fall by more than 0.25 on its 0-8 scale). Every decision carries a
reason, so a round that keeps the old model records why.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from medq.errors import MedQError


class PromotionError(MedQError):
    """Metrics needed for the decision are missing or not numbers."""


@dataclass
class PromotionDecision:
    """`promote`: use the candidate from now on. `delta` = candidate - current on `metric`
    (None when there is no current model)."""

    promote: bool
    reason: str
    metric: str
    candidate_value: float
    current_value: float | None
    delta: float | None
    margin: float
    guard_failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _metric(metrics: Mapping[str, Any], name: str, which: str) -> float:
    if name not in metrics:
        raise PromotionError(f"promotion: {which} metrics have no {name!r} "
                             f"(have: {sorted(metrics)[:10]})")
    try:
        value = float(metrics[name])
    except (TypeError, ValueError) as exc:
        raise PromotionError(f"promotion: {which} metric {name!r} is not a number: "
                             f"{metrics[name]!r}") from exc
    if not math.isfinite(value):
        raise PromotionError(f"promotion: {which} metric {name!r} is {value}")
    return value


def decide_promotion(candidate: Mapping[str, Any], current: Mapping[str, Any] | None, *,
                     margin: float = 0.005, metric: str = "accuracy",
                     guards: Mapping[str, float] | None = None) -> PromotionDecision:
    """Decide whether the `candidate` model's metrics beat the `current` model's.

    `current` None (no model yet, e.g. round 0): promote. Otherwise promote iff
    ``candidate[metric] - current[metric] > margin`` and no guard fails (a guard ``name: tol``
    fails when ``current[name] - candidate[name] > tol``; a guard metric missing on either side
    is skipped and noted). Higher is better for every metric involved."""
    if margin < 0:
        raise PromotionError(f"promotion: margin must be >= 0, got {margin}")
    cand = _metric(candidate, metric, "candidate")
    if current is None:
        return PromotionDecision(True, f"no current model: promoted with {metric} {cand:.4f}",
                                 metric, cand, None, None, margin)
    cur = _metric(current, metric, "current")
    delta = cand - cur
    failures: list[str] = []
    notes: list[str] = []
    for name, tol in (guards or {}).items():
        if name not in candidate or name not in current:
            notes.append(f"guard {name!r} skipped (metric missing)")
            continue
        drop = _metric(current, name, "current") - _metric(candidate, name, "candidate")
        if drop > tol:
            failures.append(f"{name} dropped by {drop:.4f} (> {tol:g})")
    suffix = f"; {'; '.join(notes)}" if notes else ""
    # a gain equal to the margin up to float rounding (0.605 - 0.600) does not count as more
    if delta <= margin + 1e-12:
        verb = "fell" if delta < 0 else "rose only"
        return PromotionDecision(False, f"kept current model: {metric} {verb} by {delta:+.4f} "
                                        f"({cur:.4f} -> {cand:.4f}), needs > +{margin:g}{suffix}",
                                 metric, cand, cur, delta, margin, failures)
    if failures:
        return PromotionDecision(False, f"kept current model: {metric} rose by {delta:+.4f} but "
                                        f"{'; '.join(failures)}{suffix}",
                                 metric, cand, cur, delta, margin, failures)
    return PromotionDecision(True, f"promoted: {metric} {cur:.4f} -> {cand:.4f} ({delta:+.4f} > "
                                   f"+{margin:g}){suffix}", metric, cand, cur, delta, margin)
