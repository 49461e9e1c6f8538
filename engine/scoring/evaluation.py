"""Pure evaluation bookkeeping: eval items in, per-item prediction rows and metrics out.

The evaluate pipeline (``medq.tasks.evaluate`` / ``medq.flows.evaluate``) loads items and runs
the model and the judge; everything that decides *what a prediction scores* lives here so that it
is testable on plain records. Prediction rows match the catalog's ``predictions`` table:
``probs`` (option -> probability), ``predicted`` (extracted letter, verdict or better image),
``correct``, ``entropy`` (normalized, 0-1, higher = less sure), ``response``, ``scores`` (the
four description dimensions) and ``score`` (1/0 for MCQ and paired, 0-8 for descriptions).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medq.engine.models.base import MCQ, Comparison, MCQAnswer
from medq.engine.scoring.description import (
    DescriptionReference,
    DescriptionScores,
    PairedReference,
    aggregate_descriptions,
    extract_verdict,
)
from medq.engine.scoring.mcq import (
    MCQResult,
    ScoringError,
    accuracy_report,
    extract_answer,
    gold_letter,
    normalized_entropy,
)
from medq.engine.taxonomy import MODALITIES

KINDS = ("mcq", "description", "paired")


@dataclass
class EvalItem:
    """One evaluation item as stored in the catalog's ``items`` table (JSON columns parsed)."""

    item_id: str
    kind: str
    image_id: str
    image_b_id: str | None = None
    question: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    answer: str | None = None
    question_type: str | None = None
    modality: str | None = None
    verdict: str | None = None
    degradations: list[dict] | None = None
    level: int | None = None
    description: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EvalItem:
        """Parse a catalog row; a malformed row is a :class:`ScoringError` naming the item."""
        item_id = row.get("item_id")
        kind = row.get("kind")
        if kind not in KINDS:
            raise ScoringError(f"eval item {item_id}: kind {kind!r} is not one of {KINDS}")
        try:
            options = _json(row.get("options")) or {}
            degradations = _json(row.get("degradations"))
        except ValueError as exc:
            raise ScoringError(f"eval item {item_id}: options/degradations are not JSON: {exc}") from exc
        if kind == "mcq":
            if not isinstance(options, dict) or not options:
                raise ScoringError(f"eval item {item_id}: an MCQ needs options {{'A': ...}}, got "
                                   f"{row.get('options')!r:.120}")
            options = {str(k).upper(): str(v) for k, v in options.items()
                       if v is not None and str(v).strip()}
            if gold_letter(row.get("answer")) not in options:
                raise ScoringError(f"eval item {item_id}: gold answer {row.get('answer')!r} is not "
                                   f"one of its options {sorted(options)}")
        if kind == "paired" and not row.get("image_b_id"):
            raise ScoringError(f"eval item {item_id}: a paired item needs image_b_id")
        level = row.get("level")
        return cls(item_id=str(item_id), kind=kind, image_id=str(row.get("image_id")),
                   image_b_id=row.get("image_b_id"), question=row.get("question"),
                   options=options, answer=row.get("answer"),
                   question_type=row.get("question_type"), modality=row.get("modality"),
                   verdict=row.get("verdict"), degradations=degradations,
                   level=None if level is None else int(level), description=row.get("description"))

    def mcq(self, image) -> MCQ:
        """The question as the model sees it: the gold answer is withheld (no leakage)."""
        return MCQ(item_id=self.item_id, image=image, question=self.question or "",
                   options=dict(self.options), answer=None,
                   modality=self.modality, question_type=self.question_type, level=self.level)

    def reference(self) -> DescriptionReference | PairedReference:
        if self.kind == "paired":
            return PairedReference(text=self.description or "",
                                   better=(self.answer or "").strip().upper() or None)
        return DescriptionReference(text=self.description or "", verdict=self.verdict,
                                    degradations=self.degradations, modality=self.modality)


def _json(value):
    if value is None or value == "":
        return None
    if isinstance(value, (dict, list)):
        return value
    return json.loads(value)


def eval_id_for(model_version: str, split: str, judge: str) -> str:
    """Stable id of an evaluation: the same model, split and judge always give the same id, so a
    re-run overwrites instead of duplicating."""
    digest = hashlib.sha256(json.dumps([model_version, split, judge]).encode()).hexdigest()
    return f"eval-{digest[:20]}"


# -- per-item rows ---------------------------------------------------------------------------

def _clean_probs(item: EvalItem, answer: MCQAnswer) -> dict[str, float]:
    probs = {str(k).upper(): float(v) for k, v in (answer.probs or {}).items()}
    extra = sorted(set(probs) - set(item.options))
    if extra:
        raise ScoringError(f"model answered item {item.item_id} with probabilities for option(s) "
                           f"{extra} it does not have (options {sorted(item.options)})")
    if any(not (v >= 0) for v in probs.values()):
        raise ScoringError(f"model answered item {item.item_id} with invalid probabilities {probs}")
    total = sum(probs.values())
    if total <= 0:
        return {}
    return {k: probs.get(k, 0.0) / total for k in item.options}


def mcq_rows(eval_id: str, items: Sequence[EvalItem], answers: Sequence[MCQAnswer], *,
             match_option_text: bool = False) -> tuple[list[dict], list[MCQResult]]:
    """Prediction rows and scored results for MCQ items (answers in the same order)."""
    if len(items) != len(answers):
        raise ScoringError(f"{len(answers)} answers for {len(items)} MCQ items")
    rows, results = [], []
    for item, ans in zip(items, answers):
        if ans.item_id != item.item_id:
            raise ScoringError(f"answer for {ans.item_id} returned in place of {item.item_id}")
        probs = _clean_probs(item, ans)
        response = ans.response if ans.response else ans.letter
        result = MCQResult(item_id=item.item_id, gold=gold_letter(item.answer),
                           predicted=extract_answer(response, item.options,
                                                    match_option_text=match_option_text),
                           probs=probs, modality=item.modality, question_type=item.question_type,
                           level=item.level)
        results.append(result)
        rows.append({"eval_id": eval_id, "item_id": item.item_id, "kind": "mcq", "probs": probs,
                     "predicted": result.predicted, "correct": result.correct,
                     "entropy": result.entropy, "response": response, "scores": None,
                     "score": 1.0 if result.correct else 0.0})
    return rows, results


def description_rows(eval_id: str, items: Sequence[EvalItem], texts: Sequence[str],
                     scores: Sequence[DescriptionScores]) -> list[dict]:
    """Rows for description items: predicted = the extracted verdict, correct = it matches the
    gold verdict (None when there is none), score = the item's 0-8 overall."""
    if not (len(items) == len(texts) == len(scores)):
        raise ScoringError(f"{len(texts)} descriptions / {len(scores)} scores for {len(items)} items")
    rows = []
    for item, text, sc in zip(items, texts, scores):
        verdict = extract_verdict(text)
        rows.append({"eval_id": eval_id, "item_id": item.item_id, "kind": "description",
                     "probs": None, "predicted": verdict,
                     "correct": None if item.verdict is None else verdict == item.verdict,
                     "entropy": None, "response": text, "scores": sc.to_dict(),
                     "score": sc.overall})
    return rows


def paired_rows(eval_id: str, items: Sequence[EvalItem], comparisons: Sequence[Comparison],
                scores: Sequence[DescriptionScores]) -> list[dict]:
    """Rows for paired items: probs {"A": p, "B": 1 - p}, predicted = the better image, score =
    1/0 for the comparison; the judged text's dimensions go to `scores`."""
    if not (len(items) == len(comparisons) == len(scores)):
        raise ScoringError(f"{len(comparisons)} comparisons / {len(scores)} scores for "
                           f"{len(items)} paired items")
    rows = []
    for item, comp, sc in zip(items, comparisons, scores):
        gold = (item.answer or "").strip().upper() or None
        better = (comp.better or "").strip().upper() or None
        p_a = min(1.0, max(0.0, float(comp.prob_a)))
        probs = {"A": p_a, "B": 1.0 - p_a}
        correct = None if gold is None else better == gold
        rows.append({"eval_id": eval_id, "item_id": item.item_id, "kind": "paired",
                     "probs": probs, "predicted": better, "correct": correct,
                     "entropy": normalized_entropy(probs), "response": comp.text,
                     "scores": sc.to_dict(), "score": None if correct is None else float(correct)})
    return rows


# -- aggregates ------------------------------------------------------------------------------

def _per_modality(items: Sequence[EvalItem], scores: Sequence[DescriptionScores]) -> dict:
    groups: dict[str, list[DescriptionScores]] = {}
    for item, sc in zip(items, scores):
        if item.modality:
            groups.setdefault(item.modality, []).append(sc)
    rank = {m: i for i, m in enumerate(MODALITIES)}
    return {m: aggregate_descriptions(groups[m])
            for m in sorted(groups, key=lambda m: (rank.get(m, len(rank)), m))}


def summarize(*, mcq_results: Sequence[MCQResult] = (),
              description_items: Sequence[EvalItem] = (),
              description_scores: Sequence[DescriptionScores] = (),
              paired_items: Sequence[EvalItem] = (), paired_scores: Sequence[DescriptionScores] = (),
              paired_correct: Sequence[bool | None] = (), judge: str = "rules") -> dict:
    """The metrics JSON of an eval run.

    ``accuracy`` is the overall MCQ accuracy (0-1, what promotion compares); ``mcq`` holds the
    breakdowns of :func:`accuracy_report`; ``description`` / ``paired`` hold the dimension means,
    ``overall`` (0-8) and a per-modality breakdown; ``paired.comparison_accuracy`` is the share
    of pairs whose better image was picked correctly."""
    mcq = accuracy_report(mcq_results) if mcq_results else None
    desc = None
    if description_scores:
        desc = aggregate_descriptions(description_scores)
        desc["per_modality"] = _per_modality(description_items, description_scores)
    paired = None
    if paired_scores:
        paired = aggregate_descriptions(paired_scores)
        known = [c for c in paired_correct if c is not None]
        paired["comparison_accuracy"] = (sum(known) / len(known)) if known else None
    return {"accuracy": mcq["accuracy"] if mcq else None, "judge": judge,
            "n_items": len(mcq_results) + len(description_scores) + len(paired_scores),
            "mcq": mcq, "description": desc, "paired": paired}


@dataclass
class EvalResult:
    """What one evaluation produced (also stored as an ``eval_runs`` row + ``predictions``)."""

    eval_id: str
    model_version: str
    split: str
    judge: str
    metrics: dict
    n_predictions: int
    round_id: str | None = None

    @property
    def accuracy(self) -> float | None:
        return self.metrics.get("accuracy")

    def to_dict(self) -> dict:
        return {"eval_id": self.eval_id, "model_version": self.model_version, "split": self.split,
                "judge": self.judge, "round_id": self.round_id,
                "n_predictions": self.n_predictions, "metrics": self.metrics}
