"""`medq evaluate`: score a model version on the evaluation split and print VLMEvalKit-style
tables (perception accuracy per modality / question type / degradation level, calibration, and
the four description dimensions)."""
from __future__ import annotations

from pathlib import Path

import typer

from medq.cli._common import JsonOpt, WorkspaceOpt, console, emit_json, guarded, settings_for


def render_tables(metrics: dict, model: str) -> None:
    """Print the results tables of an evaluation's metrics with rich (stdout)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from medq.engine.scoring import results_tables
    out = Console()
    tables = results_tables(metrics, model)
    if not tables:
        out.print("no evaluation results")
    for title, headers, rows in tables:
        out.print(Text(title, style="bold"))  # above the table: a title never wraps to its width
        table = Table()
        for i, h in enumerate(headers):
            table.add_column(h, justify="left" if i == 0 else "right", min_width=len(h))
        for row in rows:
            table.add_row(*row)
        out.print(table)


def run_evaluate(workspace: Path | None, model: str, judge: str | None, split: str,
                 use_flow: bool, show_progress: bool) -> dict:
    """Evaluate `model` (a stored version) and return :meth:`EvalResult.to_dict`."""
    from medq.errors import MedQError
    settings = settings_for(workspace)
    if not settings.catalog_path.is_file():
        raise MedQError(f"no MedQ workspace at {settings.workspace} (no catalog at "
                        f"{settings.catalog_path}); run `medq init` first")
    ws = str(settings.workspace)
    if use_flow:
        from medq.flows.evaluate import evaluate_flow
        return evaluate_flow(model_version=model, judge=judge or "rules", workspace=ws, split=split)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from medq.tasks._runtime import open_workspace
    from medq.tasks.evaluate import evaluate_model, resolve_model_version
    loaded = resolve_model_version(open_workspace(ws), model)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, disable=not show_progress,
                  transient=True) as bar:
        job = bar.add_task(f"evaluating {model}", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(job, description=f"evaluating {model}: {stage}", completed=done,
                       total=total)

        result = evaluate_model(ws, loaded, judge, split=split, progress=progress)
    return result.to_dict()


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate(
        model: str = typer.Option(..., "--model", "-m", help="Model version to evaluate."),
        judge: str = typer.Option(None, "--judge", help="Description judge: rules | openai | "
                                  "openai:URL (default: settings judge.kind)."),
        split: str = typer.Option("eval", "--split", help="Item split to evaluate on."),
        use_flow: bool = typer.Option(False, "--flow", help="Run as a Prefect flow run "
                                      "(recorded in Prefect, publishes a markdown artifact)."),
        workspace: Path = WorkspaceOpt,
        json_out: bool = JsonOpt,
    ) -> None:
        """Evaluate a model version on the evaluation split and store every per-item row."""
        result = guarded(lambda: run_evaluate(workspace, model, judge, split, use_flow,
                                              show_progress=not json_out))
        if json_out:
            emit_json(result)
            return
        render_tables(result["metrics"], model)
        console.print(f"eval {result['eval_id']}: {result['n_predictions']} predictions stored "
                      f"(judge {result['judge']})")
