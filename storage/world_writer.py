"""`write_world(spec, out_dir)`: render a planned synthetic world into its folder layout.

Layout (the contract read by ``medq load world``, :mod:`medq.storage.world_loader`)::

    world.json                         spec, counts, base-image provenance, format version
    provenance.jsonl                   per image: base reference + provenance, view, degradation
                                       parameters and seed
    eval/medqbench_QA_test.tsv         MedQ-Bench MCQs (one per question type per eval image)
    eval/medqbench_description_test.tsv
    eval/medqbench_paired_test.tsv     only when spec.paired > 0
    seed/seed_XXXXXX.png + seed/seed_labels.jsonl
    pool/pool_XXXXXX.png + pool/pool_labels.jsonl

A labels line: ``image`` (file name relative to its folder), ``modality``, ``verdict``,
``degradations`` ([{type, level}]), ``description``. Every file is written atomically (temp file
and rename) and nothing depends on time or machine, so the same spec gives byte-identical files.
Stale images of an earlier, larger world in the same folder are removed; a non-empty folder
that is not a world is refused.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medq.engine import taxonomy
from medq.engine.formats.images import png_bytes
from medq.engine.questions import compare_description, describe, make_questions
from medq.engine.world_plan import (
    ItemSpec,
    WorldPlan,
    WorldSpec,
    base_size,
    canonical_json,
    plan_world,
    render_item,
)
from medq.errors import MedQError
from medq.storage import base_images as sources

FORMAT = "medq-world/1"
QA_TSV = "eval/medqbench_QA_test.tsv"
DESCRIPTION_TSV = "eval/medqbench_description_test.tsv"
PAIRED_TSV = "eval/medqbench_paired_test.tsv"
DESCRIPTION_QUESTION = ("Describe the quality of this medical image: which degradations are "
                        "present, how severe they are, and whether it is fit for diagnosis.")
_OUR_FILES = re.compile(r"^(seed|pool)_\d{6}\.png$")

Progress = Callable[[int, int, str], None]


class WorldWriteError(MedQError):
    """The world cannot be written to the folder (not a world, not writable)."""


@dataclass
class WorldWritten:
    folder: str
    counts: dict = field(default_factory=dict)
    files: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"folder": self.folder, "counts": self.counts, "files": self.files}


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write `data` to `path` through a temp file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; world files are meant to be shared/served
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_tsv(frame, path: Path) -> Path:
    """MedQ-Bench TSV writer (VLMEvalKit dialect); one place to swap the implementation."""
    from medq.storage.medqbench_io import write_tsv as _write
    return _write(frame, path)


def _refs_by_modality(spec: WorldSpec) -> dict[str, list[str]]:
    return refs_for(spec.mix.modalities, spec.image_size)


def refs_for(modalities, image_size: int) -> dict[str, list[str]]:
    """Base references per modality for images of `image_size` px (bases whose native
    resolution is below it are left out; see :func:`sources.base_refs`)."""
    return {m: [b.ref for b in sources.base_refs(m, min_native=image_size)]
            for m, w in dict(modalities).items() if w > 0}


def _check_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise WorldWriteError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "world.json").is_file():
        raise WorldWriteError(f"{out}: folder is not empty and holds no world.json; refusing to "
                              "write a world into it (choose a new or empty folder)")


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows)


def plan(spec: WorldSpec) -> WorldPlan:
    """The world's plan with the installed base images (no pixels yet)."""
    return plan_world(spec, _refs_by_modality(spec))


def write_world(spec: WorldSpec, out_dir: Path | str, progress: Progress | None = None
                ) -> WorldWritten:
    """Render `spec` into `out_dir` (layout in the module docstring). Returns the counts and
    the files written (relative paths). `progress(done, total, stage)` is called as images are
    rendered."""
    spec = spec.validate()
    out = Path(out_dir)
    _check_folder(out)
    world_plan = plan(spec)
    size = spec.image_size
    bases = sources.base_lookup([i.base_ref for i in world_plan.all_items()], base_size(size))
    total = len(world_plan.all_items())
    done = 0
    written: list[str] = []
    provenance: list[dict] = []

    def render(item: ItemSpec) -> np.ndarray:
        nonlocal done
        img, prov = render_item(item, bases[item.base_ref], size)
        provenance.append({"name": item.name, "split": item.split, "modality": item.modality,
                           "verdict": item.verdict, **prov})
        done += 1
        if progress:
            progress(done, total, item.split)
        return img

    # Labelled image folders.
    for split, items in (("seed", world_plan.seed), ("pool", world_plan.pool)):
        labels = []
        keep = set()
        for item in items:
            img = render(item)
            fname = f"{item.name}.png"
            write_atomic(out / split / fname, png_bytes(img))
            keep.add(fname)
            labels.append({"image": fname, "modality": item.modality, "verdict": item.verdict,
                           "degradations": item.degradations,
                           "description": describe(item.modality, item.degradations,
                                                   item.verdict, seed=item.seed)})
        write_atomic(out / split / f"{split}_labels.jsonl", _jsonl(labels))
        written += [f"{split}/{n}" for n in sorted(keep)] + [f"{split}/{split}_labels.jsonl"]
        _remove_stale(out / split, keep)

    # Evaluation TSVs.
    from medq.engine.formats.medqbench import (
        description_records_to_frame,
        mcq_records_to_frame,
        paired_records_to_frame,
    )
    qa, desc = [], []
    n_types = len(spec.question_types)
    for k, item in enumerate(world_plan.eval):
        img = render(item)
        first = k * n_types
        records = make_questions(item.modality, item.degradations, item.seed, image=img,
                                 index_start=first, types=spec.question_types)
        for j, rec in enumerate(records):
            if j:  # VLMEvalKit: a short image cell is the index of the row holding the image
                rec["image"] = str(first)
            qa.append(rec)
        desc.append({"index": k, "image": img, "question": DESCRIPTION_QUESTION,
                     "description": describe(item.modality, item.degradations, item.verdict,
                                             seed=item.seed),
                     "modality": item.modality})
    if qa:
        write_tsv(mcq_records_to_frame(qa), out / QA_TSV)
        written.append(QA_TSV)
    if desc:
        write_tsv(description_records_to_frame(desc), out / DESCRIPTION_TSV)
        written.append(DESCRIPTION_TSV)
    if world_plan.paired:
        rows = []
        for k, (a, b) in enumerate(world_plan.paired):
            text, answer = compare_description(a.modality, a.degradations, b.degradations,
                                               seed=a.seed)
            rows.append({"index": k, "image_a": render(a), "image_b": render(b),
                         "description": text, "answer": answer, "modality": a.modality})
        write_tsv(paired_records_to_frame(rows), out / PAIRED_TSV)
        written.append(PAIRED_TSV)
    elif (out / PAIRED_TSV).exists():
        (out / PAIRED_TSV).unlink()

    counts = {"eval_images": len(world_plan.eval), "eval_questions": len(qa),
              "eval_descriptions": len(desc), "paired": len(world_plan.paired),
              "seed": len(world_plan.seed), "pool": len(world_plan.pool),
              "verdicts": {s: _verdicts(items) for s, items in
                           (("eval", world_plan.eval), ("seed", world_plan.seed),
                            ("pool", world_plan.pool))}}
    used = sorted({i.base_ref for i in world_plan.all_items()})
    write_atomic(out / "provenance.jsonl", _jsonl(provenance))
    meta: dict[str, Any] = {
        "format": FORMAT, "spec": spec.to_dict(), "counts": counts,
        "base_size": base_size(size),
        "bases": {ref: sources.load_base(ref, base_size(size))[1] for ref in used},
        "taxonomy": {"verdicts": list(taxonomy.VERDICTS), "levels": taxonomy.LEVELS},
        "files": sorted(written + ["provenance.jsonl"])}
    write_atomic(out / "world.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return WorldWritten(str(out), counts, meta["files"] + ["world.json"])


def _verdicts(items: list[ItemSpec]) -> dict[str, int]:
    out = {v: 0 for v in taxonomy.VERDICTS}
    for i in items:
        out[i.verdict] += 1
    return out


def _remove_stale(folder: Path, keep: set[str]) -> None:
    """Delete our own image files that the current plan no longer has."""
    for p in folder.iterdir():
        if _OUR_FILES.match(p.name) and p.name not in keep:
            p.unlink()


def read_world_spec(folder: Path | str) -> WorldSpec:
    """The spec a world folder was generated from (its world.json)."""
    path = Path(folder) / "world.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise WorldWriteError(f"{path}: not found (not a generated world)") from None
    except json.JSONDecodeError as exc:
        raise WorldWriteError(f"{path}: not valid JSON: {exc}") from exc
    return WorldSpec.from_dict(meta["spec"])


__all__ = [
    "DESCRIPTION_TSV",
    "PAIRED_TSV",
    "QA_TSV",
    "WorldWriteError",
    "WorldWritten",
    "canonical_json",
    "plan",
    "read_world_spec",
    "write_atomic",
    "write_world",
]
