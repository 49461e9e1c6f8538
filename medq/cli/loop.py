"""`medq run`, `medq demo`, `medq serve`, `medq rounds`: the closed loop from the command line."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from medq.cli._common import (
    JsonOpt,
    VerboseOpt,
    WorkspaceOpt,
    console,
    emit_json,
    fail,
    settings_for,
)


def print_table(table: Table) -> None:
    """Tables go to stdout, wide enough to stay readable when piped (not a terminal)."""
    out = Console()
    if not out.is_terminal:
        out = Console(width=140)
    out.print(table)


def prefect_environment(workspace: Path, *, verbose: bool = True) -> Path | None:
    """Keep Prefect's home inside the workspace and its telemetry off (before importing it).
    Unless `verbose`, Prefect's console logs go to a file in the workspace (returned)."""
    home = Path(workspace).resolve() / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the temporary server can take a while to start on a busy 2-core machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # OpenMP threads that spin while waiting starve the other core on small machines
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from medq.cli.run_logs import route_prefect_logs
    return route_prefect_logs(workspace, verbose=verbose)


def round_rows(workspace: Path) -> list[dict]:
    """Every finished round's summary (rounds.report), oldest first."""
    from medq.storage import loop_records
    from medq.storage.catalog import Catalog, loads
    settings = settings_for(workspace)
    catalog = Catalog.open(settings.catalog_path, read_only=True)
    return [loads(r["report"], {}) | {"status": r["status"]}
            for r in loop_records.done_round_reports(catalog)]


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def rounds_table(rows: list[dict]) -> Table:
    table = Table(title="MedQ rounds", caption="acc = eval MCQ accuracy %, desc = description "
                  "score 0-8, E/V/A = items per lane (expert/verify/auto), yield = % of retrieved "
                  "candidates the model gets wrong, base = the same on a random pool sample",
                  caption_justify="left", pad_edge=False)
    for col in ("round", "acc in", "acc out", "desc", "promo", "spend", "E/V/A", "protos",
                "cands", "yield", "base"):
        table.add_column(col, justify="left" if col == "round" else "right", no_wrap=True)
    for r in rows:
        lanes = r.get("items_by_lane") or {}
        desc = r.get("description_out")
        table.add_row(r.get("round_id", "?"), _pct(r.get("accuracy_in")), _pct(r.get("accuracy_out")),
                      "-" if desc is None else f"{desc:.2f}",
                      "yes" if r.get("promoted") else "no", f"{r.get('spend', 0):.1f}",
                      "/".join(str(lanes.get(k, 0)) for k in ("expert", "verify", "auto")),
                      str(r.get("n_prototypes", "-")), str(r.get("n_candidates", "-")),
                      _pct(r.get("failure_yield")), _pct(r.get("pool_base_rate")))
    return table


def run_rounds(workspace: Path, rounds: int, *, budget: float | None, annotator: str | None,
               candidates: int | None, total_budget: float | None, target: float | None,
               seed: int, quiet: bool = False, verbose: bool = False) -> list[dict]:
    """Run the loop until `rounds` rounds are done, one flow run per round (a progress bar
    advances between them, one line per finished step). Resumes a crashed round first."""
    logs = prefect_environment(workspace, verbose=verbose)
    if logs is not None and not quiet:
        console.print(f"Prefect logs: {logs} (--verbose shows them here)", style="dim")
    from medq.flows.engine_loop import engine_loop
    from medq.storage.workspace import Workspace
    Workspace.init(settings_for(workspace))
    done = len(round_rows(workspace))
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} rounds"), TimeElapsedColumn(),
                  console=console, disable=quiet) as progress:
        bar = progress.add_task("closed loop", total=rounds, completed=min(done, rounds))
        while done < rounds:
            progress.update(bar, description=f"round {done + 1}")
            engine_loop(workspace=str(workspace), rounds=done + 1, budget_per_round=budget,
                        total_budget=total_budget, target_accuracy=target, annotator=annotator,
                        candidates_per_round=candidates, seed=seed)
            now = len(round_rows(workspace))
            if now == done:  # a stop rule fired
                break
            done = now
            progress.update(bar, completed=min(done, rounds))
    return round_rows(workspace)


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(workspace: Path | None = WorkspaceOpt,
                rounds: int = typer.Option(3, min=1, help="Run until the workspace has this many finished rounds."),
                budget: float | None = typer.Option(None, help="Cost units per round (default: settings)."),
                total_budget: float | None = typer.Option(None, help="Stop when this much is spent."),
                target: float | None = typer.Option(None, help="Stop at this MCQ accuracy (0-1)."),
                annotator: str | None = typer.Option(None, help="simulated | labelstudio | oracle:LABELS.jsonl"),
                candidates: int | None = typer.Option(None, help="Retrieved candidates scored per round."),
                seed: int = typer.Option(0),
                verbose: bool = VerboseOpt,
                json_out: bool = JsonOpt) -> None:
        """Run the closed loop on the workspace (resumes a crashed round first)."""
        from medq.errors import MedQError
        ws = settings_for(workspace).workspace
        try:
            rows = run_rounds(ws, rounds, budget=budget, annotator=annotator, candidates=candidates,
                              total_budget=total_budget, target=target, seed=seed, quiet=json_out,
                              verbose=verbose)
        except MedQError as exc:
            fail(str(exc))
        if json_out:
            emit_json(rows)
        else:
            print_table(rounds_table(rows))

    @app.command("demo")
    def demo_cmd(workspace: Path = typer.Option(Path(".medq-demo"), "--workspace", "-w"),
                 rounds: int = typer.Option(3, min=1), eval_size: int = typer.Option(100, min=10),
                 pool_size: int = typer.Option(2000, min=100), seed_size: int = typer.Option(150, min=20),
                 budget: float = typer.Option(60.0, help="Cost units per round."),
                 candidates: int = typer.Option(300, min=10),
                 seed: int = typer.Option(0),
                 keep: bool = typer.Option(False, help="Reuse an existing demo workspace."),
                 verbose: bool = VerboseOpt,
                 json_out: bool = JsonOpt) -> None:
        """Fresh workspace, small synthetic world (biased seed set, rare hard cases in the pool),
        simulated annotators, a few rounds; prints the per-round summary."""
        from medq.errors import MedQError
        ws = workspace.resolve()
        if ws.exists() and not keep:
            shutil.rmtree(ws)
        prefect_environment(ws, verbose=verbose)
        try:
            from medq.tasks._runtime import open_workspace
            from medq.tasks.world_setup import load_world_task, synthesize_world
            world = ws / "world"
            with console.status("synthesizing the demo world"):
                synthesize_world(str(world), {"seed": seed, "eval_size": eval_size,
                                              "pool_size": pool_size, "seed_size": seed_size})
            with console.status("loading the world into the workspace"):
                open_workspace(str(ws))
                load_world_task(str(ws), str(world))
            rows = run_rounds(ws, rounds, budget=budget, annotator="simulated",
                              candidates=candidates, total_budget=None, target=None, seed=seed,
                              quiet=json_out, verbose=verbose)
        except MedQError as exc:
            fail(str(exc))
        if json_out:
            emit_json(rows)
            return
        print_table(rounds_table(rows))
        if rows:
            first = rows[0]
            best = max((r["accuracy_out"] for r in rows if r.get("promoted")),
                       default=first.get("accuracy_in"))
            console.print(f"MCQ accuracy {_pct(first.get('accuracy_in'))} % -> {_pct(best)} % "
                          f"after {len(rows)} rounds; workspace: {ws}")

    @app.command("rounds")
    def rounds_cmd(workspace: Path | None = WorkspaceOpt, json_out: bool = JsonOpt) -> None:
        """Show the summary of every finished round."""
        from medq.errors import MedQError
        try:
            rows = round_rows(settings_for(workspace).workspace)
        except MedQError as exc:
            fail(str(exc))
        emit_json(rows) if json_out else print_table(rounds_table(rows))

    @app.command("serve")
    def serve_cmd(workspace: Path | None = WorkspaceOpt,
                  cron: str = typer.Option("0 2 * * *", help="Schedule of the engine loop (cron)."),
                  rounds: int = typer.Option(1, min=1, help="Rounds per scheduled run (added to those done)."),
                  name: str = typer.Option("medq-engine-loop")) -> None:
        """Serve the engine loop as a scheduled Prefect deployment (needs a Prefect server:
        `medq services up prefect` and PREFECT_API_URL), plus an on-demand evaluate deployment."""
        ws = settings_for(workspace).workspace
        prefect_environment(ws)
        from medq.flows.deployments import serve_deployments
        serve_deployments(str(ws), cron=cron, rounds=rounds, name=name)
