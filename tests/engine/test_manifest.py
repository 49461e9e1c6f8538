"""Pool manifest rows (pure): deterministic, chunk-independent, rendered identically."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medq.engine import taxonomy
from medq.engine.manifest import BLOCK, COLUMNS, manifest_rows, render_row, row_image_id
from medq.engine.world_plan import Mix, Selection, WorldSpecError, base_size

REFS = {m: [f"{m}/base/{k}" for k in range(3)] for m in taxonomy.MODALITIES}


def test_rows_are_deterministic_with_expected_columns():
    a = manifest_rows(500, 3, refs=REFS)
    b = manifest_rows(500, 3, refs=REFS)
    assert a.equals(b)
    assert tuple(a.column_names) == COLUMNS
    assert a.column("row").to_pylist() == list(range(500))
    ids = a.column("image_id").to_pylist()
    assert len(set(ids)) == 500 and all(len(i) == 64 for i in ids)
    assert not manifest_rows(500, 4, refs=REFS).equals(a)
    for row in a.slice(0, 50).to_pylist():
        degs = json.loads(row["degradations"])
        assert row["verdict"] == taxonomy.verdict_for(degs)
        assert row["level"] == max((d["level"] for d in degs), default=0)
        assert row["image_id"] == row_image_id(
            row["modality"], row["base_ref"], [row["crop_frac"], row["crop_top"],
                                               row["crop_left"]],
            row["flip_h"], row["flip_v"], row["rot90"], row["degradations"], row["seed"],
            row["image_size"])


def test_rows_do_not_depend_on_size_or_chunking():
    size = BLOCK + 100
    across = manifest_rows(size, 1, refs=REFS, start=BLOCK - 5, stop=BLOCK + 5)
    left = manifest_rows(size, 1, refs=REFS, start=BLOCK - 5, stop=BLOCK)
    right = manifest_rows(size, 1, refs=REFS, start=BLOCK, stop=BLOCK + 5)
    assert across.to_pylist() == left.to_pylist() + right.to_pylist()
    bigger = manifest_rows(3 * BLOCK, 1, refs=REFS, start=BLOCK - 5, stop=BLOCK + 5)
    assert bigger.equals(across)
    assert manifest_rows(200, 1, refs=REFS).slice(100, 50).equals(
        manifest_rows(5000, 1, refs=REFS, start=100, stop=150))


def test_rare_share():
    rare = Selection(modalities=("endoscopy",), share=0.02)
    t = manifest_rows(BLOCK, 0, Mix(), REFS, rare=rare, stop=3000)
    share = np.mean(np.array(t.column("modality").to_pylist()) == "endoscopy")
    assert abs(share - 0.02) < 0.012


def test_render_row_is_deterministic():
    rows = manifest_rows(30, 2, refs=REFS, image_size=32).to_pylist()
    rng = np.random.default_rng(0)
    bases = {}
    for ref_list in REFS.values():
        for ref in ref_list:
            shape = (base_size(32), base_size(32)) + ((3,) if ref.startswith("fundus") else ())
            bases[ref] = rng.random(shape).astype(np.float32)
    for row in rows:
        a, b = render_row(row, bases), render_row(dict(row), bases)
        assert np.array_equal(a, b) and a.shape[:2] == (32, 32)
    with pytest.raises(WorldSpecError, match="not provided"):
        render_row(rows[0], {})


def test_bad_arguments():
    with pytest.raises(WorldSpecError):
        manifest_rows(10, 0)  # no refs
    with pytest.raises(WorldSpecError):
        manifest_rows(10, 0, refs=REFS, start=20)
    assert manifest_rows(0, 0, refs=REFS).num_rows == 0
