"""`medq load world`, `medq import medqbench`, `medq export medqbench`, `medq ingest`: thin
wrappers over :mod:`medq.storage.world_loader`, :mod:`medq.storage.medqbench_catalog` and
:mod:`medq.storage.ingest`."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from medq.cli._common import JsonOpt, WorkspaceOpt, console, emit_json, guarded, settings_for

load_app = typer.Typer(help="Load a world folder into the workspace.", no_args_is_help=True)
import_app = typer.Typer(help="Import benchmark files into the workspace.", no_args_is_help=True)
export_app = typer.Typer(help="Export workspace items as benchmark files.", no_args_is_help=True)


def _workspace(workspace: Path | None):
    from medq.storage.workspace import Workspace
    return Workspace.init(settings_for(workspace))


@contextlib.contextmanager
def _bar(label: str, enabled: bool = True) -> Iterator[Any]:
    """A rich progress bar on stderr; yields a callback progress(done, total, what)."""
    if not enabled:
        yield None
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[what]}", style="dim"),
                  console=console, transient=False) as progress:
        task = progress.add_task(label, total=None, what="")

        def update(done: int, total: int, what: str) -> None:
            progress.update(task, completed=done, total=total or None,
                            what=str(what)[-60:])
        yield update


def _counts_table(title: str, rows: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for k, v in rows.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items()) or "-"
        table.add_row(k, str(v))
    return table


@load_app.command("world")
def load_world_cmd(folder: Path = typer.Argument(..., help="World folder (eval/, seed/, pool/)."),
                   workspace: Path | None = WorkspaceOpt, json_out: bool = JsonOpt) -> None:
    """Load a world: eval TSVs -> eval split, seed -> labelled train split, pool -> pool split
    (its labels kept aside for simulated annotators only)."""
    def run() -> None:
        from medq.storage.world_loader import load_world
        ws = _workspace(workspace)
        with _bar("loading world", not json_out) as progress:
            summary = load_world(ws, folder, progress=progress)
        data = summary.to_dict()
        if json_out:
            emit_json(data)
            return
        console.print(_counts_table(f"world {folder}", {
            "eval items": data["eval"], "train items": data["train"],
            "pool items": data["pool"], "oracle labels": data["oracle_labels"],
            "new / updated / unchanged": f"{data['items_new']} / {data['items_updated']} / "
                                         f"{data['items_unchanged']}",
            "new images": data["images_new"], "quarantined": data["quarantined"],
            "unknown degradation types": data["unknown_degradations"]}))
    guarded(run)


@import_app.command("medqbench")
def import_medqbench_cmd(
        file: Path = typer.Argument(..., help="MedQ-Bench TSV (VLMEvalKit format)."),
        task: str | None = typer.Option(None, "--task", help="mcq | description | paired "
                                           "(default: from the columns)."),
        split: str = typer.Option("eval", "--split", help="Split the items go to."),
        workspace: Path | None = WorkspaceOpt, json_out: bool = JsonOpt) -> None:
    """Import a MedQ-Bench TSV. Any bad row stops the import with its row and column; nothing is
    written then."""
    def run() -> None:
        from medq.storage.medqbench_catalog import import_medqbench
        ws = _workspace(workspace)
        with console.status(f"importing {file}", spinner="dots") if not json_out \
                else contextlib.nullcontext():
            summary = import_medqbench(ws, file, task, split)
        data = summary.to_dict()
        if json_out:
            emit_json(data)
            return
        console.print(_counts_table(f"imported {file.name} ({summary.task}, split {split})", {
            "rows": data["rows"], "new items": data["items_new"],
            "updated items": data["items_updated"], "unchanged items": data["items_unchanged"],
            "new images": data["images_new"],
            "unknown degradation types": data["unknown_degradations"]}))
    guarded(run)


@export_app.command("medqbench")
def export_medqbench_cmd(
        split: str = typer.Option("eval", "--split", help="Split to export."),
        out: Path = typer.Option(..., "--out", help="Output folder."),
        workspace: Path | None = WorkspaceOpt, json_out: bool = JsonOpt) -> None:
    """Export the mcq / description / paired items of a split as MedQ-Bench TSVs."""
    def run() -> None:
        from medq.storage.medqbench_catalog import export_medqbench
        from medq.storage.workspace import Workspace
        ws = Workspace(settings_for(workspace), read_only=True)
        summary = export_medqbench(ws, split, out)
        if json_out:
            emit_json(summary.to_dict())
            return
        console.print(_counts_table(f"exported split {split} to {out}", summary.files))
    guarded(run)


def ingest_cmd(
        source: str = typer.Argument(..., help="Folder, file or s3://bucket/prefix."),
        split: str = typer.Option(..., "--split", help="pool | eval | train"),
        nifti_axis: int | None = typer.Option(None, "--nifti-axis", min=0, max=2,
                                                 help="Axis NIfTI slices are taken along "
                                                      "(default ingest.nifti_axis = 2)."),
        nifti_slices: int | None = typer.Option(None, "--nifti-slices", min=1,
                                                   help="Slices per NIfTI volume."),
        modality: str | None = typer.Option(None, "--modality",
                                               help="Force the modality of every image."),
        workspace: Path | None = WorkspaceOpt, json_out: bool = JsonOpt) -> None:
    """Ingest DICOM / NIfTI / PNG / JPEG / TIFF files: de-identify, normalize, store, record.
    Files that fail are quarantined with a reason; the run goes on."""
    def run() -> None:
        from medq.storage.ingest import ingest
        ws = _workspace(workspace)
        with _bar("ingesting", not json_out) as progress:
            summary = ingest(ws, source, split, progress, nifti_axis=nifti_axis,
                             nifti_slices=nifti_slices, modality=modality)
        data = summary.to_dict()
        if json_out:
            emit_json(data)
            return
        console.print(_counts_table(f"ingest {source} -> {split}", {
            "files": data["files"], "images ingested": data["ingested"],
            "skipped (already there)": data["skipped_existing"],
            "ignored (not images)": data["ignored"],
            "quarantined": data["n_quarantined"], "by reason": data["quarantined"],
            "modalities": data["modalities"], "seconds": data["seconds"]}))
    guarded(run)


def register(app: typer.Typer) -> None:
    app.add_typer(load_app, name="load")
    app.add_typer(import_app, name="import")
    app.add_typer(export_app, name="export")
    app.command("ingest")(ingest_cmd)
