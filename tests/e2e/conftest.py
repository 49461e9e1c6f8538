"""Fixtures of the end-to-end tests."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def loaded_workspace(tmp_path_factory):
    """A tiny world loaded into a workspace (copied per scenario)."""
    from medq.settings import load_settings
    from medq.storage.workspace import Workspace
    from medq.storage.world_loader import load_world
    from medq.storage.world_writer import write_world
    from medq.tasks.world_setup import demo_world_spec
    root = tmp_path_factory.mktemp("loop")
    write_world(demo_world_spec(0, eval_size=12, pool_size=200, seed_size=40), root / "world")
    ws = Workspace.init(load_settings(workspace=root / "base"))
    load_world(ws, root / "world")
    return root / "base"


