"""Settings tree: defaults, medq.yaml, MEDQ_* overrides and their order, masked secrets, clear
errors for bad files and values."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from medq.errors import MedQError
from medq.settings import SettingsError, load_settings

SECRET = "s3cr3t-value-never-shown"


def _yaml(ws: Path, text: str) -> None:
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "medq.yaml").write_text(text)


def test_defaults_are_local_and_under_the_workspace(tmp_path):
    s = load_settings(workspace=tmp_path / "ws")
    assert s.workspace == (tmp_path / "ws").resolve()
    assert s.objects.backend == "local"
    assert s.catalog_path == s.workspace / "catalog.duckdb"
    assert s.objects_root == s.workspace / "objects"
    assert s.index_root == s.workspace / "index"
    assert s.objects.s3_access_key.get_secret_value() == ""
    assert s.services.dir is None


def test_relative_workspace_resolves_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_settings().workspace == tmp_path / ".medq"


def test_env_overrides_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDQ_OBJECTS__BACKEND", "s3")
    monkeypatch.setenv("MEDQ_OBJECTS__S3_BUCKET", "from-env")
    monkeypatch.setenv("MEDQ_SERVICES__S3_PORT", "9123")
    s = load_settings(workspace=tmp_path / "ws")
    assert s.objects.backend == "s3" and s.objects.s3_bucket == "from-env"
    assert s.services.s3_port == 9123


def test_yaml_then_env_then_arguments(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    _yaml(ws, "objects:\n  backend: s3\n  s3_bucket: from-yaml\n  s3_endpoint: minio:9000\n"
              "loop:\n  rounds: 7\n")
    s = load_settings(workspace=ws)
    assert (s.objects.backend, s.objects.s3_bucket, s.loop.rounds) == ("s3", "from-yaml", 7)
    monkeypatch.setenv("MEDQ_LOOP__ROUNDS", "9")
    s = load_settings(workspace=ws)
    assert s.loop.rounds == 9 and s.objects.s3_bucket == "from-yaml"
    s = load_settings(workspace=ws, loop={"rounds": 11})
    assert s.loop.rounds == 11


def test_workspace_from_env_selects_its_yaml(tmp_path, monkeypatch):
    ws = tmp_path / "envws"
    _yaml(ws, "model:\n  backend: hf\n")
    monkeypatch.setenv("MEDQ_WORKSPACE", str(ws))
    s = load_settings()
    assert s.workspace == ws.resolve() and s.model.backend == "hf"


def test_secrets_are_masked_everywhere(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    _yaml(ws, f"objects:\n  s3_secret_key: {SECRET}\n")
    monkeypatch.setenv("MEDQ_LABELSTUDIO__TOKEN", SECRET + "-token")
    s = load_settings(workspace=ws, judge={"api_key": SECRET + "-judge"})
    assert s.objects.s3_secret_key.get_secret_value() == SECRET
    assert s.labelstudio.token.get_secret_value() == SECRET + "-token"
    public = s.public_dict()
    text = json.dumps(public)
    for shown in (text, repr(s), str(s), repr(s.objects), str(public)):
        assert SECRET not in shown
    assert public["objects"]["s3_secret_key"] == "**********"
    assert public["services"]["labelstudio_password"] == "**********"
    json.dumps(public)  # JSON-safe


@pytest.mark.parametrize("text, match", [
    ("objects: [1\n", "not valid YAML"),
    ("- just\n- a list\n", "mapping at the top level"),
    ("objects:\n  backend: [oops\n", "not valid YAML"),
])
def test_bad_yaml_is_a_clear_error(tmp_path, text, match):
    ws = tmp_path / "ws"
    _yaml(ws, text)
    with pytest.raises(SettingsError, match=match) as info:
        load_settings(workspace=ws)
    assert isinstance(info.value, MedQError)
    assert str(ws / "medq.yaml") in str(info.value)


def test_invalid_values_name_the_setting_without_echoing_it(tmp_path):
    ws = tmp_path / "ws"
    _yaml(ws, "objects:\n  presign_expiry_s: 5\n  s3_secret_key: 123456789\nunknown_area: 1\n")
    with pytest.raises(SettingsError) as info:
        load_settings(workspace=ws)
    msg = str(info.value)
    assert "objects.presign_expiry_s" in msg and "unknown_area" in msg
    assert "objects.s3_secret_key" in msg and "123456789" not in msg
    assert str(ws / "medq.yaml") in msg


def test_cross_field_validation(tmp_path):
    with pytest.raises(SettingsError, match="auto_entropy must be <= lanes.expert_entropy"):
        load_settings(workspace=tmp_path, lanes={"auto_entropy": 0.9, "expert_entropy": 0.5})


def test_bad_env_value_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDQ_SERVICES__S3_PORT", "not-a-port")
    with pytest.raises(SettingsError, match="services.s3_port"):
        load_settings(workspace=tmp_path)


@pytest.mark.parametrize(("area", "field", "typo", "valid"), [
    ("judge", "kind", "opneai", "'openai'"), ("index", "kind", "ivf-pq", "'ivfpq'"),
    ("annotation", "disagreement_rule", "majorty", "'majority'"),
    ("labelstudio", "image_access", "s3", "'presigned'"),
])
def test_a_typo_in_a_choice_names_the_setting_and_the_choices(tmp_path, area, field, typo, valid):
    with pytest.raises(SettingsError, match=rf"{area}\.{field}: Input should be .*{valid}"):
        load_settings(workspace=tmp_path, **{area: {field: typo}})
