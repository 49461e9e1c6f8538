"""`medq dashboard`: serve the improvement dashboard (Streamlit) for a workspace.

Binds to 127.0.0.1 unless told otherwise; reads the catalog read-only, so it can run while the
loop is writing.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

from medq.cli._common import WorkspaceOpt, console, fail, settings_for


def streamlit_command(host: str, port: int) -> list[str]:
    """The `streamlit run` command line for the dashboard app."""
    from medq.dashboards import app_path
    return [sys.executable, "-m", "streamlit", "run", str(app_path()),
            "--server.address", host, "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--server.runOnSave", "false",
            "--global.developmentMode", "false", "--client.toolbarMode", "viewer",
            "--theme.base", "light"]


def dashboard_env(workspace: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MEDQ_WORKSPACE"] = str(workspace)
    env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def register(app: typer.Typer) -> None:
    @app.command("dashboard")
    def dashboard(
        workspace: Path = WorkspaceOpt,
        host: str = typer.Option(None, "--host", help="Address to bind (default "
                                 "settings dashboard.host, 127.0.0.1)."),
        port: int = typer.Option(None, "--port", min=1, max=65535,
                                 help="Port (default settings dashboard.port, 8501)."),
    ) -> None:
        """Serve the improvement dashboard (accuracy per round, breakdowns, lift attribution,
        spend, retrieval yield, prototype gallery, annotation queue)."""
        from medq.errors import MedQError
        try:
            settings = settings_for(workspace)
        except MedQError as exc:
            fail(str(exc))
        if not settings.catalog_path.is_file():
            fail(f"no MedQ workspace at {settings.workspace} (no catalog at "
                 f"{settings.catalog_path}); run `medq init` first")
        try:
            from medq.errors import require_extra
            require_extra("streamlit", "dashboard", "medq dashboard")
        except MedQError as exc:
            fail(str(exc))
        host = host or settings.dashboard.host
        port = port or settings.dashboard.port
        if host not in ("127.0.0.1", "localhost", "::1"):
            console.print(f"[yellow]warning:[/] binding to {host}: the dashboard has no "
                          "authentication; anyone who can reach this address can read it")
        console.print(f"MedQ dashboard for {settings.workspace} on http://{host}:{port}")
        cmd = streamlit_command(host, port)
        env = dashboard_env(settings.workspace)
        sys.stdout.flush()
        if os.name == "posix":  # replace this process: stopping it stops the server
            os.execve(cmd[0], cmd, env)
        raise typer.Exit(subprocess.call(cmd, env=env))
