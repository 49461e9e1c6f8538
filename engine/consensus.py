"""Consensus over several annotators of one item (expert lane with ``annotation.consensus`` > 1).

Pure functions over plain records; no I/O.

Vocabulary (see :mod:`medq.engine.taxonomy`): verdicts good / usable / reject (best to worst),
degradations ``[{"type": str, "level": 1|2}]`` (1 = mild, 2 = severe).

Agreement measures (all in [0, 1] except kappa; higher = more agreement):

- verdict share: fraction of the item's annotators that chose the most common verdict,
- Fleiss' kappa over items that all have the same number (>= 2) of raters, Cohen's kappa for exactly
  two raters; both in [-1, 1], ``None`` where undefined (fewer than two raters, or chance agreement
  is 1 because every answer is the same category),
- degradation Jaccard: mean pairwise |A ∩ B| / |A ∪ B| of the annotators' degradation type sets
  (two empty sets agree fully: 1.0).

Disagreement rules (``annotation.disagreement_rule``):

- ``majority``: the verdict chosen by most annotators (a tie goes to the worst of the tied verdicts,
  which is the conservative choice for training data); degradation types kept when more than half
  of the annotators marked them, each at the majority level (ties to the more severe level),
- ``strictest``: the worst verdict anyone gave; the union of degradation types at their highest level,
- ``escalate``: unanimous verdicts resolve as under ``majority``; any verdict disagreement leaves the
  item unresolved and flagged for one more expert (``needs_extra_annotator``).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import TypedDict

import numpy as np

from medq.engine.taxonomy import VERDICTS

RULES = ("majority", "strictest", "escalate")


class ConsensusError(ValueError):
    """Invalid input to a consensus computation (unknown rule, verdict or level)."""


@dataclass(frozen=True)
class Vote:
    """One annotator's answer for one item."""

    annotator: str
    verdict: str
    degradations: tuple[tuple[str, int], ...] = ()
    description: str | None = None

    @classmethod
    def from_record(cls, annotator: str, verdict: str, degradations: Iterable[Mapping] | None,
                    description: str | None = None) -> Vote:
        degs = tuple(sorted((str(d["type"]), int(d["level"])) for d in (degradations or [])))
        return cls(annotator=annotator, verdict=verdict, degradations=degs, description=description)

    @property
    def types(self) -> frozenset[str]:
        return frozenset(t for t, _ in self.degradations)


class _ResultBase(TypedDict):
    """The fields of :class:`ConsensusResult` that every outcome of :func:`resolve` shares."""

    item: str
    rule: str
    n_votes: int
    verdict_share: float
    degradation_jaccard: float
    annotators: list[str]


@dataclass
class ConsensusResult:
    """Outcome for one item.

    `status`: ``agreed`` (unanimous verdict), ``resolved`` (disagreement settled by the rule),
    ``escalated`` (needs another expert), ``pending`` (fewer votes than required).
    `verdict` / `degradations` / `description` are None / [] / None unless agreed or resolved."""

    item: str
    status: str
    rule: str
    n_votes: int
    verdict: str | None
    degradations: list[dict] = field(default_factory=list)
    description: str | None = None
    verdict_share: float = 0.0
    degradation_jaccard: float = 1.0
    annotators: list[str] = field(default_factory=list)

    @property
    def needs_extra_annotator(self) -> bool:
        return self.status == "escalated"

    @property
    def final(self) -> bool:
        return self.status in ("agreed", "resolved")


def _check_verdict(v: str) -> int:
    try:
        return VERDICTS.index(v)
    except ValueError:
        raise ConsensusError(f"unknown verdict {v!r}; expected one of {VERDICTS}") from None


def verdict_share(verdicts: Sequence[str]) -> float:
    """Fraction of `verdicts` equal to the most common one (1.0 = unanimous, 0.0 when empty)."""
    if not verdicts:
        return 0.0
    return Counter(verdicts).most_common(1)[0][1] / len(verdicts)


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """|A ∩ B| / |A ∪ B|; two empty sets give 1.0 (both say: no degradation)."""
    sa, sb = set(a), set(b)
    union = sa | sb
    return 1.0 if not union else len(sa & sb) / len(union)


def mean_pairwise_jaccard(sets: Sequence[Iterable[str]]) -> float:
    """Mean Jaccard over all pairs of annotators (1.0 for fewer than two sets)."""
    sets = [set(s) for s in sets]
    pairs = list(combinations(sets, 2))
    if not pairs:
        return 1.0
    return float(np.mean([jaccard(a, b) for a, b in pairs]))


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa of a (n_items, n_categories) matrix of rater counts.

    Every row must sum to the same number of raters n >= 2. Returns None where undefined
    (no items, n < 2, or expected agreement 1: everyone used one category)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] == 0:
        return None
    n = counts.sum(axis=1)
    if not np.all(n == n[0]):
        raise ConsensusError("fleiss_kappa needs the same number of raters on every item")
    n = float(n[0])
    if n < 2:
        return None
    p_j = counts.sum(axis=0) / (counts.shape[0] * n)
    p_i = ((counts * counts).sum(axis=1) - n) / (n * (n - 1))
    p_bar, p_e = float(p_i.mean()), float((p_j * p_j).sum())
    if p_e >= 1.0 - 1e-12:
        return None
    return (p_bar - p_e) / (1.0 - p_e)


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters over the same items (None where undefined)."""
    if len(a) != len(b):
        raise ConsensusError(f"cohen_kappa: {len(a)} vs {len(b)} ratings")
    if not a:
        return None
    cats = sorted(set(a) | set(b))
    idx = {c: i for i, c in enumerate(cats)}
    m = np.zeros((len(cats), len(cats)))
    for x, y in zip(a, b):
        m[idx[x], idx[y]] += 1
    total = m.sum()
    p_o = np.trace(m) / total
    p_e = float((m.sum(axis=1) * m.sum(axis=0)).sum()) / (total * total)
    if p_e >= 1.0 - 1e-12:
        return None
    return float((p_o - p_e) / (1.0 - p_e))


def _majority_verdict(verdicts: Sequence[str]) -> str:
    counts = Counter(verdicts)
    top = max(counts.values())
    tied = [v for v, c in counts.items() if c == top]
    return max(tied, key=_check_verdict)  # tie -> worst verdict


def _majority_degradations(votes: Sequence[Vote]) -> list[dict]:
    n = len(votes)
    levels: dict[str, list[int]] = {}
    for v in votes:
        for t, lvl in v.degradations:
            levels.setdefault(t, []).append(lvl)
    out = []
    for t in sorted(levels):
        if len(levels[t]) * 2 > n:
            c = Counter(levels[t])
            top = max(c.values())
            out.append({"type": t, "level": max(lv for lv, k in c.items() if k == top)})
    return out


def _strictest_degradations(votes: Sequence[Vote]) -> list[dict]:
    worst: dict[str, int] = {}
    for v in votes:
        for t, lvl in v.degradations:
            worst[t] = max(worst.get(t, 0), lvl)
    return [{"type": t, "level": worst[t]} for t in sorted(worst)]


def _description_for(votes: Sequence[Vote], verdict: str) -> str | None:
    """The first non-empty description of an annotator who gave the final verdict."""
    for v in votes:
        if v.verdict == verdict and v.description:
            return v.description
    return None


def resolve(item: str, votes: Sequence[Vote], *, rule: str = "majority", required: int = 1
            ) -> ConsensusResult:
    """Combine `votes` on one item under `rule` once `required` votes are in."""
    if rule not in RULES:
        raise ConsensusError(f"unknown disagreement rule {rule!r}; expected one of {RULES}")
    for v in votes:
        _check_verdict(v.verdict)
        for t, lvl in v.degradations:
            if lvl not in (1, 2):
                raise ConsensusError(f"item {item}: degradation {t!r} has level {lvl}, expected 1 or 2")
    verdicts = [v.verdict for v in votes]
    share = verdict_share(verdicts)
    jac = mean_pairwise_jaccard([v.types for v in votes])
    base: _ResultBase = {"item": item, "rule": rule, "n_votes": len(votes), "verdict_share": share,
            "degradation_jaccard": jac, "annotators": [v.annotator for v in votes]}
    if len(votes) < max(required, 1):
        return ConsensusResult(status="pending", verdict=None, **base)
    unanimous = len(set(verdicts)) == 1
    if rule == "strictest":
        verdict = max(verdicts, key=_check_verdict)
        degs = _strictest_degradations(votes)
    elif rule == "escalate" and not unanimous:
        return ConsensusResult(status="escalated", verdict=None, **base)
    else:
        verdict = _majority_verdict(verdicts)
        degs = _majority_degradations(votes)
    agreed = unanimous and all(v.degradations == votes[0].degradations for v in votes)
    return ConsensusResult(status="agreed" if agreed else "resolved", verdict=verdict,
                           degradations=degs, description=_description_for(votes, verdict), **base)


@dataclass
class AgreementReport:
    """Agreement over many items (see module docstring for each measure)."""

    n_items: int
    n_multi: int                        # items with >= 2 votes (where agreement is defined)
    verdict_share: float | None         # mean over multi-vote items
    degradation_jaccard: float | None   # mean over multi-vote items
    fleiss_kappa: float | None
    cohen_kappa: float | None
    statuses: dict[str, int]

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def agreement(votes_by_item: Mapping[str, Sequence[Vote]], *, rule: str = "majority",
              required: int = 1) -> tuple[AgreementReport, dict[str, ConsensusResult]]:
    """Resolve every item and summarise the agreement across items."""
    results = {item: resolve(item, votes, rule=rule, required=required)
               for item, votes in votes_by_item.items()}
    multi = {k: v for k, v in votes_by_item.items() if len(v) >= 2}
    share = float(np.mean([verdict_share([x.verdict for x in v]) for v in multi.values()])) \
        if multi else None
    jac = float(np.mean([mean_pairwise_jaccard([x.types for x in v]) for v in multi.values()])) \
        if multi else None
    # Fleiss: over the most common rater count, so items with an extra (escalation) vote still count.
    fk = None
    if multi:
        n_common = Counter(len(v) for v in multi.values()).most_common(1)[0][0]
        rows = [[sum(1 for x in v if x.verdict == c) for c in VERDICTS]
                for v in multi.values() if len(v) == n_common]
        fk = fleiss_kappa(np.array(rows))
    ck = None
    pairs = [v for v in multi.values() if len(v) == 2]
    if pairs:
        ck = cohen_kappa([v[0].verdict for v in pairs], [v[1].verdict for v in pairs])
    report = AgreementReport(n_items=len(results), n_multi=len(multi), verdict_share=share,
                             degradation_jaccard=jac, fleiss_kappa=fk, cohen_kappa=ck,
                             statuses=dict(Counter(r.status for r in results.values())))
    return report, results


def votes_from_annotations(rows: Iterable[Mapping], *, key: str = "image_id"
                           ) -> dict[str, list[Vote]]:
    """Group annotation rows (dicts with annotator, verdict, degradations as a list or JSON text,
    description; e.g. the catalog's ``annotations`` table) into votes per `key`. Rows without a
    verdict are left out (they are quarantined upstream)."""
    import json

    out: dict[str, list[Vote]] = {}
    for row in rows:
        if not row.get("verdict"):
            continue
        degs = row.get("degradations") or []
        if isinstance(degs, str):
            degs = json.loads(degs)
        out.setdefault(str(row[key]), []).append(
            Vote.from_record(str(row.get("annotator") or "?"), row["verdict"], degs,
                             row.get("description")))
    return out
