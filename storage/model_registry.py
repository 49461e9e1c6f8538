"""Model registry: model versions as folders in the object store plus `model_versions` rows.

``save_model`` writes the model to a scratch folder, uploads it under ``models/<version>/`` and
only then registers the catalog row, so a registered version always has a complete artifact (a
crash in between leaves an unregistered upload that the next save overwrites).
``load_model_version`` downloads into ``<workspace>/cache/models/<version>`` once and keeps
loaded models in memory per process.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from medq.engine.models import load_model
from medq.engine.models.base import QualityModel
from medq.errors import MedQError

PREFIX = "models"
_LOADED: dict[tuple[str, str], QualityModel] = {}
_LOCK = threading.Lock()


class ModelRegistryError(MedQError):
    """A model version is unknown or its artifact is missing or unreadable."""


def artifact_key(version: str) -> str:
    return f"{PREFIX}/{version}"


def save_model(workspace, model: QualityModel, *, parent: str | None = None,
               dataset_id: str | None = None, metrics: dict[str, Any] | None = None,
               promoted: bool = False) -> str:
    """Upload `model` and register its version. Returns the artifact key (a folder prefix)."""
    key = artifact_key(model.version)
    with tempfile.TemporaryDirectory(prefix="medq-model-", dir=workspace.scratch("models")) as tmp:
        folder = Path(tmp) / "model"
        model.save(folder)
        workspace.objects.put_folder(key, folder)
    workspace.catalog.upsert("model_versions", [{
        "version": model.version, "backend": model.backend, "parent": parent,
        "dataset_id": dataset_id, "artifact_key": key, "metrics": metrics or {},
        "promoted": promoted}])
    with _LOCK:
        _LOADED[(str(workspace.root), model.version)] = model
    return key


def load_model_version(workspace, version: str) -> QualityModel:
    """The registered model `version` (downloaded once into the workspace cache)."""
    cache_key = (str(workspace.root), version)
    with _LOCK:
        if cache_key in _LOADED:
            return _LOADED[cache_key]
    rows = workspace.catalog.query("SELECT artifact_key, backend FROM model_versions "
                                   "WHERE version = ?", [version])
    if not rows or not rows[0]["artifact_key"]:
        known = [r["version"] for r in workspace.catalog.query(
            "SELECT version FROM model_versions ORDER BY created_at DESC LIMIT 5")]
        raise ModelRegistryError(f"model version {version!r} is not registered in "
                                 f"{workspace.catalog.path}; recent versions: {known or 'none'}")
    local = workspace.root / "cache" / "models" / version
    if not (local / "model.json").is_file():
        staging = local.with_name(f".{version}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            workspace.objects.get_folder(rows[0]["artifact_key"], staging)
        except MedQError as exc:
            raise ModelRegistryError(f"model version {version!r}: artifact "
                                     f"{rows[0]['artifact_key']!r} cannot be read: {exc}") from exc
        shutil.rmtree(local, ignore_errors=True)
        staging.rename(local)
    model = load_model(local, **_load_kwargs(workspace, rows[0]["backend"]))
    with _LOCK:
        _LOADED[cache_key] = model
    return model


def _load_kwargs(workspace, backend: str | None) -> dict:
    """Settings a backend needs to reload that are never saved with the model: the vLLM
    endpoint's API key (a secret) and this machine's endpoint, when configured."""
    if backend != "vllm":
        return {}
    m = workspace.settings.model
    kwargs: dict = {"api_key": m.vllm_api_key}
    if m.vllm_endpoint:
        kwargs["endpoint"] = m.vllm_endpoint
    return kwargs
