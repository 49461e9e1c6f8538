"""MedQ-Bench TSV and Q-Bench JSON files on disk (the record conversions live in
:mod:`medq.engine.formats.medqbench`).

The TSV dialect is exactly what VLMEvalKit's ``load``/``dump`` use: tab separator, a header row,
no pandas index column, UTF-8, pandas' minimal quoting (cells holding tabs, newlines or quotes are
double-quoted). Reading keeps every cell a string: empty cells are "" (never NaN), "NA"/"null"
stay text, numbers are not reinterpreted (index "007" stays "007").
"""
from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from medq.engine.formats.medqbench import FormatError


def read_tsv(path: Path | str) -> pd.DataFrame:
    """Read a MedQ-Bench/VLMEvalKit TSV; every cell a str ("" when empty)."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"TSV file not found: {path}")
    csv.field_size_limit(2**31 - 1)  # base64 images are long fields (python engine fallback)
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False,
                         encoding="utf-8")
    except pd.errors.EmptyDataError as exc:
        raise FormatError(f"{path}: TSV is empty (no header row)") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"{path}: not a readable tab-separated file: {exc}") from exc
    unnamed = [c for c in df.columns if str(c).startswith("Unnamed:")]
    if unnamed:
        raise FormatError(f"{path}: header has empty column name(s) at {unnamed} (was it "
                          "written with a pandas index column?)")
    return df


def write_tsv(frame: pd.DataFrame, path: Path | str) -> Path:
    """Write `frame` as a VLMEvalKit TSV, atomically (temp file + rename in the same folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            frame.to_csv(fh, sep="\t", index=False, lineterminator="\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_qbench_json(path: Path | str) -> list[dict[str, Any]]:
    """A Q-Bench JSON file: a list of {img_path, question, candidates, correct_ans, type, concern}."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"Q-Bench JSON file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise FormatError(f"{path}: Q-Bench JSON must be a list, got {type(data).__name__}")
    return data


def write_qbench_json(entries: list[dict[str, Any]], path: Path | str) -> Path:
    """Write Q-Bench entries as JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(entries, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
