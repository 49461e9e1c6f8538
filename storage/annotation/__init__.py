"""Annotation backends, chosen by name: ``simulated``, ``oracle:LABELS.jsonl``, ``labelstudio``."""
from __future__ import annotations

from medq.errors import MedQError
from medq.storage.annotation.base import (
    AnnotationBackend,
    AnnotationRecord,
    AnnotationRequest,
    QueueStatus,
)

BACKENDS = ("simulated", "oracle:LABELS.jsonl", "labelstudio")

__all__ = [
    "BACKENDS",
    "AnnotationBackend",
    "AnnotationRecord",
    "AnnotationRequest",
    "QueueStatus",
    "create_annotation_backend",
]


def create_annotation_backend(workspace, name: str | None = None) -> AnnotationBackend:
    """The backend named `name` (default ``settings.annotation.backend``), imported lazily."""
    settings = workspace.settings
    name = name or settings.annotation.backend
    seed = settings.model.seed
    if name == "simulated":
        from medq.storage.annotation.simulated import SimulatedAnnotator, catalog_truth
        return SimulatedAnnotator(catalog_truth(workspace.catalog),
                                  error_rate=settings.annotation.error_rate, seed=seed)
    if name.startswith("oracle:"):
        from pathlib import Path

        from medq.storage.annotation.simulated import SimulatedAnnotator, file_truth
        from medq.storage.ingest.pipeline import deid_salt
        return SimulatedAnnotator(file_truth(Path(name.split(":", 1)[1]), workspace.catalog,
                                             salt=lambda: deid_salt(workspace, create=False)),
                                  error_rate=settings.annotation.error_rate, seed=seed,
                                  name="oracle")
    if name == "labelstudio":
        from medq.storage.labelstudio import LabelStudioBackend
        return LabelStudioBackend.from_workspace(workspace)
    raise MedQError(f"unknown annotation backend {name!r}; valid: {', '.join(BACKENDS)}")
