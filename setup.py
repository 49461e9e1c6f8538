"""Maps the requested top-level folders onto sub-packages of `medq`.

`engine/` is imported as `medq.engine`, `storage/` as `medq.storage`, and so on, so nothing
generic lands at the top of site-packages. Everything else lives in pyproject.toml.
"""
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
LAYERS = {"medq": "medq", "medq.engine": "engine", "medq.storage": "storage",
          "medq.tasks": "tasks", "medq.flows": "flows", "medq.dashboards": "dashboards"}


def _packages() -> list[str]:
    found = []
    for name, folder in LAYERS.items():
        base = ROOT / folder
        for init in sorted(base.rglob("__init__.py")):
            rel = init.parent.relative_to(base)
            found.append(".".join([name, *rel.parts]) if rel.parts else name)
    return found


setup(package_dir=LAYERS, packages=_packages())
