"""Model registry: a saved version is an object-store folder plus a `model_versions` row and
reloads (in a fresh process state) to a model that answers identically."""
from __future__ import annotations

import pytest

from medq.engine.models.lite import LiteModel
from medq.storage import model_registry as registry
from tests.engine.lite_world import eval_mcqs, make_world


@pytest.fixture(scope="module")
def trained():
    data = make_world(60, seed=21)
    model, _ = LiteModel("base", epochs=3, seed=0).fine_tune(data, new_version="reg-1")
    return model, eval_mcqs(make_world(6, seed=22, prefix="e"), seed=0)


def test_save_and_load_version(workspace, trained):
    model, qs = trained
    key = registry.save_model(workspace, model, parent="base", dataset_id="ds-1",
                              metrics={"accuracy": 0.5})
    assert key == "models/reg-1"
    assert workspace.objects.exists("models/reg-1/model.json")
    row = workspace.catalog.query("SELECT * FROM model_versions WHERE version = 'reg-1'")[0]
    assert row["backend"] == "lite" and row["parent"] == "base" and row["artifact_key"] == key
    registry._LOADED.clear()  # as in a new process
    again = registry.load_model_version(workspace, "reg-1")
    assert isinstance(again, LiteModel) and again is not model
    assert [a.probs for a in again.answer(qs)] == [a.probs for a in model.answer(qs)]
    assert (workspace.root / "cache" / "models" / "reg-1" / "model.json").is_file()
    assert registry.load_model_version(workspace, "reg-1") is again  # cached per process


def test_unknown_and_broken_versions(workspace, trained):
    with pytest.raises(registry.ModelRegistryError, match="not registered"):
        registry.load_model_version(workspace, "nope")
    workspace.catalog.upsert("model_versions", [{"version": "ghost", "backend": "lite",
                                                 "artifact_key": "models/ghost"}])
    with pytest.raises(registry.ModelRegistryError, match="cannot be read"):
        registry.load_model_version(workspace, "ghost")


def test_registered_vllm_version_reloads_with_this_machines_key_and_endpoint(tmp_path):
    """The API key is never saved with a model: a registered vLLM version gets it (and this
    machine's endpoint) from the settings when it is loaded."""
    from medq.engine.models.vllm import VLLMModel
    from medq.settings import load_settings
    from medq.storage.workspace import Workspace
    ws = Workspace.init(load_settings(workspace=tmp_path / "ws", model={
        "backend": "vllm", "vllm_endpoint": "http://127.0.0.1:2/v1",
        "vllm_api_key": "sk-registry-secret"}))
    registry.save_model(ws, VLLMModel("v-reg", endpoint="http://10.0.0.1:8000/v1",
                                      served_model="base-mllm"))
    registry._LOADED.clear()
    again = registry.load_model_version(ws, "v-reg")
    assert isinstance(again, VLLMModel) and again.endpoint == "http://127.0.0.1:2/v1"
    assert again._client._http._key.get_secret_value() == "sk-registry-secret"
    saved = (ws.root / "cache" / "models" / "v-reg" / "model.json").read_text()
    assert "sk-registry-secret" not in saved and "10.0.0.1" in saved
