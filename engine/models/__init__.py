"""Model backends, chosen by name and imported lazily.

``create_model(settings.model)`` (or ``create_model("lite")``) builds a fresh model of the
configured backend; ``load_model(folder)`` reloads a saved one from the ``model.json`` manifest
every backend writes into its folder. Importing this package imports no backend (transformers,
peft and vLLM are heavy or optional).
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from medq.engine.models.base import (
    MCQ,
    Comparison,
    LabelledImage,
    MCQAnswer,
    ModelError,
    QualityModel,
    TrainReport,
)

BACKENDS: dict[str, str] = {
    "lite": "medq.engine.models.lite:LiteModel",
    "hf": "medq.engine.models.hf:HFModel",
    "vllm": "medq.engine.models.vllm:VLLMModel",
}
MANIFEST = "model.json"

__all__ = [
    "BACKENDS",
    "MANIFEST",
    "MCQ",
    "Comparison",
    "LabelledImage",
    "MCQAnswer",
    "ModelError",
    "QualityModel",
    "TrainReport",
    "backend_class",
    "create_model",
    "load_model",
    "read_manifest",
    "write_manifest",
]


def backend_class(name: str) -> type[QualityModel]:
    """The :class:`QualityModel` subclass registered as `name` (imports its module)."""
    if name not in BACKENDS:
        raise ModelError(f"unknown model backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    module, _, attr = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def create_model(spec: Any = "lite", *, version: str | None = None, **kwargs: Any) -> QualityModel:
    """A new model of a backend.

    `spec` is a backend name or a :class:`medq.settings.ModelSettings` (``settings.model``), whose
    ``backend`` picks the class and whose other fields configure it. `kwargs` override settings
    (backend-specific, see each class's ``from_settings``)."""
    if isinstance(spec, str):
        name, settings = spec, None
    elif hasattr(spec, "backend"):
        name, settings = spec.backend, spec
    else:
        raise ModelError(f"create_model: expected a backend name or ModelSettings, got {type(spec).__name__}")
    cls = backend_class(name)
    return cls.from_settings(settings, version=version, **kwargs)


def write_manifest(folder: Path, backend: str, version: str, **extra: Any) -> None:
    """Write ``model.json`` (backend name, version, anything else JSON-safe) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"backend": backend, "version": version, **extra}
    (folder / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True))


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ModelError(f"{path}: no model manifest; not a saved MedQ model folder")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: broken model manifest: {exc}") from exc
    if not isinstance(data, dict) or "backend" not in data:
        raise ModelError(f"{path}: model manifest has no 'backend' field")
    return data


def load_model(folder: Path, **kwargs: Any) -> QualityModel:
    """Reload a model saved with ``model.save(folder)``; the backend comes from ``model.json``.
    `kwargs` go to the backend's ``load`` (e.g. ``device=`` for hf)."""
    manifest = read_manifest(folder)
    cls = backend_class(manifest["backend"])
    return cls.load(Path(folder), **kwargs)
