"""Shared CLI helpers: workspace option, JSON output, clean error reporting."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import typer
from rich.console import Console

console = Console(stderr=True)

WorkspaceOpt = typer.Option(None, "--workspace", "-w", envvar="MEDQ_WORKSPACE",
                            help="Workspace folder (default .medq).")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="Show Prefect's own logs on the console "
                          "(default: a log file in the workspace).")


def settings_for(workspace: Path | None, **overrides: Any):
    from medq.settings import load_settings
    if workspace is not None:
        overrides["workspace"] = workspace
    return load_settings(**overrides)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fail(message: str, code: int = 1) -> None:
    from rich.markup import escape
    console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def guarded(fn: Callable[[], Any]) -> Any:
    """Run `fn`, turning MedQ's own errors into one clear line and a non-zero exit."""
    from medq.errors import MedQError
    try:
        return fn()
    except MedQError as exc:
        fail(str(exc))
