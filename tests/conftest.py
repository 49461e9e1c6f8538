"""Shared fixtures. Service fixtures (S3, Label Studio) live in tests/fixtures/ and start the real
servers from infra/ on 127.0.0.1 for the session that needs them."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Keep Prefect, Hugging Face and GX local and quiet before anything imports them.
_HOME = Path(tempfile.mkdtemp(prefix="medq-test-home-"))
os.environ.setdefault("PREFECT_HOME", str(_HOME / "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for key in [k for k in os.environ if k.startswith("MEDQ_")]:
    del os.environ[key]  # tests must not pick up a developer's settings

pytest_plugins = ["tests.fixtures.services", "tests.fixtures.s3", "tests.fixtures.fake_openai",
                  "tests.fixtures.fake_vllm", "tests.fixtures.labelstudio",
                  "tests.fixtures.dashboard_world"]


@pytest.fixture
def settings(tmp_path):
    from medq.settings import load_settings
    return load_settings(workspace=tmp_path / "ws")


@pytest.fixture
def workspace(settings):
    from medq.storage.workspace import Workspace
    return Workspace.init(settings)


@pytest.fixture(scope="session")
def prefect_engine():
    """A real Prefect engine with a temporary server for the test session."""
    from prefect.testing.utilities import prefect_test_harness
    with prefect_test_harness(server_startup_timeout=120):
        yield
