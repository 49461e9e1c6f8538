"""MedQ-Bench TSVs <-> catalog items: `import_medqbench`, `export_medqbench`.

Import turns each TSV row into one eval item (kind mcq / description / paired) whose images are
stored content-addressed (images rows + PNG objects); the TSV ``index`` is kept in
``items.source_index`` and everything the items table has no column for (extra columns, the
original answer spelling, raw level/degradation cells, column order, row number, dataset name)
in ``items.extra``, so that export reproduces the file: same file name, columns, values, and
pixel-identical images (written as base64 PNG). Item ids are ``<split>:<task>:<dataset>:<index>``
with dataset = the TSV file name without extension.

Strict import (the default, used by `medq import medqbench`) checks every row first and writes
nothing when any row is bad (:class:`FormatError` naming row and column); lenient import (used
by world loading) quarantines bad rows and loads the rest.
"""
from __future__ import annotations

import base64
import hashlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from medq.engine.formats import medqbench as fmt
from medq.engine.formats.medqbench import FormatError
from medq.engine.formats.world_labels import (
    parse_degradations,
    parse_level,
    unknown_types,
    verdict_from_text,
    worst_level,
)
from medq.engine.taxonomy import QUESTION_TYPES
from medq.storage.catalog import loads
from medq.storage.ingest.errors import Rejected
from medq.storage.ingest.store import ImageWriter, decode_exact, write_items
from medq.storage.medqbench_io import (
    read_qbench_json,
    read_tsv,
    write_qbench_json,
    write_tsv,
)

TASKS = ("mcq", "description", "paired")
DEFAULT_FILES = {"mcq": "medqbench_QA_{split}", "description": "medqbench_description_{split}",
                 "paired": "medqbench_paired_description_{split}"}
_TO_RECORDS: dict[str, Callable] = {"mcq": fmt.frame_to_mcq_records,
                                    "description": fmt.frame_to_description_records,
                                    "paired": fmt.frame_to_paired_records}
_CORE = {"mcq": {"index", "image", "image_path", "question", "A", "B", "C", "D", "answer",
                 "modality"},
         "description": {"index", "image", "image_path", "question", "description", "modality"},
         "paired": {"index", "image_a", "image_b", "description", "answer", "modality"}}


@dataclass
class ImportSummary:
    """Result of importing one TSV. `rejected`: bad rows {row, index, reason} (lenient mode)."""

    file: str
    task: str
    split: str
    dataset: str
    rows: int = 0
    items_new: int = 0
    items_updated: int = 0
    items_unchanged: int = 0
    images_new: int = 0
    rejected: list[dict] = field(default_factory=list)
    unknown_degradations: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ExportSummary:
    split: str
    out_dir: str
    files: dict[str, int] = field(default_factory=dict)  # file name -> rows

    def to_dict(self) -> dict:
        return asdict(self)


def detect_task(df: pd.DataFrame, name: str = "") -> str:
    """mcq / description / paired from the columns (file name as a tie-breaker)."""
    cols = set(df.columns)
    if {"image_a", "image_b"} <= cols:
        return "paired"
    if {"A", "B", "answer"} <= cols:
        return "mcq"
    if "description" in cols:
        return "description"
    lowered = name.lower()
    for task, token in (("paired", "paired"), ("mcq", "qa"), ("description", "description")):
        if token in lowered:
            return task
    raise FormatError(f"{name or 'table'}: cannot tell the task from its columns "
                      f"{list(df.columns)} (expected A-D + answer, description, or image_a/image_b)")


def item_id_for(split: str, task: str, dataset: str, index: str) -> str:
    return f"{split}:{task}:{dataset}:{index}"


def import_medqbench(workspace, tsv: Path | str, task: str | None = None, split: str = "eval",
                     *, strict: bool = True, source: str = "medqbench",
                     on_reject: Callable[[str, str], None] | None = None) -> ImportSummary:
    """Import one MedQ-Bench TSV into `split`. `task` None: detected from the columns.

    Strict: any bad row raises :class:`FormatError` and nothing is written. Lenient: bad rows
    are skipped, listed in the summary and passed to `on_reject(ref, reason)`."""
    tsv = Path(tsv)
    df = read_tsv(tsv)
    detected = detect_task(df, tsv.name)
    if task is None:
        task = detected
    if task not in TASKS:
        raise FormatError(f"--task must be one of {TASKS}, got {task!r}")
    if task != detected:
        raise FormatError(f"{tsv}: columns {list(df.columns)} are those of a {detected!r} TSV, "
                          f"not {task!r}")
    dataset = tsv.name[:-4] if tsv.name.lower().endswith(".tsv") else tsv.stem
    return import_frame(workspace, df, tsv, task=task, split=split, dataset=dataset,
                        base=tsv.parent, strict=strict, source=source, on_reject=on_reject)


def import_frame(workspace, df: pd.DataFrame, tsv: Path, *, task: str, split: str, dataset: str,
                 base: Path, strict: bool = True, source: str = "medqbench",
                 on_reject: Callable[[str, str], None] | None = None) -> ImportSummary:
    """Import a MedQ-Bench-shaped frame read from `tsv` (see :func:`import_medqbench`);
    ``image_path`` cells are relative to `base`."""
    summary = ImportSummary(file=str(tsv), task=task, split=split, dataset=dataset, rows=len(df))
    errors: list[dict] | None = None if strict else []
    try:
        records = _TO_RECORDS[task](df, errors)
    except FormatError as exc:
        raise FormatError(f"{tsv}: {exc}") from exc
    from medq.storage.ingest.pipeline import IngestOptions, deid_salt
    opts = IngestOptions.from_settings(workspace.settings, deid_salt(workspace))
    writer = ImageWriter(workspace, opts.thumb_size)
    unknown: Counter = Counter()
    items = []
    for rec in records:
        try:
            items.append(_item(rec, task=task, split=split, dataset=dataset, source=source,
                               columns=list(df.columns), base=base, writer=writer,
                               opts=opts, unknown=unknown, tsv=tsv))
        except (FormatError, Rejected) as exc:
            reason = str(exc) if isinstance(exc, FormatError) else f"{exc.reason}"
            where = f"row {rec['row']} (index {rec['index']!r})"
            if errors is None:  # strict
                raise FormatError(f"{tsv}: {where}: {reason}") from exc
            errors.append({"row": rec["row"], "index": rec["index"], "reason": reason})
    if errors:
        summary.rejected = sorted(errors, key=lambda e: e["row"])
        if on_reject:
            for e in summary.rejected:
                reason = e["reason"]
                if not re.match(r"^[a-z_]+: ", reason):
                    reason = f"bad_row: {reason}"
                on_reject(f"{tsv}:row {e['row']}", reason)
    summary.unknown_degradations = dict(sorted(unknown.items()))
    _write_items(workspace, writer, items, summary)
    return summary


def _write_items(workspace, writer: ImageWriter, items: list[dict], summary) -> None:
    write_items(workspace, writer, items, summary)


def _image_pixels(value: str, *, base: Path, opts, path_mode: bool):
    if not path_mode:
        return fmt.decode_image_b64(value)
    path = Path(value)
    if not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise FormatError(f"column 'image_path': file {str(path)!r} not found")
    return decode_exact(path.read_bytes(), path.name, opts)


def _item(rec: dict, *, task: str, split: str, dataset: str, source: str, columns: list[str],
          base: Path, writer: ImageWriter, opts, unknown: Counter, tsv: Path) -> dict:
    index = rec["index"]
    modality = rec.get("modality")
    extra: dict[str, Any] = {"dataset": dataset, "row": rec["row"], "columns": columns}
    cells = dict(rec.get("extra") or {})
    item: dict[str, Any] = {"item_id": item_id_for(split, task, dataset, index), "split": split,
                            "kind": task, "source": source, "source_index": index,
                            "modality": modality}

    def store(value: str, path_mode: bool) -> str:
        pixels = _image_pixels(value, base=base, opts=opts, path_mode=path_mode)
        return writer.add(pixels, source_uri=f"{tsv.name}#index={index}", source_format="tsv",
                          modality=modality, metadata={"dataset": dataset, "index": index})

    if task == "paired":
        item["image_id"] = store(rec["image_a"], False)
        item["image_b_id"] = store(rec["image_b"], False)
        item["description"] = rec["description"]
        item["answer"] = rec.get("answer")
    else:
        path_mode = "image_path" in rec
        item["image_id"] = store(rec["image_path"] if path_mode else rec["image"], path_mode)
        if path_mode:
            extra["image_path"] = rec["image_path"]
        item["question"] = rec.get("question")
        if task == "mcq":
            item["options"] = rec["options"]
            item["answer"] = rec["answer"]
            for name in ("question_type", "level", "degradation"):
                if name in rec:
                    cells[name] = rec[name]
            if rec.get("question_type"):
                qt = fmt.normalize_question_type(rec["question_type"])
                item["question_type"] = qt if qt in QUESTION_TYPES else rec["question_type"]
            level = parse_level(rec.get("level"), where=f"row {rec['row']}: column 'level'")
            degradations = parse_degradations(rec.get("degradation"), level=level,
                                              where=f"row {rec['row']}: column 'degradation'")
            if rec.get("degradation") is not None:
                item["degradations"] = degradations
                for t in unknown_types(degradations):
                    unknown[t] += 1
            item["level"] = level if level is not None else (
                worst_level(degradations) if rec.get("degradation") is not None else None)
        else:
            item["description"] = rec["description"]
            item["verdict"] = verdict_from_text(rec["description"])
    if rec.get("answer_raw") is not None:
        extra["answer_raw"] = rec["answer_raw"]
    if rec.get("image_refs"):
        extra["image_refs"] = rec["image_refs"]
    if cells:
        extra["cells"] = cells
    item["extra"] = extra
    return item


# -- export ---------------------------------------------------------------------------------

def export_medqbench(workspace, split: str, out_dir: Path | str) -> ExportSummary:
    """Write the mcq / description / paired items of `split` as MedQ-Bench TSVs in `out_dir`.

    Imported items go back to their own file name, columns and order; other items to
    ``medqbench_{QA,description,paired_description}_<split>.tsv``. Images are base64 PNG of the
    stored pixels (``image_path`` datasets get PNG files next to the TSV instead)."""
    out_dir = Path(out_dir)
    rows = workspace.catalog.query(
        "SELECT * FROM items WHERE split = ? AND kind IN ('mcq', 'description', 'paired') "
        "ORDER BY item_id", [split])
    summary = ExportSummary(split=split, out_dir=str(out_dir))
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        extra = loads(r.get("extra"), {}) or {}
        r["_extra"] = extra
        name = extra.get("dataset") or DEFAULT_FILES[r["kind"]].format(split=split)
        groups.setdefault((r["kind"], name), []).append(r)
    if not groups:
        from medq.errors import MedQError
        raise MedQError(f"no mcq/description/paired items in split {split!r} of "
                        f"{workspace.catalog.path} to export")
    for (kind, name), items in sorted(groups.items()):
        items.sort(key=lambda r: (r["_extra"].get("row", 1 << 62), _natural(r["source_index"]),
                                  r["item_id"]))
        frame = _export_frame(workspace, kind, items, out_dir)
        write_tsv(frame, out_dir / f"{name}.tsv")
        summary.files[f"{name}.tsv"] = len(frame)
    return summary


def _natural(index: str | None) -> tuple:
    text = index or ""
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def _export_frame(workspace, kind: str, items: list[dict], out_dir: Path) -> pd.DataFrame:
    objects = workspace.objects
    keys = {r["image_id"]: r["object_key"] for r in workspace.catalog.query(
        "SELECT image_id, object_key FROM images WHERE image_id IN (SELECT unnest(?::VARCHAR[]))",
        [sorted({i["image_id"] for i in items} | {i["image_b_id"] for i in items
                                                   if i.get("image_b_id")})])}

    def b64(image_id: str) -> str:
        key = keys.get(image_id)
        if key is None:
            from medq.storage.images import load_images
            return fmt.encode_image(load_images(workspace, [image_id])[0])
        return base64.b64encode(objects.get_bytes(key)).decode("ascii")

    records: list[dict[str, Any]] = []
    answers_raw: list[Any] = []
    seen_index: Counter[str] = Counter()
    for _n, it in enumerate(items):
        extra = it["_extra"]
        cells = dict(extra.get("cells") or {})
        index = it["source_index"] or it["item_id"]
        seen_index[index] += 1
        if seen_index[index] > 1:  # items from different sources sharing an index
            index = f"{index}#{hashlib.sha256(it['item_id'].encode()).hexdigest()[:8]}"
        rec: dict[str, Any] = {"index": index}
        if it.get("modality"):
            rec["modality"] = it["modality"]
        if kind == "paired":
            rec["image_a"] = b64(it["image_id"])
            rec["image_b"] = b64(it["image_b_id"])
            rec["description"] = it["description"]
            rec["answer"] = it.get("answer")
        else:
            if extra.get("image_path"):
                rec["image_path"] = _export_image_file(workspace, objects, keys, it["image_id"],
                                                       extra["image_path"], out_dir)
            else:
                rec["image"] = b64(it["image_id"])
            rec["question"] = it.get("question")
            if kind == "mcq":
                rec["options"] = loads(it.get("options"), {})
                rec["answer"] = it["answer"]
                if "question_type" not in cells and it.get("question_type"):
                    cells["question_type"] = it["question_type"]
                if "level" not in cells and it.get("level") is not None and "columns" not in extra:
                    cells["level"] = str(it["level"])
                for name in ("question_type", "level", "degradation"):
                    if name in cells:
                        rec[name] = cells.pop(name)
            else:
                rec["description"] = it["description"]
        if cells:
            rec["extra"] = cells
        records.append(rec)
        answers_raw.append(extra.get("answer_raw"))
    to_frame = {"mcq": fmt.mcq_records_to_frame, "description": fmt.description_records_to_frame,
                "paired": fmt.paired_records_to_frame}[kind]
    frame = to_frame(records)
    if "answer" in frame.columns:
        for i, raw in enumerate(answers_raw):
            if raw is not None:
                frame.at[i, "answer"] = raw
    _restore_image_refs(frame, [it["_extra"].get("image_refs") for it in items])
    columns = items[0]["_extra"].get("columns")
    if columns:
        for c in columns:
            if c not in frame.columns:
                frame[c] = ""
        frame = frame[list(columns) + [c for c in frame.columns if c not in columns]]
    return frame


def _restore_image_refs(frame: pd.DataFrame, refs: list[dict | None]) -> None:
    """Write back VLMEvalKit image references (a cell holding another row's index) where the
    imported file had them and the referenced row is exported with the same image."""
    position = {idx: i for i, idx in enumerate(frame["index"])}
    for i, row_refs in enumerate(refs):
        for column, target in (row_refs or {}).items():
            j = position.get(target)
            if column in frame.columns and j is not None and j != i and \
                    frame.at[j, column] == frame.at[i, column]:
                frame.at[i, column] = target


def _export_image_file(workspace, objects, keys, image_id: str, original: str, out_dir: Path
                       ) -> str:
    """Write the image as PNG under `out_dir` at its original relative path (a .png suffix is
    forced so the pixels stay exact; unsafe paths go to images/<id>.png). Returns the cell."""
    rel = PurePosixPath(original.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        rel = PurePosixPath("images") / f"{image_id}.png"
    elif rel.suffix.lower() != ".png":
        rel = rel.with_suffix(".png")
    target = out_dir / Path(*rel.parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    key = keys.get(image_id)
    if key is None:
        from medq.engine.formats.images import png_bytes
        from medq.storage.images import load_images
        data = png_bytes(load_images(workspace, [image_id])[0])
    else:
        data = objects.get_bytes(key)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
    return rel.as_posix()


# -- Q-Bench JSON -----------------------------------------------------------------------------

def import_qbench(workspace, json_path: Path | str, split: str = "eval", *,
                  image_root: Path | str | None = None, strict: bool = True) -> ImportSummary:
    """Import a Q-Bench JSON file (list of {img_path, question, candidates, correct_ans, type,
    concern}) as MCQ items; ``img_path`` is relative to `image_root` (default: the JSON's
    folder). ``type`` 0/1/2 becomes Yes-or-No/What/How, ``concern`` is kept for export."""
    json_path = Path(json_path)
    try:
        records = fmt.qbench_to_mcq_records(read_qbench_json(json_path))
    except FormatError as exc:
        raise FormatError(f"{json_path}: {exc}") from exc
    frame = fmt.mcq_records_to_frame(records)
    base = Path(image_root) if image_root is not None else json_path.parent
    return import_frame(workspace, frame, json_path, task="mcq", split=split,
                        dataset=json_path.stem, base=base, strict=strict, source="qbench")


def export_qbench(workspace, split: str, out_path: Path | str, *, image_dir: str = "images"
                  ) -> int:
    """Write the MCQ items of `split` as Q-Bench JSON at `out_path`, their images as PNG files
    under ``<out_path folder>/<image_dir>`` (original relative paths kept where known).
    Returns the number of entries."""
    out_path = Path(out_path)
    items = workspace.catalog.query(
        "SELECT * FROM items WHERE split = ? AND kind = 'mcq' ORDER BY item_id", [split])
    if not items:
        from medq.errors import MedQError
        raise MedQError(f"no mcq items in split {split!r} of {workspace.catalog.path} to export")
    keys = {r["image_id"]: r["object_key"] for r in workspace.catalog.query(
        "SELECT image_id, object_key FROM images WHERE image_id IN (SELECT unnest(?::VARCHAR[]))",
        [sorted({i["image_id"] for i in items})])}
    records = []
    for it in sorted(items, key=lambda r: (loads(r.get("extra"), {}).get("row", 1 << 62),
                                           _natural(r["source_index"]))):
        extra = loads(it.get("extra"), {}) or {}
        original = extra.get("image_path") or f"{image_dir}/{it['image_id']}.png"
        rel = _export_image_file(workspace, workspace.objects, keys, it["image_id"], original,
                                 out_path.parent)
        records.append({"index": it["source_index"], "image_path": rel,
                        "question": it["question"], "options": loads(it["options"], {}),
                        "answer": it["answer"], "question_type": it.get("question_type"),
                        "extra": {k: v for k, v in (extra.get("cells") or {}).items()
                                  if k == "concern"}})
    write_qbench_json(fmt.mcq_records_to_qbench(records), out_path)
    return len(records)
