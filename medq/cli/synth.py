"""`medq synth world` and `medq synth pool`: synthetic data with known ground truth.

Thin wrappers over :func:`medq.storage.world_writer.write_world` and
:func:`medq.storage.pool_manifest.build_manifest` / :func:`register_pool`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from medq.cli._common import JsonOpt, WorkspaceOpt, console, emit_json, guarded, settings_for

synth_app = typer.Typer(help="Generate synthetic worlds and pool manifests (known ground truth).",
                        no_args_is_help=True)


class SynthArgError(Exception):
    pass


@contextlib.contextmanager
def _bar(label: str, enabled: bool = True) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[what]}", style="dim"), console=console) as progress:
        task = progress.add_task(label, total=None, what="")

        def update(done: int, total: int, what: str) -> None:
            progress.update(task, completed=done, total=total or None, what=str(what))
        yield update


def _tokens(values: list[str] | None) -> list[str]:
    """Repeated options and comma-separated values, flattened."""
    out = []
    for v in values or []:
        out += [t.strip() for t in v.split(",") if t.strip()]
    return out


def _weights(values: list[str] | None, what: str) -> dict[str, float]:
    """"CT" or "CT=2" tokens -> {name: weight}."""
    out = {}
    for tok in _tokens(values):
        name, _, w = tok.partition("=")
        try:
            out[name.strip()] = float(w) if w else 1.0
        except ValueError:
            raise SynthArgError(f"{what}: weight of {name!r} is not a number: {w!r}") from None
    return out


def _selection(values: list[str] | None, factor: float, share: float):
    """Modality names and degradation types mixed in one list -> Selection."""
    from medq.engine.taxonomy import MODALITIES
    from medq.engine.world_plan import Selection
    toks = _tokens(values)
    if not toks:
        return None
    mods = tuple(t for t in toks if t in MODALITIES)
    degs = tuple(t for t in toks if t not in MODALITIES)
    return Selection(modalities=mods, degradations=degs, factor=factor, share=share)


def _mix(modalities, degradations, levels: str | None, multi: float | None):
    from medq.engine.world_plan import Mix
    kw: dict[str, Any] = {}
    mods = _weights(modalities, "--modalities")
    if mods:
        kw["modalities"] = mods
    degs = _weights(degradations, "--degradations")
    if degs:
        kw["degradations"] = degs
    if levels:
        try:
            parts = tuple(float(x) for x in levels.split(","))
        except ValueError:
            raise SynthArgError(f"--levels must be three numbers 'clean,mild,severe', "
                                f"got {levels!r}") from None
        kw["levels"] = parts
    if multi is not None:
        kw["multi"] = multi
    return Mix(**kw)


def _table(title: str, rows: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for k, v in rows.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items()) or "-"
        table.add_row(k, str(v))
    return table


def _guard(fn) -> None:
    from medq.cli._common import fail

    def run():
        try:
            return fn()
        except SynthArgError as exc:
            fail(str(exc))
    guarded(run)


ModalitiesOpt = typer.Option(None, "--modalities", "-m", help="Modalities and optional weights, "
                             "e.g. 'CT,MRI=2' (repeatable). Default: all seven, equal weights.")
DegradationsOpt = typer.Option(None, "--degradations", help="Degradation weight multipliers, "
                               "e.g. 'blur=0,low_dose=3' (0 removes a type).")
LevelsOpt = typer.Option(None, "--levels", help="Worst-level mix 'clean,mild,severe' "
                         "(default 0.3,0.4,0.3).")
MultiOpt = typer.Option(None, "--multi", min=0.0, max=1.0,
                        help="Probability of a second degradation (default 0.25).")


_OUT_WORLD = typer.Option(..., "--out", "-o", help="World folder to write.")
_EVAL = typer.Option(60, "--eval", min=0, help="Eval images (each gives one MCQ per question "
                     "type and one description).")
_POOL = typer.Option(500, "--pool", min=0, help="Pool images.")
_SEED_SET = typer.Option(60, "--seed-set", min=0, help="Labelled seed images.")
_SEED = typer.Option(0, "--seed", help="Seed (same seed and options = identical files).")
_SIZE = typer.Option(128, "--size", min=32, max=1024, help="Image side in px.")
_BIAS = typer.Option(None, "--bias", help="Modalities/degradations under-represented in the seed "
                     "set, e.g. 'endoscopy,motion_blur'.")
_BIAS_FACTOR = typer.Option(0.1, "--bias-factor", min=0.0,
                            help="Weight multiplier of --bias in the seed set (0 = absent).")
_RARE = typer.Option(None, "--rare", help="Modalities/degradations that are rare in the pool.")
_RARE_SHARE = typer.Option(0.05, "--rare-share", min=0.0, max=1.0,
                           help="Share of the pool that is --rare cases.")
_PAIRED = typer.Option(0, "--paired", min=0,
                       help="Paired eval items (writes eval/medqbench_paired_test.tsv).")
_ROWS = typer.Option(1_000_000, "--size", min=1, help="Rows (pool images).")
_OUT_POOL = typer.Option(..., "--out", "-o", help="Manifest file (.parquet).")
_IMAGE_SIZE = typer.Option(128, "--image-size", min=32, max=1024, help="Rendered image side in px.")
_REGISTER = typer.Option(False, "--register",
                         help="Also register the rows as pool items of the workspace.")


@synth_app.command("world")
def world_cmd(out: Path = _OUT_WORLD, eval_size: int = _EVAL, pool: int = _POOL,
              seed_set: int = _SEED_SET, seed: int = _SEED, size: int = _SIZE,
              modalities: list[str] | None = ModalitiesOpt,
              degradations: list[str] | None = DegradationsOpt,
              levels: str | None = LevelsOpt, multi: float | None = MultiOpt,
              bias: list[str] | None = _BIAS, bias_factor: float = _BIAS_FACTOR,
              rare: list[str] | None = _RARE, rare_share: float = _RARE_SHARE,
              paired: int = _PAIRED, json_out: bool = JsonOpt) -> None:
    """Write a synthetic world: eval TSVs (MedQ-Bench format), labelled seed set, pool."""
    def run() -> None:
        from medq.engine.world_plan import WorldSpec
        from medq.storage.world_writer import write_world
        spec = WorldSpec(eval_size=eval_size, pool_size=pool, seed_size=seed_set, seed=seed,
                         image_size=size, mix=_mix(modalities, degradations, levels, multi),
                         seed_bias=_selection(bias, bias_factor, 0.0),
                         pool_rare=_selection(rare, 1.0, rare_share), paired=paired).validate()
        with _bar("rendering world", not json_out) as progress:
            result = write_world(spec, out, progress=progress)
        if json_out:
            emit_json(result.to_dict())
            return
        c = result.counts
        console.print(_table(f"world {out}", {
            "eval images / questions / descriptions":
                f"{c['eval_images']} / {c['eval_questions']} / {c['eval_descriptions']}",
            "paired": c["paired"], "seed images": c["seed"], "pool images": c["pool"],
            "seed verdicts": c["verdicts"]["seed"], "pool verdicts": c["verdicts"]["pool"]}))
    _guard(run)


@synth_app.command("pool")
def pool_cmd(size: int = _ROWS, out: Path = _OUT_POOL, seed: int = _SEED,
             image_size: int = _IMAGE_SIZE, modalities: list[str] | None = ModalitiesOpt,
             degradations: list[str] | None = DegradationsOpt,
             levels: str | None = LevelsOpt, multi: float | None = MultiOpt,
             rare: list[str] | None = _RARE, rare_share: float = _RARE_SHARE,
             register: bool = _REGISTER, workspace: Path | None = WorkspaceOpt,
             json_out: bool = JsonOpt) -> None:
    """Build a pool manifest: rows of parameters from which each image renders on demand."""
    def run() -> None:
        from medq.storage.pool_manifest import build_manifest, register_pool
        mix = _mix(modalities, degradations, levels, multi).validate()
        with _bar("building manifest", not json_out) as progress:
            built = build_manifest(out, size, seed, mix=mix, rare=_selection(rare, 1.0, rare_share),
                                   image_size=image_size, progress=progress)
        data: dict[str, Any] = {"manifest": built.to_dict()}
        if register:
            from medq.storage.workspace import Workspace
            ws = Workspace.init(settings_for(workspace))
            with _bar("registering pool", not json_out) as progress:
                data["registered"] = register_pool(ws, out, progress=progress).to_dict()
        if json_out:
            emit_json(data)
            return
        rows = {"file": built.path, "manifest id": built.manifest_id, "rows": built.rows,
                "size on disk": f"{built.bytes / 1e6:.1f} MB", "seconds": built.seconds,
                "verdicts": built.verdicts}
        if register:
            r = data["registered"]
            rows.update({"new pool items": r["items_new"], "new images": r["images_new"],
                         "new oracle labels": r["oracle_new"],
                         "register seconds": r["seconds"]})
        console.print(_table("pool manifest", rows))
    _guard(run)


def register(app: typer.Typer) -> None:
    app.add_typer(synth_app, name="synth")
