"""`medq init`, `medq status`, `medq services up|down|status`: thin wrappers over
:mod:`medq.storage.workspace` and :mod:`medq.storage.service_supervisor`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from medq.cli._common import JsonOpt, WorkspaceOpt, console, emit_json, guarded, settings_for

NamesArg = typer.Argument(None, help="Services: s3, labelstudio, prefect (default: all installed).",
                          show_default=False)


def init(workspace: Path | None = WorkspaceOpt, json_out: bool = JsonOpt) -> None:
    """Create (or migrate) the workspace: folders, medq.yaml, catalog, object store."""
    def run() -> None:
        from medq.storage.service_supervisor import workspace_status
        from medq.storage.workspace import Workspace

        settings = settings_for(workspace)
        ws = Workspace.init(settings)
        warning = None
        try:
            _ = ws.objects  # creates the local folder or the S3 bucket
        except Exception as exc:
            from medq.errors import MedQError
            if not isinstance(exc, MedQError):
                raise
            warning = str(exc)
        report = workspace_status(settings)
        if json_out:
            emit_json(report)
        else:
            console.print(f"[green]initialized[/] workspace {report['workspace']}")
            _print_status(report)
        if warning:
            console.print(f"[yellow]warning:[/] object store not ready: {warning}")
    guarded(run)


def status(workspace: Path | None = WorkspaceOpt, json_out: bool = JsonOpt) -> None:
    """Workspace, settings (secrets masked), catalog schema and row counts, object store.
    Exit code 1 when something is not ready (JSON is still printed)."""
    def run() -> None:
        from medq.storage.service_supervisor import workspace_status

        report = workspace_status(settings_for(workspace))
        if json_out:
            emit_json(report)
        else:
            _print_status(report, show_settings=True)
        if not report["ok"]:
            raise typer.Exit(1)
    guarded(run)


def _print_status(report: dict[str, Any], show_settings: bool = False) -> None:
    cat, obj = report["catalog"], report["objects"]
    table = Table(title="MedQ workspace", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("workspace", report["workspace"])
    version = cat.get("schema_version")
    table.add_row("catalog", f"{cat['path']}  schema {version if version is not None else '-'}"
                  f"/{cat['latest_version']}")
    if cat.get("error"):
        table.add_row("", f"[red]{cat['error']}[/]")
    reach = obj.get("reachable")
    table.add_row("objects", f"{obj['backend']}  {obj.get('location', '')}  "
                  + ("[green]reachable[/]" if reach else "[red]unreachable[/]"))
    if obj.get("error"):
        table.add_row("", f"[red]{obj['error']}[/]")
    console.print(table)
    if cat.get("tables"):
        rows = Table(title="catalog tables", title_justify="left")
        rows.add_column("table")
        rows.add_column("rows", justify="right")
        for name, count in cat["tables"].items():
            rows.add_row(name, str(count))
        console.print(rows)
    if show_settings:
        settings = Table(title="settings (secrets masked)", title_justify="left")
        settings.add_column("key")
        settings.add_column("value")
        for area, values in report["settings"].items():
            if isinstance(values, dict):
                for key, value in values.items():
                    settings.add_row(f"{area}.{key}", str(value))
            else:
                settings.add_row(area, str(values))
        console.print(settings)


# -- services ----------------------------------------------------------------------------------

services_app = typer.Typer(help="Start, stop and check the local services on 127.0.0.1 "
                           "(S3 endpoint, Label Studio, Prefect server).", no_args_is_help=True)


def _print_services(statuses: list, json_out: bool) -> None:
    if json_out:
        emit_json([s.to_dict() for s in statuses])
        return
    table = Table(title="MedQ services", title_justify="left")
    for col in ("service", "state", "url", "pid", "detail"):
        table.add_column(col)
    colors = {"running": "green", "stopped": "dim", "unhealthy": "red", "not-installed": "yellow"}
    for s in statuses:
        table.add_row(s.name, f"[{colors.get(s.state, 'white')}]{s.state}[/]", s.url,
                      str(s.pid or ""), s.detail)
    console.print(table)


@services_app.command("up")
def services_up_cmd(names: list[str] | None = NamesArg, workspace: Path | None = WorkspaceOpt,
                    json_out: bool = JsonOpt) -> None:
    """Start services and wait until they are healthy."""
    def run() -> None:
        from medq.storage.service_supervisor import services_up
        with console.status("starting services ..."):
            statuses = services_up(names or None, settings_for(workspace))
        _print_services(statuses, json_out)
    guarded(run)


@services_app.command("down")
def services_down_cmd(names: list[str] | None = NamesArg,
                      workspace: Path | None = WorkspaceOpt, json_out: bool = JsonOpt) -> None:
    """Stop services (stopping a stopped service is fine)."""
    def run() -> None:
        from medq.storage.service_supervisor import services_down
        _print_services(services_down(names or None, settings_for(workspace)), json_out)
    guarded(run)


@services_app.command("status")
def services_status_cmd(names: list[str] | None = NamesArg,
                        workspace: Path | None = WorkspaceOpt, json_out: bool = JsonOpt) -> None:
    """Show whether each service is running and healthy (exit 1 if a named one is not)."""
    def run() -> None:
        from medq.storage.service_supervisor import services_status
        statuses = services_status(names or None, settings_for(workspace))
        _print_services(statuses, json_out)
        if names and not all(s.healthy for s in statuses):
            raise typer.Exit(1)
    guarded(run)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("status")(status)
    app.add_typer(services_app, name="services")
