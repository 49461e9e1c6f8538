"""`medq` command line: a thin layer over importable functions.

Each area registers its commands from its own module (``register(app)``), so the root stays small.
"""
from __future__ import annotations

import importlib

import typer

app = typer.Typer(name="medq", help="MedQ: active-learning data engine for medical image quality "
                  "assessment.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)

# Modules that contribute commands; each exposes register(app).
_AREAS = ("core", "synth", "data", "evaluate", "loop", "annotate", "dashboard")


def _register_all() -> None:
    for area in _AREAS:
        try:
            module = importlib.import_module(f"medq.cli.{area}")
        except ModuleNotFoundError as exc:
            if exc.name == f"medq.cli.{area}":
                continue  # area not installed in this build
            raise
        module.register(app)


_register_all()


def main() -> None:
    app()
