"""The pool manifest (pure): a million-item pool as rows of parameters, not files.

Each row says how to produce one image: base image reference, view (crop, flips, rotation),
degradations and render seed, plus its ground truth (verdict). :func:`render_row` turns a row
into pixels, identical every time. Rows are generated in fixed blocks of :data:`BLOCK` rows, each
from its own generator ``(seed, block)``, so row r is the same whatever the manifest size or the
chunking used to build it.

Columns (:data:`COLUMNS`): ``row`` (int64), ``image_id`` (sha256 hex of the row's parameters),
``modality``, ``base_ref``, ``crop_frac`` / ``crop_top`` / ``crop_left`` (float64),
``flip_h`` / ``flip_v`` (bool), ``rot90`` (int8), ``degradations`` (JSON text,
``[{"level": 1, "type": "blur"}]``), ``level`` (worst, int8), ``verdict``, ``seed`` (int64 render
seed), ``image_size`` (int16).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from medq.engine import taxonomy
from medq.engine.world_plan import (
    Draws,
    Mix,
    Selection,
    WorldSpecError,
    base_size,
    render,
    sample_with_rare,
)

MANIFEST_FORMAT = "medq-manifest/1"
BLOCK = 65536

SCHEMA = pa.schema([
    ("row", pa.int64()), ("image_id", pa.string()), ("modality", pa.string()),
    ("base_ref", pa.string()), ("crop_frac", pa.float64()), ("crop_top", pa.float64()),
    ("crop_left", pa.float64()), ("flip_h", pa.bool_()), ("flip_v", pa.bool_()),
    ("rot90", pa.int8()), ("degradations", pa.string()), ("level", pa.int8()),
    ("verdict", pa.string()), ("seed", pa.int64()), ("image_size", pa.int16()),
])
COLUMNS = tuple(SCHEMA.names)


def _block_rng(seed: int, block: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, (int(seed) >> 32) & 0xFFFFFFFF,
                                  0x6D616E69, int(block)])


def block_draws(block: int, seed: int, mix: Mix, refs: Mapping[str, Sequence[str]],
                rare: Selection | None = None) -> tuple[Draws, np.ndarray]:
    """The :data:`BLOCK` items of block `block` and their render seeds."""
    rng = _block_rng(seed, block)
    draws = sample_with_rare(BLOCK, rng, mix, refs, rare)
    seeds = rng.integers(0, 2 ** 63 - 1, size=BLOCK, dtype=np.int64)
    return draws, seeds


def _degradation_json(types: np.ndarray, levels: np.ndarray) -> list[str]:
    """Canonical JSON (sorted keys, no spaces) of each row's degradations."""
    cache: dict[tuple, str] = {}  # few distinct combinations: format each once
    out = []
    for key in zip(map(tuple, types.tolist()), map(tuple, levels.tolist())):
        text = cache.get(key)
        if text is None:
            parts = [f'{{"level":{lv},"type":{json.dumps(t)}}}' for t, lv in zip(*key)
                     if t and lv > 0]
            text = cache[key] = "[" + ",".join(parts) + "]"
        out.append(text)
    return out


def row_image_id(modality: str, base_ref: str, crop: Sequence[float], flip_h: bool,
                 flip_v: bool, rot90: int, degradations_json: str, seed: int,
                 image_size: int) -> str:
    """Content id of a manifest row: sha256 of its parameters (not of its pixels, so that ids
    exist without rendering)."""
    key = (f"{MANIFEST_FORMAT}|{modality}|{base_ref}|{crop[0]:.6f}|{crop[1]:.6f}|{crop[2]:.6f}|"
           f"{int(flip_h)}|{int(flip_v)}|{int(rot90)}|{degradations_json}|{int(seed)}|"
           f"{int(image_size)}")
    return hashlib.sha256(key.encode()).hexdigest()


def manifest_rows(size: int, seed: int, mix: Mix | None = None,
                  refs: Mapping[str, Sequence[str]] | None = None, *, start: int = 0,
                  stop: int | None = None, image_size: int = 128,
                  rare: Selection | None = None) -> pa.Table:
    """Rows ``[start, stop)`` (default all `size`) of the manifest of `size` rows as an Arrow
    table with :data:`SCHEMA`. `refs` lists the base references per modality (from
    :func:`medq.storage.base_images.base_refs`)."""
    if refs is None:
        raise WorldSpecError("manifest_rows needs the base image references per modality (refs)")
    if size < 0:
        raise WorldSpecError(f"manifest size must be >= 0, got {size}")
    mix = (mix or Mix()).validate("manifest mix")
    if rare is not None:
        rare.validate("manifest pool_rare")
    stop = size if stop is None else min(stop, size)
    if not 0 <= start <= stop:
        raise WorldSpecError(f"manifest rows [{start}, {stop}) out of range for size {size}")
    tables = []
    for block in range(start // BLOCK, (stop + BLOCK - 1) // BLOCK):
        lo = max(start, block * BLOCK) - block * BLOCK
        hi = min(stop, (block + 1) * BLOCK) - block * BLOCK
        draws, seeds = block_draws(block, seed, mix, refs, rare)
        tables.append(_table(draws.take(slice(lo, hi)), seeds[lo:hi], block * BLOCK + lo,
                             image_size))
    if not tables:
        return SCHEMA.empty_table()
    return pa.concat_tables(tables)


def _table(d: Draws, seeds: np.ndarray, first_row: int, image_size: int) -> pa.Table:
    n = len(d)
    crop = np.round(d.crop, 6)
    degs = _degradation_json(d.types, d.levels)
    level = d.levels.max(axis=1) if n else np.zeros(0, dtype=np.int64)
    verdict = np.array(taxonomy.VERDICTS, dtype=object)[level] if n else np.zeros(0, dtype=object)
    mods, refs = d.modality.tolist(), d.base_ref.tolist()
    ids = [row_image_id(mods[i], refs[i], crop[i], d.flip_h[i], d.flip_v[i], d.rot90[i],
                        degs[i], seeds[i], image_size) for i in range(n)]
    return pa.table({
        "row": pa.array(np.arange(first_row, first_row + n, dtype=np.int64)),
        "image_id": pa.array(ids, pa.string()),
        "modality": pa.array(mods, pa.string()),
        "base_ref": pa.array(refs, pa.string()),
        "crop_frac": pa.array(crop[:, 0]), "crop_top": pa.array(crop[:, 1]),
        "crop_left": pa.array(crop[:, 2]),
        "flip_h": pa.array(d.flip_h.astype(bool)), "flip_v": pa.array(d.flip_v.astype(bool)),
        "rot90": pa.array(d.rot90.astype(np.int8)),
        "degradations": pa.array(degs, pa.string()),
        "level": pa.array(level.astype(np.int8)),
        "verdict": pa.array(verdict.tolist(), pa.string()),
        "seed": pa.array(seeds.astype(np.int64)),
        "image_size": pa.array(np.full(n, image_size, dtype=np.int16)),
    }, schema=SCHEMA)


def row_view(row: Mapping) -> dict:
    return {"crop": [float(row["crop_frac"]), float(row["crop_top"]), float(row["crop_left"])],
            "flip_h": bool(row["flip_h"]), "flip_v": bool(row["flip_v"]),
            "rot90": int(row["rot90"])}


def row_degradations(row: Mapping) -> list[dict]:
    value = row["degradations"]
    return json.loads(value) if isinstance(value, str) else list(value)


def render_row(row: Mapping, bases: Mapping[str, np.ndarray]) -> np.ndarray:
    """The image of a manifest row (a dict of its columns). `bases` maps base references to
    base images loaded at ``base_size(row["image_size"])``. Deterministic."""
    ref = row["base_ref"]
    if ref not in bases:
        raise WorldSpecError(f"manifest row {row.get('row')}: base image {ref!r} not provided")
    size = int(row["image_size"])
    base = bases[ref]
    if base.shape[0] != base_size(size):
        raise WorldSpecError(f"manifest row {row.get('row')}: base {ref!r} is {base.shape[0]} px, "
                             f"expected {base_size(size)} px for {size}-px images")
    img, _ = render(base, row_view(row), row_degradations(row), int(row["seed"]), size)
    return img
