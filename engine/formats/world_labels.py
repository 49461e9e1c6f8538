"""World label lines (``seed_labels.jsonl`` / ``pool_labels.jsonl``) and label field parsing.

A label line is a JSON object: ``image`` (path relative to its folder), ``modality``, ``verdict``
(good | usable | reject), ``degradations`` (list of {"type", "level"}, level 1 = mild,
2 = severe; empty = none), ``description`` (optional). Types the taxonomy does not know are
accepted and reported (:func:`unknown_types`), never dropped. Pure: dicts in, dicts out.
"""
from __future__ import annotations

import json
from typing import Any

from medq.engine.formats.medqbench import FormatError
from medq.engine.taxonomy import LEVELS, VERDICTS, is_known_degradation, stated_verdict

_LEVEL_NAMES = {name: level for level, name in LEVELS.items()}
_LEVEL_NAMES.update({"l0": 0, "l1": 1, "l2": 2, "low": 1, "high": 2, "moderate": 1})


def parse_level(value: Any, *, where: str = "level") -> int | None:
    """0/1/2 from 0-2, "L0".."L2", "none"/"mild"/"severe"; None for empty."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise FormatError(f"{where}: level must be 0, 1 or 2, got {value!r}")
    if isinstance(value, (int, float)) and float(value).is_integer() and 0 <= value <= 2:
        return int(value)
    text = str(value).strip().lower()
    if text in _LEVEL_NAMES:
        return _LEVEL_NAMES[text]
    if text in ("0", "1", "2"):
        return int(text)
    raise FormatError(f"{where}: level must be 0/1/2, L0-L2 or none/mild/severe, got {value!r}")


def parse_degradations(value: Any, *, level: Any = None, where: str = "degradations"
                       ) -> list[dict]:
    """[{"type": str, "level": 1|2}] from a list of dicts, JSON text, or a plain type name /
    comma-separated names (then `level` applies to each). "none"/"" -> []. Level-0 entries are
    dropped (level 0 means the degradation is absent)."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text or text.lower() in ("none", "no", "clean", "[]"):
            return []
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise FormatError(f"{where}: not valid JSON ({exc})") from exc
        else:
            lvl = parse_level(level, where=where)
            lvl = 1 if lvl is None else lvl
            if lvl == 0:
                return []
            return [{"type": t.strip(), "level": lvl} for t in text.split(",") if t.strip()]
    if not isinstance(value, list):
        raise FormatError(f"{where}: must be a list of {{type, level}}, got {type(value).__name__}")
    out = []
    for i, d in enumerate(value):
        if isinstance(d, str):
            d = {"type": d, "level": level if level is not None else 1}
        if not isinstance(d, dict):
            raise FormatError(f"{where}[{i}]: must be an object with 'type' and 'level'")
        t = d.get("type")
        if not isinstance(t, str) or not t.strip():
            raise FormatError(f"{where}[{i}]: 'type' must be a non-empty string, got {t!r}")
        lvl = parse_level(d.get("level"), where=f"{where}[{i}].level")
        if lvl is None:
            raise FormatError(f"{where}[{i}]: 'level' is missing")
        if lvl == 0:
            continue
        out.append({"type": t.strip(), "level": lvl})
    return out


def worst_level(degradations: list[dict]) -> int:
    return max((int(d["level"]) for d in degradations), default=0)


def unknown_types(degradations: list[dict]) -> list[str]:
    return [d["type"] for d in degradations if not is_known_degradation(d["type"])]


def verdict_from_text(text: str | None) -> str | None:
    """The verdict of "Overall, the quality of this image is <verdict>." (last one), or None
    (:func:`medq.engine.taxonomy.stated_verdict`)."""
    return stated_verdict(text)


def parse_label_line(obj: Any, *, where: str) -> dict:
    """Validate one label line -> {image, modality, verdict, degradations, level, description}.

    Raises :class:`FormatError` naming `where` and the field."""
    if not isinstance(obj, dict):
        raise FormatError(f"{where}: a label line must be a JSON object, got {type(obj).__name__}")
    image = obj.get("image")
    if not isinstance(image, str) or not image.strip():
        raise FormatError(f"{where}: field 'image' must be a non-empty path string")
    verdict = obj.get("verdict")
    if not isinstance(verdict, str) or verdict.strip().lower() not in VERDICTS:
        raise FormatError(f"{where}: field 'verdict' must be one of {list(VERDICTS)}, "
                          f"got {verdict!r}")
    modality = obj.get("modality")
    if modality is not None and (not isinstance(modality, str) or not modality.strip()):
        raise FormatError(f"{where}: field 'modality' must be a non-empty string when given")
    degradations = parse_degradations(obj.get("degradations", []),
                                      where=f"{where}: field 'degradations'")
    description = obj.get("description")
    if description is not None and not isinstance(description, str):
        raise FormatError(f"{where}: field 'description' must be a string")
    return {"image": image.strip(), "modality": modality.strip() if modality else None,
            "verdict": verdict.strip().lower(), "degradations": degradations,
            "level": worst_level(degradations), "description": description or None}
