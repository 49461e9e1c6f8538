"""MedQ-Bench (VLMEvalKit TSV) and Q-Bench (JSON) formats as pure record <-> frame conversions.

No file I/O here: `medq.storage.medqbench_io` reads and writes the files.

Records (plain dicts) used across MedQ:

- MCQ: ``index``, ``image`` (np.ndarray float [0, 1] or base64 str) or ``image_path``,
  ``question``, ``options`` ({letter: text}, letters A-D, empty options absent), ``answer``
  (letter), optional ``modality``, ``question_type`` (Yes-or-No | What | How), ``level``,
  ``degradation``, ``extra`` ({column: str} for any other TSV column, kept for round trips).
- Description: ``index``, ``image`` | ``image_path``, optional ``question``, ``description``,
  ``modality``, ``extra``.
- Paired: ``index``, ``image_a``, ``image_b`` (each array or base64), ``description``, optional
  ``answer`` (A = first image better, B = second), ``modality``, ``extra``.

TSV frames follow VLMEvalKit: columns ``index``, ``image`` (base64) or ``image_path``,
``question``, ``A``..``D``, ``answer``, then optional columns. VLMEvalKit reads an ``image`` cell of
at most 64 characters as a reference to another row's ``index`` (shared image); that is resolved
on reading (the reference is kept in ``image_refs`` {column: index}). Answers may be letters or 0-3 (mapped to A-D). Empty options are skipped.
"""
from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from medq.engine.formats.images import PixelError, decode_image_bytes, png_bytes, to_float
from medq.engine.models.base import MCQ_SUFFIX
from medq.engine.taxonomy import OPTION_LETTERS, QUESTION_TYPES
from medq.errors import MedQError

MCQ_PROMPT_END = MCQ_SUFFIX  # "Answer directly only with the option letter from the given choices."
MCQ_COLUMNS = ("index", "image", "question", "A", "B", "C", "D", "answer")
MCQ_OPTIONAL = ("modality", "question_type", "level", "degradation")
DESCRIPTION_COLUMNS = ("index", "image", "question", "description")
DESCRIPTION_OPTIONAL = ("modality",)
PAIRED_COLUMNS = ("index", "image_a", "image_b", "description", "answer")
PAIRED_OPTIONAL = ("modality",)
# VLMEvalKit: an image cell this short is the index of the row holding the real image.
IMAGE_REF_MAX_LEN = 64
QBENCH_TYPES = {0: "Yes-or-No", 1: "What", 2: "How"}


class FormatError(MedQError):
    """A record or table does not follow the format; the message names the row and column."""


# -- images ---------------------------------------------------------------------------------

def encode_image(img: np.ndarray) -> str:
    """Base64 PNG of `img` (float [0, 1] -> 8-bit; uint8/uint16 kept; grayscale stays mode L,
    (H, W, 3) is RGB)."""
    try:
        return base64.b64encode(png_bytes(img)).decode("ascii")
    except PixelError as exc:
        raise FormatError(f"cannot encode image: {exc}") from exc


def decode_image_b64(b64: str) -> np.ndarray:
    """Base64 (PNG, JPEG, ...; an optional ``data:image/...;base64,`` prefix is allowed) ->
    stored integer pixels (uint8 or uint16), (H, W) or (H, W, 3)."""
    if not isinstance(b64, str) or not b64.strip():
        raise FormatError("image cell is empty")
    text = b64.strip()
    if text.startswith("data:"):
        text = text.split(",", 1)[-1]
    try:
        data = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"image is not valid base64: {exc}") from exc
    try:
        return decode_image_bytes(data)
    except PixelError as exc:
        raise FormatError(f"image base64 does not hold a decodable image: {exc}") from exc


def decode_image(b64: str) -> np.ndarray:
    """Base64 image -> float32 in [0, 1], (H, W) for grayscale or (H, W, 3)."""
    return to_float(decode_image_b64(b64))


def _image_cell(value: Any, where: str) -> str:
    if isinstance(value, np.ndarray):
        return encode_image(value)
    if isinstance(value, str) and value.strip():
        return value
    raise FormatError(f"{where}: image must be an array or a base64 string, got "
                      f"{type(value).__name__}")


# -- prompts --------------------------------------------------------------------------------

def mcq_prompt(question: str, options: dict[str, str]) -> str:
    """The MedQ-Bench MCQ prompt: question, non-empty options as ``A. text`` lines, and the
    closing instruction (:data:`MCQ_PROMPT_END`)."""
    lines = [f"{k}. {str(v).strip()}" for k, v in sorted(options.items())
             if not _missing(v)]
    return (f"Please carefully observe this medical image and answer the following question:\n\n"
            f"{str(question).strip()}\n\nOptions:\n" + "\n".join(lines) + f"\n\n{MCQ_PROMPT_END}")


def description_prompt(question: str | None = None) -> str:
    """Prompt for a quality description; ends by asking for the verdict sentence."""
    q = (question or "").strip() or (
        "Please describe the quality of this medical image: which degradations are present, "
        "how severe they are, and how they affect diagnostic use.")
    return (f"{q}\nConclude with: \"Overall, the quality of this image is "
            "[good/usable/reject].\"")


# -- helpers --------------------------------------------------------------------------------

def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def _cell(value: Any) -> str:
    """A value as the string that goes into a TSV cell ("" for missing)."""
    if _missing(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _where(row_no: int, index: Any) -> str:
    return f"row {row_no} (index {index!r})" if not _missing(index) else f"row {row_no}"


def answer_letter(value: Any, *, where: str = "answer", n_options: int = 4) -> str:
    """A-D letter from a letter (any case, optional trailing '.'/')') or a 0-3 number."""
    if _missing(value):
        raise FormatError(f"{where}: column 'answer' is empty")
    text = str(value).strip().rstrip(".)").strip()
    if text.upper() in OPTION_LETTERS[:n_options]:
        return text.upper()
    try:
        num = float(text)
    except ValueError:
        num = None
    if num is not None and num.is_integer() and 0 <= int(num) < n_options:
        return OPTION_LETTERS[int(num)]
    raise FormatError(f"{where}: column 'answer' must be a letter "
                      f"{'/'.join(OPTION_LETTERS[:n_options])} or a number 0-{n_options - 1}, "
                      f"got {value!r}")


def _paired_answer(value: Any, where: str) -> str | None:
    if _missing(value):
        return None
    text = str(value).strip().lower()
    mapping = {"a": "A", "0": "A", "image_a": "A", "first": "A",
               "b": "B", "1": "B", "image_b": "B", "second": "B"}
    if text in mapping:
        return mapping[text]
    raise FormatError(f"{where}: column 'answer' of a paired row must be A/B (or 0/1, "
                      f"image_a/image_b), got {value!r}")


def _image_refs(df: pd.DataFrame, column: str) -> dict[str, str]:
    """index -> image cell of rows whose image is a full base64 (targets of short references)."""
    if column not in df.columns or "index" not in df.columns:
        return {}
    out = {}
    for idx, img in zip(df["index"], df[column]):
        if isinstance(img, str) and len(img) > IMAGE_REF_MAX_LEN:
            out[_cell(idx)] = img
    return out


def _resolve_image(value: Any, refs: dict[str, str], where: str, column: str,
                   rec: dict | None = None) -> str:
    """The base64 image of a cell; a short cell is the index of the row holding it (VLMEvalKit),
    remembered in ``rec["image_refs"][column]`` so that a writer can keep the reference."""
    if _missing(value):
        raise FormatError(f"{where}: column {column!r} is empty")
    text = _cell(value)
    if len(text) <= IMAGE_REF_MAX_LEN:
        if text in refs:
            if rec is not None:
                rec.setdefault("image_refs", {})[column] = text
            return refs[text]
        raise FormatError(f"{where}: column {column!r} holds {text!r}, which is neither a "
                          "base64 image nor the index of another row with an image")
    return text


def _extra_columns(df: pd.DataFrame, known: Iterable[str]) -> list[str]:
    known = set(known)
    return [c for c in df.columns if c not in known]


def _required(row: dict, column: str, where: str) -> str:
    if column not in row:
        raise FormatError(f"{where}: required column {column!r} is missing from the table")
    value = row[column]
    if _missing(value):
        raise FormatError(f"{where}: required column {column!r} is empty")
    return _cell(value)


def _ordered_frame(rows: list[dict], leading: list[str], optional: Iterable[str]) -> pd.DataFrame:
    """DataFrame with `leading` columns, then optional ones any row has, then extra columns."""
    cols = list(leading)
    for c in optional:
        if any(c in r for r in rows) and c not in cols:
            cols.append(c)
    for r in rows:
        for c in r:
            if c not in cols:
                cols.append(c)
    return pd.DataFrame([{c: r.get(c, "") for c in cols} for r in rows], columns=cols)


def _optional_cells(rec: dict, names: Iterable[str], out: dict) -> None:
    for name in names:
        if name in rec and not _missing(rec[name]):
            out[name] = _cell(rec[name])


def _extra_cells(rec: dict, out: dict, where: str) -> None:
    for k, v in (rec.get("extra") or {}).items():
        if k in out:
            raise FormatError(f"{where}: extra column {k!r} clashes with a format column")
        out[k] = _cell(v)


# -- MCQ ------------------------------------------------------------------------------------

def mcq_records_to_frame(records: Iterable[dict]) -> pd.DataFrame:
    """MCQ records -> VLMEvalKit MCQ frame (all cells strings; "" for empty options).

    Uses an ``image`` column when records carry images, ``image_path`` when they carry paths
    (a mix is an error)."""
    rows = []
    kinds = set()
    for n, rec in enumerate(records, start=1):
        where = _where(n, rec.get("index"))
        if _missing(rec.get("index")):
            raise FormatError(f"{where}: record has no 'index'")
        row: dict[str, str] = {"index": _cell(rec["index"])}
        if rec.get("image") is not None:
            row["image"] = _image_cell(rec["image"], where)
            kinds.add("image")
        elif not _missing(rec.get("image_path")):
            row["image_path"] = str(rec["image_path"])
            kinds.add("image_path")
        else:
            raise FormatError(f"{where}: record has neither 'image' nor 'image_path'")
        if _missing(rec.get("question")):
            raise FormatError(f"{where}: record has no 'question'")
        row["question"] = str(rec["question"])
        options = rec.get("options") or {}
        bad = [k for k in options if k not in OPTION_LETTERS]
        if bad:
            raise FormatError(f"{where}: option keys must be A-D, got {bad}")
        present = [k for k in OPTION_LETTERS if not _missing(options.get(k))]
        if len(present) < 2:
            raise FormatError(f"{where}: an MCQ needs at least two non-empty options, got {present}")
        for letter in OPTION_LETTERS:
            row[letter] = _cell(options.get(letter))
        letter = answer_letter(rec.get("answer"), where=where)
        if letter not in present:
            raise FormatError(f"{where}: answer {letter!r} points at an empty option")
        row["answer"] = letter
        _optional_cells(rec, MCQ_OPTIONAL, row)
        _extra_cells(rec, row, where)
        rows.append(row)
    if len(kinds) > 1:
        raise FormatError("records mix 'image' and 'image_path'; a TSV uses one of them")
    image_col = kinds.pop() if kinds else "image"
    leading = ["index", image_col, "question", *OPTION_LETTERS, "answer"]
    return _ordered_frame(rows, leading, MCQ_OPTIONAL)


def frame_to_mcq_records(df: pd.DataFrame, errors: list | None = None) -> list[dict]:
    """VLMEvalKit MCQ frame -> MCQ records (images stay base64 strings, see module docstring).

    Answers 0-3 become A-D (the original spelling is kept as ``answer_raw``); empty or NaN
    options are skipped; other columns go to ``extra``; ``row`` is the 1-based data row.
    Raises :class:`FormatError` naming the row and column of the first problem, unless `errors`
    is a list: then each bad row is appended to it as {"row", "index", "reason"} and skipped."""
    image_col = _image_column(df, "image", "image_path")
    for col in ("index", "question", "answer"):
        if col not in df.columns:
            raise FormatError(f"MCQ table has no {col!r} column (columns: {list(df.columns)})")
    refs = _image_refs(df, "image") if image_col == "image" else {}
    known = {"index", image_col, "question", "answer", *OPTION_LETTERS, *MCQ_OPTIONAL}
    extras = _extra_columns(df, known)
    records = []
    for n, row in enumerate(df.to_dict(orient="records"), start=1):
        where = _where(n, row.get("index"))
        try:
            rec: dict[str, Any] = {"index": _required(row, "index", where)}
            if image_col == "image":
                rec["image"] = _resolve_image(row.get("image"), refs, where, "image", rec)
            else:
                rec["image_path"] = _required(row, "image_path", where)
            rec["question"] = _required(row, "question", where)
            options = {k: _cell(row[k]) for k in OPTION_LETTERS
                       if k in row and not _missing(row[k])}
            if len(options) < 2:
                raise FormatError(f"{where}: columns A-D hold fewer than two non-empty options")
            rec["options"] = options
            letter = answer_letter(row.get("answer"), where=where)
            if letter not in options:
                raise FormatError(f"{where}: column 'answer' is {letter!r} but option {letter} is empty")
            rec["answer"] = letter
            raw = _cell(row.get("answer")).strip()
            for name in MCQ_OPTIONAL:
                if name in row and not _missing(row[name]):
                    rec[name] = _cell(row[name])
            extra = {c: _cell(row[c]) for c in extras}
            if raw != letter:
                rec["answer_raw"] = raw  # e.g. "2": kept so an export can write it back verbatim
            if extra:
                rec["extra"] = extra
            rec["row"] = n
        except FormatError as exc:
            if errors is None:
                raise
            errors.append({"row": n, "index": _cell(row.get("index")), "reason": str(exc)})
            continue
        records.append(rec)
    return _check_unique_index(records, errors)


def normalize_question_type(value: str) -> str:
    """Yes-or-No / What / How from common spellings (yes/no, 0-2, lower case); unknown kept."""
    lowered = value.strip().lower().replace("_", "-").replace(" ", "-")
    for qt in QUESTION_TYPES:
        if lowered == qt.lower():
            return qt
    if lowered in ("yes/no", "yesno", "yes-no", "0"):
        return "Yes-or-No"
    if lowered in ("what", "1"):
        return "What"
    if lowered in ("how", "2"):
        return "How"
    return value  # unknown types are kept, not dropped


def _image_column(df: pd.DataFrame, image: str, path: str) -> str:
    if image in df.columns:
        return image
    if path in df.columns:
        return path
    raise FormatError(f"table has neither an {image!r} nor an {path!r} column "
                      f"(columns: {list(df.columns)})")


def _check_unique_index(records: list[dict], errors: list | None) -> list[dict]:
    seen: dict[str, int] = {}
    kept = []
    for rec in records:
        if rec["index"] in seen:
            exc = FormatError(f"row {rec['row']}: column 'index' value {rec['index']!r} repeats "
                              f"row {seen[rec['index']]}")
            if errors is None:
                raise exc
            errors.append({"row": rec["row"], "index": rec["index"], "reason": str(exc)})
            continue
        seen[rec["index"]] = rec["row"]
        kept.append(rec)
    return kept


# -- descriptions ---------------------------------------------------------------------------

def description_records_to_frame(records: Iterable[dict]) -> pd.DataFrame:
    """Description records -> VLMEvalKit description frame."""
    rows = []
    kinds = set()
    for n, rec in enumerate(records, start=1):
        where = _where(n, rec.get("index"))
        if _missing(rec.get("index")):
            raise FormatError(f"{where}: record has no 'index'")
        row: dict[str, str] = {"index": _cell(rec["index"])}
        if rec.get("image") is not None:
            row["image"] = _image_cell(rec["image"], where)
            kinds.add("image")
        elif not _missing(rec.get("image_path")):
            row["image_path"] = str(rec["image_path"])
            kinds.add("image_path")
        else:
            raise FormatError(f"{where}: record has neither 'image' nor 'image_path'")
        row["question"] = _cell(rec.get("question"))
        if _missing(rec.get("description")):
            raise FormatError(f"{where}: record has no 'description'")
        row["description"] = str(rec["description"])
        _optional_cells(rec, DESCRIPTION_OPTIONAL, row)
        _extra_cells(rec, row, where)
        rows.append(row)
    if len(kinds) > 1:
        raise FormatError("records mix 'image' and 'image_path'; a TSV uses one of them")
    image_col = kinds.pop() if kinds else "image"
    has_question = any(r["question"] for r in rows)
    if not has_question:
        for r in rows:
            del r["question"]
    leading = ["index", image_col] + (["question"] if has_question else []) + ["description"]
    return _ordered_frame(rows, leading, DESCRIPTION_OPTIONAL)


def frame_to_description_records(df: pd.DataFrame, errors: list | None = None) -> list[dict]:
    """VLMEvalKit description frame -> description records (question optional). `errors`: as
    in :func:`frame_to_mcq_records`."""
    image_col = _image_column(df, "image", "image_path")
    for col in ("index", "description"):
        if col not in df.columns:
            raise FormatError(f"description table has no {col!r} column "
                              f"(columns: {list(df.columns)})")
    refs = _image_refs(df, "image") if image_col == "image" else {}
    known = {"index", image_col, "question", "description", *DESCRIPTION_OPTIONAL}
    extras = _extra_columns(df, known)
    records = []
    for n, row in enumerate(df.to_dict(orient="records"), start=1):
        where = _where(n, row.get("index"))
        try:
            rec: dict[str, Any] = {"index": _required(row, "index", where)}
            if image_col == "image":
                rec["image"] = _resolve_image(row.get("image"), refs, where, "image", rec)
            else:
                rec["image_path"] = _required(row, "image_path", where)
            if not _missing(row.get("question")):
                rec["question"] = _cell(row["question"])
            rec["description"] = _required(row, "description", where)
            for name in DESCRIPTION_OPTIONAL:
                if name in row and not _missing(row[name]):
                    rec[name] = _cell(row[name])
            extra = {c: _cell(row[c]) for c in extras}
            if extra:
                rec["extra"] = extra
            rec["row"] = n
        except FormatError as exc:
            if errors is None:
                raise
            errors.append({"row": n, "index": _cell(row.get("index")), "reason": str(exc)})
            continue
        records.append(rec)
    return _check_unique_index(records, errors)


# -- paired descriptions --------------------------------------------------------------------

def paired_records_to_frame(records: Iterable[dict]) -> pd.DataFrame:
    """Paired records -> frame with index, image_a, image_b, description[, answer]."""
    rows = []
    for n, rec in enumerate(records, start=1):
        where = _where(n, rec.get("index"))
        if _missing(rec.get("index")):
            raise FormatError(f"{where}: record has no 'index'")
        row: dict[str, str] = {"index": _cell(rec["index"])}
        for col in ("image_a", "image_b"):
            if rec.get(col) is None:
                raise FormatError(f"{where}: record has no {col!r}")
            row[col] = _image_cell(rec[col], f"{where} {col}")
        if _missing(rec.get("description")):
            raise FormatError(f"{where}: record has no 'description'")
        row["description"] = str(rec["description"])
        answer = _paired_answer(rec.get("answer"), where)
        row["answer"] = answer or ""
        _optional_cells(rec, PAIRED_OPTIONAL, row)
        _extra_cells(rec, row, where)
        rows.append(row)
    has_answer = any(r["answer"] for r in rows)
    if not has_answer:
        for r in rows:
            del r["answer"]
    leading = ["index", "image_a", "image_b", "description"] + (["answer"] if has_answer else [])
    return _ordered_frame(rows, leading, PAIRED_OPTIONAL)


def frame_to_paired_records(df: pd.DataFrame, errors: list | None = None) -> list[dict]:
    """Paired frame -> paired records (answer A/B when present). `errors`: as in
    :func:`frame_to_mcq_records`."""
    for col in ("index", "image_a", "image_b", "description"):
        if col not in df.columns:
            raise FormatError(f"paired table has no {col!r} column (columns: {list(df.columns)})")
    refs_a, refs_b = _image_refs(df, "image_a"), _image_refs(df, "image_b")
    known = {"index", "image_a", "image_b", "description", "answer", *PAIRED_OPTIONAL}
    extras = _extra_columns(df, known)
    records = []
    for n, row in enumerate(df.to_dict(orient="records"), start=1):
        where = _where(n, row.get("index"))
        try:
            rec: dict[str, Any] = {"index": _required(row, "index", where)}
            rec["image_a"] = _resolve_image(row.get("image_a"), refs_a, where, "image_a", rec)
            rec["image_b"] = _resolve_image(row.get("image_b"), refs_b, where, "image_b", rec)
            rec["description"] = _required(row, "description", where)
            answer = _paired_answer(row.get("answer"), where)
            if answer is not None:
                rec["answer"] = answer
                raw = _cell(row.get("answer")).strip()
                if raw != answer:
                    rec["answer_raw"] = raw
            for name in PAIRED_OPTIONAL:
                if name in row and not _missing(row[name]):
                    rec[name] = _cell(row[name])
            extra = {c: _cell(row[c]) for c in extras}
            if extra:
                rec["extra"] = extra
            rec["row"] = n
        except FormatError as exc:
            if errors is None:
                raise
            errors.append({"row": n, "index": _cell(row.get("index")), "reason": str(exc)})
            continue
        records.append(rec)
    return _check_unique_index(records, errors)


# -- Q-Bench JSON ---------------------------------------------------------------------------

def qbench_to_mcq_records(entries: list[dict]) -> list[dict]:
    """Q-Bench JSON entries ({img_path, question, candidates, correct_ans, type, concern}) ->
    MCQ records with ``image_path``; index = position. At most four candidates."""
    if not isinstance(entries, list):
        raise FormatError(f"Q-Bench JSON must be a list of objects, got {type(entries).__name__}")
    records = []
    for n, e in enumerate(entries, start=1):
        where = f"entry {n}"
        if not isinstance(e, dict):
            raise FormatError(f"{where}: expected an object, got {type(e).__name__}")
        for key in ("img_path", "question", "candidates", "correct_ans"):
            if key not in e or _missing(e[key]) or (key == "candidates" and not e[key]):
                raise FormatError(f"{where}: field {key!r} is missing or empty")
        cands = [str(c) for c in e["candidates"]]
        if not 2 <= len(cands) <= len(OPTION_LETTERS):
            raise FormatError(f"{where}: field 'candidates' needs 2-4 entries, got {len(cands)}")
        correct = str(e["correct_ans"])
        if correct not in cands:
            raise FormatError(f"{where}: field 'correct_ans' {correct!r} is not one of the "
                              f"candidates {cands}")
        rec: dict[str, Any] = {
            "index": str(e.get("id", n - 1)),
            "image_path": str(e["img_path"]),
            "question": str(e["question"]),
            "options": dict(zip(OPTION_LETTERS, cands)),
            "answer": OPTION_LETTERS[cands.index(correct)],
        }
        qtype = e.get("type")
        if qtype is not None:
            try:
                rec["question_type"] = QBENCH_TYPES[int(qtype)]
            except (KeyError, ValueError, TypeError):
                rec["question_type"] = str(qtype)
        if e.get("concern") is not None:
            rec["extra"] = {"concern": str(e["concern"])}
        records.append(rec)
    return records


def mcq_records_to_qbench(records: Iterable[dict]) -> list[dict]:
    """MCQ records with ``image_path`` -> Q-Bench JSON entries (type as 0/1/2 when known,
    concern from ``extra`` or 0)."""
    back = {v: k for k, v in QBENCH_TYPES.items()}
    out = []
    for n, rec in enumerate(records, start=1):
        where = _where(n, rec.get("index"))
        if _missing(rec.get("image_path")):
            raise FormatError(f"{where}: Q-Bench entries need an 'image_path'")
        options = {k: v for k, v in (rec.get("options") or {}).items() if not _missing(v)}
        letters = [k for k in OPTION_LETTERS if k in options]
        letter = answer_letter(rec.get("answer"), where=where)
        if letter not in options:
            raise FormatError(f"{where}: answer {letter!r} points at an empty option")
        concern = (rec.get("extra") or {}).get("concern", 0)
        qtype = rec.get("question_type")
        out.append({
            "img_path": str(rec["image_path"]),
            "question": str(rec["question"]),
            "candidates": [str(options[k]) for k in letters],
            "correct_ans": str(options[letter]),
            "type": back.get(qtype, qtype) if qtype is not None else 0,
            "concern": int(concern) if str(concern).lstrip("-").isdigit() else concern,
        })
    return out
