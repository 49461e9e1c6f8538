"""Optional parts name the extra that installs them, in one line, when it is missing."""
from __future__ import annotations

import importlib
import sys

import pytest

from medq.errors import MedQError, MissingExtraError, require_extra


def test_require_extra_returns_the_module_or_names_the_extra(monkeypatch):
    assert require_extra("json", "dashboard", "x").dumps([1]) == "[1]"
    monkeypatch.setitem(sys.modules, "peft", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"LoRA.*'peft'.*pip install 'medq\[mllm\]'"):
        require_extra("peft", "mllm", "LoRA fine-tuning of the hf backend")
    assert issubclass(MissingExtraError, MedQError)  # the CLI prints it as one line


@pytest.mark.parametrize(("module", "blocked", "extra"), [
    ("medq.storage.labelstudio.client", "label_studio_sdk", "labelstudio"),
    ("medq.dashboards.charts", "altair", "dashboard"),
])
def test_a_module_that_needs_an_extra_fails_clearly_without_it(monkeypatch, module, blocked, extra):
    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setitem(sys.modules, blocked, None)
    with pytest.raises(MissingExtraError, match=rf"pip install 'medq\[{extra}\]'"):
        importlib.import_module(module)


def test_every_extra_the_code_names_is_declared():
    """Each ``require_extra(module, extra, ...)`` in the package names an extra of pyproject.toml,
    and ``all`` holds every extra but the GPU one."""
    import ast
    from pathlib import Path

    import tomllib
    root = Path(__file__).resolve().parents[1]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    named = set()
    for folder in ("engine", "storage", "tasks", "flows", "dashboards", "medq"):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require_extra"
                        and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)):
                    named.add(node.args[1].value)
    assert named == {"mllm", "labelstudio", "dashboard"}
    assert named <= set(extras)
    assert set(extras["all"][0].split("[")[1].rstrip("]").split(",")) == named
