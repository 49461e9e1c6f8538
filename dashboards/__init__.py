"""The improvement dashboard: a Streamlit app (``app.py``) over read-only catalog queries
(``medq.storage.dashboard_queries``), Altair charts (``charts.py``) and one colour palette
(``palette.py``). Start it with ``medq dashboard``."""
from __future__ import annotations

from pathlib import Path


def app_path() -> Path:
    """The Streamlit script to run."""
    return Path(__file__).resolve().with_name("app.py")
