"""Annotation backends: where routed items go to be labelled and where labels come back from.

A backend is chosen by name (``settings.annotation.backend`` or ``--annotator``):
``simulated`` (in-process, answers from ground truth), ``oracle:LABELS.jsonl`` (same, from a labels
file), ``labelstudio`` (a real Label Studio server). All are idempotent: submitting the same task
twice creates it once; pulling twice returns the same records with the same ids.
"""
from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class AnnotationRequest:
    """One item to label. `prediction` is the model's pre-annotation
    ({"verdict", "degradations", "description", "score"}) shown in the verify lane.
    `image_key` is the object-store key of the normalized PNG (None when rendered on demand)."""

    task_id: str
    round_id: str
    image_id: str
    lane: str
    uncertainty: float
    image_key: str | None = None
    modality: str | None = None
    prediction: dict[str, Any] | None = None
    n_annotators: int = 1
    model_version: str | None = None


@dataclass
class AnnotationRecord:
    """One finished annotation, already in the catalog's vocabulary.
    `degradations` is [{"type": str, "level": 1|2}].

    Paired (A/B comparison) annotations (lane ``paired``) carry `better` ("A" or "B": which of
    `image_id` (A) and `image_b_id` (B) has the better quality) and usually no verdict; the
    single-image lanes leave both None."""

    annotation_id: str
    task_id: str
    round_id: str
    image_id: str
    annotator: str
    lane: str
    verdict: str | None
    degradations: list[dict] = field(default_factory=list)
    description: str | None = None
    modality: str | None = None
    accepted_prediction: bool | None = None
    updated_at: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    better: str | None = None
    image_b_id: str | None = None

    def to_row(self) -> dict[str, Any]:
        return {"annotation_id": self.annotation_id, "task_id": self.task_id,
                "round_id": self.round_id, "image_id": self.image_id, "annotator": self.annotator,
                "lane": self.lane, "verdict": self.verdict, "degradations": self.degradations,
                "description": self.description, "modality": self.modality,
                "accepted_prediction": self.accepted_prediction,
                "external_updated_at": self.updated_at, "raw": self.raw, "better": self.better,
                "image_b_id": self.image_b_id}


@dataclass
class QueueStatus:
    total: int
    done: int
    pending: int
    deleted: int = 0

    @property
    def finished(self) -> bool:
        return self.pending == 0


class AnnotationBackend(abc.ABC):
    name: str = "abstract"

    @abc.abstractmethod
    def submit(self, requests: Sequence[AnnotationRequest]) -> dict[str, str]:
        """Send tasks (idempotent by task_id). Returns task_id -> backend task id."""

    @abc.abstractmethod
    def pull(self, task_ids: Sequence[str] | None = None) -> list[AnnotationRecord]:
        """Every finished annotation of the given tasks (all tasks when None)."""

    @abc.abstractmethod
    def status(self, task_ids: Sequence[str]) -> QueueStatus:
        """How many of `task_ids` are done / pending / deleted on the backend."""
