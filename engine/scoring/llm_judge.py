"""LLM description judge with MedQ-Bench's judging semantics.

As in the MedQ-Bench evaluator (VLMEvalKit ``medqbench_caption`` / ``medqbench_paired_description``),
each dimension is asked separately: one chat request per (item, dimension), the model's
description and the reference description inlined, the judge asked to reply only
``Score: <0|1|2>``. The rubric of each dimension (written here in our own words) is:

- completeness: 2 = the reference's low-level information is (almost) fully included, 1 = part of
  it or a similar description, 0 = none of it;
- preciseness: only clear contradictions with the reference count (blur vs sharp, noise vs clean,
  motion-free vs motion artifacts); 2 = consistent, 1 = a few minor contradictions, 0 = obvious
  contradictions or a mismatch with the quality conclusion;
- consistency: whether the problems the description lists support its own final verdict (many
  serious problems -> reject, minor -> usable, none -> good); 2 / 1 / 0;
- quality_accuracy: ordinal verdict distance (reject < usable < good): 2 exact, 1 adjacent,
  0 reject-vs-good; for paired items 2 for the same "which image is better" conclusion, else 0.

Parsing (same rules as the evaluator): ``Score\\s*[:：]\\s*([0-2](?:\\.\\d+)?)`` first, then a JSON
number or ``{"score": x}`` within [0, 2], then a bare number. An unparseable reply is asked
again, up to `retries` more times with exponential backoff; a score that stays unparseable is
None (left out of the dimension's mean). Failed requests are retried by the transport only (one
retry policy per layer: :mod:`medq.storage.openai_chat` retries timeouts, 429 and 5xx); when it
gives up, the judge does not ask again.

The transport is injected (``complete(messages) -> str``) so this module stays pure; the
OpenAI-compatible HTTP client lives in :mod:`medq.storage.openai_chat`.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from medq.engine.scoring.description import (
    DIMENSIONS,
    DescriptionJudge,
    DescriptionReference,
    DescriptionScores,
    PairedReference,
    Reference,
    reference_text,
)
from medq.errors import MedQError

Messages = list[dict[str, str]]
Complete = Callable[[Messages], str]

# Bump when a prompt or the parse rules change: cached judge results keyed on it become stale.
PROMPT_VERSION = 1
SYSTEM_PROMPT = "You are a helpful assistant."
_FORMAT = "Reply with the result only, in exactly this format: Score: <0, 1 or 2>"

_RUBRICS: dict[str, str] = {
    "completeness": (
        "Judge whether the description [MLLM DESC] covers the low-level visual information "
        "given in the reference description [GOLDEN DESC]. Give 2 if it includes all or almost "
        "all of the reference information, 1 if it includes part of it or describes it in a "
        "similar way, and 0 if it includes none of it."),
    "preciseness": (
        "Judge whether the low-level description [MLLM DESC] agrees with the reference "
        "[GOLDEN DESC] and fits the final quality judgment. Small wording differences or minor "
        "omissions that keep the meaning do not count against it; penalize only clear "
        "contradictions with the reference, such as calling a sharp image blurred, a clean image "
        "noisy, an image with motion artifacts motion-free, or an image with low-dose noise "
        "noise-free. Give 2 for overall agreement without major contradictions, 1 for partial "
        "agreement or a few minor contradictions, and 0 for obvious contradictions or a "
        "mismatch with the quality conclusion."),
    "consistency": (
        "Judge the internal consistency of [MLLM DESC]: do the image problems it describes "
        "logically support its own final quality verdict? Many serious problems should lead to "
        "\"reject\", minor problems to \"usable\", and no or very few problems to \"good\". Use "
        "the reference [GOLDEN DESC] to see the expected relation between reasoning and "
        "conclusion. Give 2 if reasoning and verdict are highly consistent, 1 if partly "
        "consistent with minor logical gaps, and 0 if the described problems and the verdict "
        "clearly disagree."),
    "quality_accuracy": (
        "Judge the final quality verdict of [MLLM DESC] against the verdict of the reference "
        "[GOLDEN DESC]. Quality levels are ordered reject < usable < good. Give 2 if the levels "
        "match exactly, 1 if they are adjacent (usable vs good, or reject vs usable), and 0 if "
        "they are two levels apart (reject vs good) or the verdict is missing or wrong."),
}
_PAIRED_RUBRICS: dict[str, str] = {
    "completeness": _RUBRICS["completeness"],
    "preciseness": _RUBRICS["preciseness"],
    "consistency": (
        "Judge the internal consistency of the comparative description [MLLM DESC]: do the "
        "problems it describes for the two images logically support its final conclusion about "
        "which image has the higher quality? Use the reference [GOLDEN DESC] to see the expected "
        "relation between reasoning and conclusion. Give 2 if reasoning and conclusion are "
        "highly consistent, 1 if partly consistent with minor logical gaps, and 0 if they "
        "clearly disagree."),
    "quality_accuracy": (
        "Judge the final quality comparison of [MLLM DESC] against the reference [GOLDEN DESC]: "
        "does it identify the same image as having the higher quality, based on the described "
        "visual characteristics? Give 2 if the conclusion matches the reference, and 0 if it is "
        "the opposite or not a reasonable assessment."),
}

_SCORE_RE = re.compile(r"Score\s*[:：]\s*([0-2](?:\.\d+)?)", re.IGNORECASE)
_BARE_RE = re.compile(r"\s*([0-2](?:\.\d+)?)\s*")


class JudgeEndpointError(MedQError):
    """The judge endpoint could not be reached or refused the request (after retries)."""


def build_prompt(dimension: str, prediction: str, reference: str, *, paired: bool = False) -> Messages:
    """Chat messages asking for one dimension's score (descriptions inlined in place of the
    [MLLM DESC] / [GOLDEN DESC] markers, as the MedQ-Bench evaluator does)."""
    rubrics = _PAIRED_RUBRICS if paired else _RUBRICS
    if dimension not in rubrics:
        raise ValueError(f"unknown dimension {dimension!r}; expected one of {DIMENSIONS}")
    text = rubrics[dimension].replace("MLLM DESC", prediction).replace("GOLDEN DESC", reference)
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"{text} {_FORMAT}"}]


def parse_score(reply: object) -> float | None:
    """The 0-2 score in a judge reply, or None (see module docstring for the rules)."""
    if reply is None:
        return None
    text = str(reply).strip()
    m = _SCORE_RE.search(text)
    if m:
        return float(m.group(1))
    try:
        data = json.loads(text)
    except (ValueError, TypeError):
        data = None
    if isinstance(data, (int, float)) and not isinstance(data, bool) and 0 <= data <= 2:
        return float(data)
    if isinstance(data, dict):
        for key in ("score", "Score"):
            value = data.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 2:
                return float(value)
    m = _BARE_RE.fullmatch(text)
    return float(m.group(1)) if m else None


class LLMJudge(DescriptionJudge):
    """Judge that asks an LLM through `complete` (one request per item and dimension).

    `retries`: extra attempts for an unparseable reply; `backoff_s`: first wait between attempts,
    doubled each time; `max_workers`: concurrent requests. A request the transport gave up on
    (:class:`JudgeEndpointError`, after the transport's own retries) is not asked again: it
    raises when `strict` (the default: an unreachable judge is a setup error, not a low score);
    otherwise it scores None."""

    def __init__(self, complete: Complete, *, name: str = "llm", retries: int = 3,
                 backoff_s: float = 1.0, max_workers: int = 4, strict: bool = True,
                 sleep: Callable[[float], None] = time.sleep):
        self.complete = complete
        self.name = name
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_workers = max(1, max_workers)
        self.strict = strict
        self._sleep = sleep

    def ask(self, messages: Messages) -> float | None:
        """One dimension's score (0-2, higher is better), re-asked while the reply is
        unparseable; None when every reply was."""
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                score = parse_score(self.complete(messages))
            except JudgeEndpointError:
                if self.strict:
                    raise
                return None
            if score is not None:
                return score
        return None

    def _score(self, prediction: str, reference_text: str, paired: bool) -> DescriptionScores:
        # dimension -> score or None; typed Any as ** could reach any field of DescriptionScores
        values: dict[str, Any] = {
            d: self.ask(build_prompt(d, prediction or "", reference_text or "", paired=paired))
            for d in DIMENSIONS}
        return DescriptionScores(**values)

    def score(self, prediction: str, reference: DescriptionReference) -> DescriptionScores:
        return self._score(prediction, reference_text(reference), paired=False)

    def score_paired(self, prediction: str, reference: PairedReference,
                     predicted_better: str | None = None) -> DescriptionScores:
        return self._score(prediction, reference_text(reference), paired=True)

    def score_many(self, predictions: Sequence[str], references: Sequence[Reference],
                   predicted_better: Sequence[str | None] | None = None) -> list[DescriptionScores]:
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        if self.max_workers == 1 or len(predictions) <= 1:
            return super().score_many(predictions, references, predicted_better)
        with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            futures = [pool.submit(self._score, p, reference_text(r), isinstance(r, PairedReference))
                       for p, r in zip(predictions, references)]
            return [f.result() for f in futures]
