"""`medq annotate pairs` / `medq annotate pull`: Label Studio work outside a loop round.

- ``pairs FILE.csv``: send A/B comparisons (columns ``image_a,image_b``: catalog image ids) to the
  paired project; the annotators' choices land in ``annotations.better`` on the next pull.
- ``pull``: pull every annotation of the workspace's Label Studio tasks into the catalog now
  (late answers, edits, deletions, comparisons), as a round does when it collects its batch.
"""
from __future__ import annotations

import csv
from pathlib import Path

import typer

from medq.cli._common import JsonOpt, WorkspaceOpt, console, emit_json, guarded, settings_for

annotate_app = typer.Typer(help="Label Studio work outside a loop round: paired comparisons, "
                                "on-demand pulls.", no_args_is_help=True)


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """(image A, image B) ids from a CSV with an ``image_a,image_b`` header."""
    from medq.errors import MedQError
    if not path.is_file():
        raise MedQError(f"pairs file {path} does not exist")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"image_a", "image_b"} - set(reader.fieldnames or [])
        if missing:
            raise MedQError(f"{path}: missing column(s) {sorted(missing)}; expected a header "
                            f"with image_a,image_b (found {reader.fieldnames})")
        pairs = []
        for line, row in enumerate(reader, start=2):
            a, b = (row.get("image_a") or "").strip(), (row.get("image_b") or "").strip()
            if not a or not b:
                raise MedQError(f"{path}, line {line}: empty image_a or image_b")
            pairs.append((a, b))
    if not pairs:
        raise MedQError(f"{path}: no pairs")
    return pairs


def _workspace(workspace: Path | None) -> str:
    from medq.errors import MedQError
    settings = settings_for(workspace)
    if not settings.catalog_path.is_file():
        raise MedQError(f"no MedQ workspace at {settings.workspace}; run `medq init` first")
    return str(settings.workspace)


_PAIRS_FILE = typer.Argument(..., help="CSV with columns image_a,image_b.")
_ROUND = typer.Option("pairs", "--round", help="Round id the tasks are filed under (keeps "
                      "batches apart).")
_FULL = typer.Option(False, "--full", help="Re-read every annotated task (catches deletions on "
                     "any server version).")


@annotate_app.command("pairs")
def pairs_cmd(file: Path = _PAIRS_FILE, round_id: str = _ROUND,
              workspace: Path | None = WorkspaceOpt, json_out: bool = JsonOpt) -> None:
    """Send A/B quality comparisons to Label Studio's paired project (idempotent)."""
    from medq.tasks.annotate import submit_pairs

    def go():
        pairs = read_pairs(file)
        return submit_pairs(_workspace(workspace), pairs, round_id)
    out = guarded(go)
    if json_out:
        emit_json(out)
    else:
        console.print(f"{out['pairs']} pairs ({out['new']} new) in Label Studio project "
                      f"{out['project']}, round {out['round_id']}")


@annotate_app.command("pull")
def pull_cmd(workspace: Path | None = WorkspaceOpt, full: bool = _FULL,
             json_out: bool = JsonOpt) -> None:
    """Pull Label Studio annotations into the catalog now."""
    from medq.tasks.annotate import pull_annotations
    out = guarded(lambda: pull_annotations(_workspace(workspace), full))
    if json_out:
        emit_json(out)
    else:
        console.print(", ".join(f"{k} {v}" for k, v in out.items()))


def register(app: typer.Typer) -> None:
    app.add_typer(annotate_app, name="annotate")
