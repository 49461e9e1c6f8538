"""Where a CLI run's logs go: a person sees the progress bar, one line per finished step and the
round table; Prefect's own logs (flow and task run lines, server start, retries) go to
``<workspace>/logs/prefect.log`` unless ``--verbose``. Errors still reach the console.

Works through Prefect's documented logging configuration: a ``logging.yml`` (Prefect's default
with the console handler swapped for a file) named by ``PREFECT_LOGGING_SETTINGS_PATH``, set
before Prefect is imported. Flow and task logs still go to the Prefect API (the UI) as always.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# the loop's one-line-per-step messages (medq.tasks.one_round): always on the console
STEP_LOGGER = "medq.steps.progress"


def log_file(workspace: Path) -> Path:
    return Path(workspace).resolve() / "logs" / "prefect.log"


def _config(path: Path) -> dict[str, Any]:
    import importlib.util

    import yaml
    # Prefect's default logging.yml, found without importing Prefect (that would configure it)
    spec = importlib.util.find_spec("prefect")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise RuntimeError("prefect is not installed")
    default = Path(locations[0]) / "logging" / "logging.yml"
    config = yaml.safe_load(default.read_text())
    handlers = config["handlers"]
    handlers["file"] = {"level": 0, "class": "logging.FileHandler", "formatter": "standard",
                        "filename": str(path), "encoding": "utf-8", "delay": True}
    console = dict(handlers["console"])
    console["level"] = "ERROR"  # failures stay visible; INFO and WARNING go to the file
    handlers["console"] = console
    handlers["steps"] = {"level": 0, "class": "logging.StreamHandler", "formatter": "plain",
                         "stream": "ext://sys.stderr"}
    config["formatters"]["plain"] = {"format": "%(message)s"}
    for logger in config["loggers"].values():
        if "console" in logger.get("handlers", []):
            logger["handlers"] = ["file", "console"]
    config["loggers"][STEP_LOGGER] = {"level": "INFO", "handlers": ["steps", "file"],
                                      "propagate": False}
    config["root"]["handlers"] = ["file", "console"]
    return config


def route_prefect_logs(workspace: Path, *, verbose: bool = False) -> Path | None:
    """Before Prefect is imported: send its console logs to the workspace log file (returned)
    unless `verbose`. A ``PREFECT_LOGGING_SETTINGS_PATH`` the user set is left alone."""
    settings = Path(workspace).resolve() / "prefect" / "logging.yml"
    users = os.environ.get("PREFECT_LOGGING_SETTINGS_PATH")
    if verbose or (users and Path(users) != settings):
        return None
    import yaml
    path = log_file(workspace)
    path.parent.mkdir(parents=True, exist_ok=True)
    settings.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(_config(path), sort_keys=False)
    if not settings.is_file() or settings.read_text() != text:
        tmp = settings.with_suffix(".yml.tmp")
        tmp.write_text(text)
        os.replace(tmp, settings)  # never a half-written config
    os.environ["PREFECT_LOGGING_SETTINGS_PATH"] = str(settings)
    return path
