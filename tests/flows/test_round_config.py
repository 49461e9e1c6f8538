"""The run's knobs: flow parameters over workspace settings, one frozen record."""
from __future__ import annotations

import dataclasses
import os

import pytest

from medq.tasks._runtime import forget_workspaces
from medq.tasks.rounds import RoundConfig, resolve_config


@pytest.fixture
def ws(tmp_path, monkeypatch):
    for k in [k for k in os.environ if k.startswith("MEDQ_")]:
        monkeypatch.delenv(k)
    forget_workspaces()
    yield str(tmp_path / "ws")
    forget_workspaces()


def test_parameters_override_settings_and_none_keeps_the_setting(ws):
    config = resolve_config(ws, {"budget_per_round": 12, "seed": 3, "total_budget": None})
    assert isinstance(config, RoundConfig)
    assert config.budget_per_round == 12.0 and isinstance(config.budget_per_round, float)
    assert config.seed == 3 and config.total_budget is None
    default = resolve_config(ws, {})
    assert default.candidates_per_round == config.candidates_per_round  # from settings
    assert config.to_dict()["budget_per_round"] == 12.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 4  # type: ignore[misc]


def test_an_unknown_parameter_is_an_error_naming_the_known_ones(ws):
    with pytest.raises(ValueError, match="budget_per_rnd.*known.*budget_per_round"):
        resolve_config(ws, {"budget_per_rnd": 12})
