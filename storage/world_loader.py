"""`load_world(workspace, folder)`: bring a MedQ world folder into a workspace.

Layout (the contract between data, loop and benchmarks)::

    eval/*.tsv                 MedQ-Bench TSVs -> eval items (mcq / description / paired,
                               detected from the columns), images content-addressed
    seed/ + seed_labels.jsonl  labelled starting set -> train items (kind 'image') with verdict,
                               degradations, level, description, modality
    pool/ + pool_labels.jsonl  unlabeled pool -> pool items (kind 'image', NO labels on the
                               item); the labels go to `oracle_labels` only (read by simulated
                               annotators and benchmarks)

``*_labels.jsonl`` may sit in the world root or inside its folder; ``image`` paths in it are
relative to the image folder. Unknown degradation types are loaded and reported. Bad lines, bad
TSV rows and undecodable images go to ``quarantine`` (stage 'world', ref ``<file>:<line>``)
with a reason; the rest loads. Loading twice changes nothing (content ids, keyed upserts, rows
compared before writing). Train/pool item ids are ``<split>:image:<image_id>`` (as for ingest).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from medq.engine.formats.medqbench import FormatError
from medq.engine.formats.world_labels import parse_label_line, unknown_types
from medq.errors import MedQError
from medq.storage.ingest import sniff as sn
from medq.storage.ingest.errors import Rejected, reason_code
from medq.storage.ingest.pipeline import IngestOptions, deid_salt, image_item_id, quarantine_id
from medq.storage.ingest.store import ImageWriter, decode_exact, write_items
from medq.storage.medqbench_catalog import (
    ExportSummary,
    ImportSummary,
    export_medqbench,
    import_medqbench,
)

STAGE = "world"
BATCH = 256

__all__ = [
    "ExportSummary",
    "ImportSummary",
    "WorldError",
    "WorldSummary",
    "export_medqbench",
    "import_medqbench",
    "load_world",
]


class WorldError(MedQError):
    """The folder is not a world (missing, or none of eval/, seed/, pool/)."""


@dataclass
class WorldSummary:
    folder: str
    eval: dict[str, int] = field(default_factory=dict)        # TSV file -> items loaded
    eval_tasks: dict[str, str] = field(default_factory=dict)  # TSV file -> task
    train: int = 0
    pool: int = 0
    oracle_labels: int = 0
    pool_unlabelled: int = 0
    items_new: int = 0
    items_updated: int = 0
    items_unchanged: int = 0
    images_new: int = 0
    duplicates: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)  # reason code -> count
    unknown_degradations: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def load_world(workspace, folder: Path | str, progress=None) -> WorldSummary:
    """Load `folder` (see module docstring). `progress(done, total, what)` is optional."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WorldError(f"world folder {folder} does not exist")
    parts = [p for p in ("eval", "seed", "pool") if (folder / p).is_dir()]
    if not parts:
        raise WorldError(f"{folder} is not a world: it has none of eval/, seed/, pool/")
    summary = WorldSummary(folder=str(folder))
    reasons: Counter = Counter()
    unknown: Counter = Counter()
    quarantine: list[dict] = []

    def reject(ref: str, reason: str) -> None:
        quarantine.append({"quarantine_id": quarantine_id(STAGE, ref), "stage": STAGE,
                           "ref": ref, "reason": reason})
        reasons[reason_code(reason)] += 1

    if (folder / "eval").is_dir():
        for tsv in sorted((folder / "eval").glob("*.tsv")):
            try:
                res = import_medqbench(workspace, tsv, None, "eval", strict=False, source="world",
                                       on_reject=lambda ref, why: reject(_rel(ref, folder), why))
            except FormatError as exc:  # the whole file is unusable (no header, no task)
                reject(_rel(str(tsv), folder), f"bad_tsv: {exc}")
                continue
            name = tsv.name
            summary.eval[name] = res.items_new + res.items_updated + res.items_unchanged
            summary.eval_tasks[name] = res.task
            summary.items_new += res.items_new
            summary.items_updated += res.items_updated
            summary.items_unchanged += res.items_unchanged
            summary.images_new += res.images_new
            unknown.update(res.unknown_degradations)
            if progress:
                progress(0, 0, name)
    opts = IngestOptions.from_settings(workspace.settings, deid_salt(workspace))
    for split, name in (("train", "seed"), ("pool", "pool")):
        if (folder / name).is_dir():
            _load_images(workspace, folder, split, name, opts, summary, reject, unknown, progress)
    summary.quarantined = dict(sorted(reasons.items()))
    summary.unknown_degradations = dict(sorted(unknown.items()))
    if quarantine:
        workspace.catalog.upsert("quarantine", quarantine)
    return summary


def _rel(path: str, folder: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(folder.resolve()))
    except ValueError:
        return path


def _labels_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}_labels.jsonl", folder / name / f"{name}_labels.jsonl"):
        if candidate.is_file():
            return candidate
    return None


def _read_labels(path: Path | None, folder: Path, reject) -> dict[str, tuple[str, dict]]:
    """image path -> (ref, parsed label); bad lines rejected."""
    out: dict[str, tuple[str, dict]] = {}
    if path is None:
        return out
    with path.open(encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            ref = f"{_rel(str(path), folder)}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                reject(ref, f"bad_json: line {n} is not JSON ({exc.msg} at column {exc.colno})")
                continue
            try:
                label = parse_label_line(obj, where=f"line {n}")
            except FormatError as exc:
                reject(ref, f"bad_label: {exc}")
                continue
            key = _norm(label["image"])
            if key in out:
                reject(ref, f"duplicate_label: image {label['image']!r} already labelled on "
                       f"{out[key][0]}")
                continue
            out[key] = (ref, label)
    return out


def _norm(rel: str) -> str:
    return PurePosixPath(rel.replace("\\", "/")).as_posix()


def _image_files(root: Path) -> list[str]:
    files = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith(".") and sn.kind_from_name(p.name):
            files.append(p.relative_to(root).as_posix())
    return files


def _load_images(workspace, folder: Path, split: str, name: str, opts, summary: WorldSummary,
                 reject, unknown: Counter, progress) -> None:
    root = folder / name
    labels = _read_labels(_labels_file(folder, name), folder, reject)
    on_disk = set(_image_files(root))
    todo: list[tuple[str, str, dict | None]] = []  # (rel path, ref, label)
    for rel, (ref, parsed) in labels.items():
        if rel not in on_disk:
            reject(ref, f"missing_image: {name}/{rel} does not exist")
            continue
        todo.append((rel, ref, parsed))
    for rel in sorted(on_disk - set(labels)):
        if split == "train":
            reject(f"{name}/{rel}", "unlabelled_seed_image: no line in the seed labels")
        else:
            todo.append((rel, f"{name}/{rel}", None))
    todo.sort()
    seen_items: set[str] = set()
    for start in range(0, len(todo), BATCH):
        writer = ImageWriter(workspace, opts.thumb_size)
        items, oracle = [], []
        for rel, ref, label in todo[start:start + BATCH]:
            path = root / rel
            try:
                pixels = decode_exact(path.read_bytes(), path.name, opts)
            except Rejected as exc:
                reject(ref if label else f"{name}/{rel}", exc.reason)
                continue
            except OSError as exc:
                reject(ref, f"read_error: {exc}")
                continue
            modality = label["modality"] if label else None
            image_id = writer.add(pixels, source_uri=f"world:{name}/{rel}",
                                  source_format=path.suffix.lstrip(".").lower() or "png",
                                  modality=modality, metadata={"world": str(folder.name),
                                                               "path": f"{name}/{rel}"})
            item_id = image_item_id(split, image_id)
            if item_id in seen_items:
                summary.duplicates += 1
                reject(ref, f"duplicate_image: {name}/{rel} has the same pixels as another "
                       f"{name} image")
                continue
            seen_items.add(item_id)
            item = {"item_id": item_id, "split": split, "kind": "image", "image_id": image_id,
                    "modality": modality, "source": "world"}
            if label:
                for t in unknown_types(label["degradations"]):
                    unknown[t] += 1
            if split == "train":
                assert label is not None  # unlabelled seed images were rejected above
                item.update(verdict=label["verdict"], degradations=label["degradations"],
                            level=label["level"], description=label["description"])
                summary.train += 1
            else:
                summary.pool += 1
                if label:
                    oracle.append({"image_id": image_id, "modality": modality,
                                   "verdict": label["verdict"],
                                   "degradations": label["degradations"],
                                   "description": label["description"]})
                    summary.oracle_labels += 1
                else:
                    summary.pool_unlabelled += 1
            items.append(item)
        _write(workspace, writer, items, oracle, summary)
        if progress:
            progress(min(start + BATCH, len(todo)), len(todo), name)


def _write(workspace, writer: ImageWriter, items: list[dict], oracle: list[dict],
           summary: WorldSummary) -> None:
    write_items(workspace, writer, items, summary, {"oracle_labels": oracle})
