"""Pool manifest on disk: build, render on demand, register into a workspace catalog."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from medq.engine import taxonomy
from medq.engine.world_plan import Mix
from medq.storage.pool_manifest import (
    ManifestError,
    PoolManifest,
    build_manifest,
    register_pool,
    render_for_workspace,
)

MIX = Mix(modalities={"CT": 1.0, "histopathology": 1.0, "X-ray": 1.0})


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    path = tmp_path_factory.mktemp("manifest") / "pool.parquet"
    built = build_manifest(path, 300, seed=5, mix=MIX, image_size=48)
    return path, built


def test_build(manifest, tmp_path):
    path, built = manifest
    assert built.rows == 300 and sum(built.verdicts.values()) == 300
    table = pq.read_table(path)
    assert table.num_rows == 300 and len(set(table.column("image_id").to_pylist())) == 300
    again = build_manifest(tmp_path / "again.parquet", 300, seed=5, mix=MIX, image_size=48)
    assert again.manifest_id == built.manifest_id
    assert pq.read_table(tmp_path / "again.parquet").equals(table)
    assert not list(tmp_path.glob(".*.tmp"))


def test_render_twice_identical_by_row_and_by_id(manifest):
    path, _ = manifest
    m = PoolManifest(path)
    rows = [0, 7, 299]
    a = m.render(rows)
    b = PoolManifest(path).render(rows)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    ids = [r["image_id"] for r in m.rows(rows)]
    c = m.render(ids)
    assert all(np.array_equal(x, y) for x, y in zip(a, c))
    assert all(x.shape[:2] == (48, 48) and x.dtype == np.float32 for x in a)
    with pytest.raises(ManifestError, match="out of range"):
        m.rows([300])
    with pytest.raises(ManifestError, match="not in the manifest"):
        m.find(["0" * 64])


def test_not_a_manifest(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        PoolManifest(tmp_path / "missing.parquet")
    import pyarrow as pa
    pq.write_table(pa.table({"x": [1]}), tmp_path / "plain.parquet")
    with pytest.raises(ManifestError, match="no MedQ manifest metadata"):
        PoolManifest(tmp_path / "plain.parquet")


def test_register_pool_is_idempotent_and_renders_through_the_catalog(manifest, workspace):
    path, built = manifest
    first = register_pool(workspace, path, chunk=128)
    assert (first.images_new, first.items_new, first.oracle_new) == (300, 300, 300)
    second = register_pool(workspace, path)
    assert (second.images_new, second.items_new, second.oracle_new) == (0, 0, 0)
    cat = workspace.catalog
    rows = cat.query("SELECT i.image_id, i.object_key, i.source_format, i.manifest_row, "
                     "i.width, it.split, it.kind, it.verdict, o.verdict AS truth, o.description "
                     "FROM images i JOIN items it USING (image_id) JOIN oracle_labels o "
                     "USING (image_id) ORDER BY i.manifest_row")
    assert len(rows) == 300
    assert {r["source_format"] for r in rows} == {"manifest"}
    assert all(r["object_key"] is None and r["split"] == "pool" and r["kind"] == "image"
               and r["verdict"] is None and r["width"] == 48 for r in rows)
    assert [r["manifest_row"] for r in rows] == list(range(300))
    table = pq.read_table(path)
    assert [r["image_id"] for r in rows] == table.column("image_id").to_pylist()
    assert [r["truth"] for r in rows] == table.column("verdict").to_pylist()
    assert all(r["description"].endswith(taxonomy.verdict_sentence(r["truth"])) for r in rows)
    ids = [rows[3]["image_id"], rows[250]["image_id"]]
    rendered = render_for_workspace(workspace, ids)
    direct = PoolManifest(path).render([3, 250])
    assert all(np.array_equal(x, y) for x, y in zip(rendered, direct))
    from medq.storage.images import load_images
    loaded = load_images(workspace, ids)
    assert all(np.array_equal(x, y) for x, y in zip(loaded, direct))
    assert (workspace.root / "manifests" / f"{built.manifest_id}.parquet").is_file()
