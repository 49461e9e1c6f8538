"""DuckDB catalog: migrations, idempotent upserts, transactions, the cross-process lock and
refusing files that are not (this version's) MedQ catalogs."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
import time

import duckdb
import numpy as np
import pytest

from medq.storage.catalog import (
    LATEST_VERSION,
    Catalog,
    CatalogError,
    CatalogLockedError,
    _migrations,
    loads,
)

ITEM = {"item_id": "it-1", "split": "eval", "kind": "mcq", "image_id": "img-1",
        "options": {"A": "good", "B": "bad"}, "answer": "A", "level": 0}


@pytest.fixture
def catalog(tmp_path):
    return Catalog.open(tmp_path / "catalog.duckdb")


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _folder(path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


# -- migrations ---------------------------------------------------------------------------------

def test_migrations_apply_once(tmp_path):
    path = tmp_path / "c.duckdb"
    cat = Catalog.open(path)
    assert cat.schema_version() == LATEST_VERSION
    versions = [r["version"] for r in cat.query("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == [v for v, _, _ in _migrations()]
    assert cat.migrate() == []  # nothing pending
    expected = {"images", "items", "rounds", "round_steps", "eval_runs", "predictions", "failures",
                "prototypes", "candidates", "routes", "annotation_tasks", "annotations",
                "datasets", "dataset_items", "model_versions", "quarantine"}
    assert expected <= set(cat.tables())
    reopened = Catalog.open(path, read_only=True)
    assert reopened.schema_version() == LATEST_VERSION


def test_read_only_open_needs_an_existing_catalog(tmp_path):
    with pytest.raises(CatalogError, match="no catalog at .*medq init"):
        Catalog.open(tmp_path / "missing.duckdb", read_only=True)
    assert not (tmp_path / "missing.duckdb").exists()
    cat = Catalog.open(tmp_path / "c.duckdb")
    ro = Catalog.open(cat.path, read_only=True)
    with pytest.raises(CatalogError, match="read-only"):
        ro.upsert("items", [ITEM])


# -- upserts ------------------------------------------------------------------------------------

def test_upsert_is_idempotent(catalog):
    rows = [ITEM, {**ITEM, "item_id": "it-2", "answer": "B"}]
    assert catalog.upsert("items", rows) == 2
    before = catalog.query("SELECT * FROM items ORDER BY item_id")
    assert catalog.upsert("items", rows) == 2
    after = catalog.query("SELECT * FROM items ORDER BY item_id")
    assert after == before and len(after) == 2
    assert loads(after[0]["options"]) == {"A": "good", "B": "bad"}


def test_partial_update_keeps_other_columns(catalog):
    catalog.upsert("items", [ITEM])
    catalog.upsert("items", [{"item_id": "it-1", "verdict": "reject"}])
    row = catalog.query("SELECT * FROM items WHERE item_id = 'it-1'")[0]
    assert row["verdict"] == "reject" and row["answer"] == "A" and row["split"] == "eval"
    assert loads(row["options"]) == ITEM["options"]


def test_mixed_column_sets_never_null_out_columns(catalog):
    catalog.upsert("images", [{"image_id": "a", "width": 10, "height": 20},
                              {"image_id": "b", "width": 30, "height": 40}])
    # One call, rows with different columns: 'a' must keep its height, 'b' its width.
    catalog.upsert("images", [{"image_id": "a", "width": 11}, {"image_id": "b", "height": 41}])
    got = {r["image_id"]: (r["width"], r["height"])
           for r in catalog.query("SELECT image_id, width, height FROM images")}
    assert got == {"a": (11, 20), "b": (30, 41)}


def test_duplicate_keys_in_one_call_merge_in_order(catalog):
    n = catalog.upsert("images", [{"image_id": "a", "width": 1, "height": 1},
                                  {"image_id": "a", "width": 2}])
    assert n == 1
    assert catalog.query("SELECT width, height FROM images") == [{"width": 2, "height": 1}]


def test_bulk_upsert_keeps_types(catalog):
    big = 2**60 + 7  # would lose precision through float
    rows = [{"image_id": f"i{i:05d}", "manifest_row": None if i % 3 else big + i,
             "width": np.int64(i), "metadata": np.arange(3) if i % 2 else {"i": i}}
            for i in range(2500)]
    assert catalog.upsert("images", rows) == 2500
    assert catalog.upsert("images", rows) == 2500  # idempotent on the bulk path too
    got = catalog.query("SELECT image_id, manifest_row, width, metadata FROM images "
                        "WHERE image_id IN ('i00000', 'i00001', 'i00003') ORDER BY 1")
    assert got[0]["manifest_row"] == big and got[1]["manifest_row"] is None
    assert got[2]["manifest_row"] == big + 3 and got[2]["width"] == 3
    assert loads(got[0]["metadata"]) == {"i": 0} and loads(got[1]["metadata"]) == [0, 1, 2]
    assert catalog.scalar("SELECT count(*) FROM images") == 2500


def test_bad_upserts_are_clear_errors(catalog):
    with pytest.raises(CatalogError, match="unknown catalog table 'nope'"):
        catalog.upsert("nope", [{"a": 1}])
    with pytest.raises(CatalogError, match=r"no column\(s\) \['colour'\]"):
        catalog.upsert("items", [{**ITEM, "colour": "red"}])
    with pytest.raises(CatalogError, match="needs primary key"):
        catalog.upsert("items", [{"split": "eval"}])
    with pytest.raises(CatalogError, match="primary key .* is NULL"):
        catalog.upsert("items", [{**ITEM, "item_id": None}])
    with pytest.raises(CatalogError, match="upsert of 1 row.*'items' failed"):
        catalog.upsert("items", [{"item_id": "x", "kind": "mcq", "image_id": "i"}])  # split NULL
    assert catalog.upsert("items", []) == 0
    assert catalog.scalar("SELECT count(*) FROM items") == 0


# -- transactions -------------------------------------------------------------------------------

def test_transaction_rolls_back_on_error(catalog):
    with pytest.raises(RuntimeError, match="boom"), catalog.transaction() as tx:
        tx.upsert("images", [{"image_id": "img-1"}])
        tx.upsert("items", [ITEM])
        tx.execute("INSERT INTO rounds (round_id, round_index, status) VALUES ('r1', 1, 'running')")
        raise RuntimeError("boom")
    assert catalog.tables()["images"] == 0
    assert catalog.tables()["items"] == 0 and catalog.tables()["rounds"] == 0


def test_transaction_rolls_back_on_database_error(catalog):
    catalog.upsert("items", [ITEM])
    with pytest.raises(CatalogError), catalog.transaction() as tx:
        tx.upsert("items", [{"item_id": "it-1", "answer": "B"}])
        tx.upsert("items", [{"item_id": "it-9", "kind": "mcq", "image_id": "i"}])  # NOT NULL
    assert catalog.query("SELECT item_id, answer FROM items") == [{"item_id": "it-1", "answer": "A"}]


def test_nested_calls_join_the_outer_transaction(catalog):
    with pytest.raises(ValueError), catalog.transaction() as tx:
        tx.upsert("images", [{"image_id": "img-1"}])
        catalog.upsert("items", [ITEM])  # convenience call inside: same transaction
        assert catalog.scalar("SELECT count(*) FROM items") == 1  # visible inside
        raise ValueError("abort")
    assert catalog.scalar("SELECT count(*) FROM items") == 0
    with catalog.transaction() as tx:
        tx.upsert("images", [{"image_id": "img-1"}])
        catalog.upsert("items", [ITEM])
    assert catalog.tables()["items"] == 1 and catalog.tables()["images"] == 1


def test_threads_get_their_own_connections(catalog):
    errors = []

    def writer(i):
        try:
            for j in range(5):
                catalog.upsert("images", [{"image_id": f"t{i}-{j}", "width": j}])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert catalog.scalar("SELECT count(*) FROM images") == 15


def test_step_done(catalog):
    assert catalog.step_done("r1", "evaluate") is None
    catalog.upsert("round_steps", [{"round_id": "r1", "step": "evaluate", "status": "running"}])
    assert catalog.step_done("r1", "evaluate") is None
    catalog.upsert("round_steps", [{"round_id": "r1", "step": "evaluate", "status": "done",
                                    "info": {"eval_id": "e1"}}])
    assert catalog.step_done("r1", "evaluate") == {"status": "done", "info": {"eval_id": "e1"}}


# -- a second process ---------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from medq.storage.catalog import Catalog
    cat = Catalog(sys.argv[1])
    with cat.connect():
        print("holding", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _hold(path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_second_process_gets_a_clear_lock_error(catalog):
    catalog.upsert("items", [ITEM])
    before = _digest(catalog.path)
    proc = _hold(catalog.path, 30)
    try:
        for attempt in (lambda: Catalog.open(catalog.path),
                        lambda: Catalog.open(catalog.path, read_only=True),
                        lambda: catalog.upsert("items", [{**ITEM, "answer": "B"}]),
                        lambda: catalog.query("SELECT * FROM items")):
            with pytest.raises(CatalogLockedError) as info:
                attempt()
            msg = str(info.value)
            assert str(catalog.path) in msg and "in use by another process" in msg
            assert f"PID {proc.pid}" in msg
    finally:
        proc.kill()
        proc.wait()
    assert _digest(catalog.path) == before
    assert catalog.query("SELECT answer FROM items") == [{"answer": "A"}]


def test_lock_timeout_waits_for_the_other_process(tmp_path):
    cat = Catalog.open(tmp_path / "c.duckdb")
    proc = _hold(cat.path, 1.0)
    try:
        start = time.monotonic()
        waiting = Catalog.open(cat.path, lock_timeout_s=20)
        waiting.upsert("items", [ITEM])
        assert time.monotonic() - start < 20
    finally:
        proc.kill()
        proc.wait()
    assert waiting.scalar("SELECT count(*) FROM items") == 1


# -- files that are not (this version's) catalogs -----------------------------------------------

@pytest.mark.parametrize("content", [os.urandom(4096), b"", b"SQLite format 3\x00" + bytes(4080),
                                     b"not a database\n" * 100], ids=["random", "empty", "sqlite",
                                                                        "text"])
def test_corrupt_or_foreign_file_is_refused_unchanged(tmp_path, content):
    path = tmp_path / "catalog.duckdb"
    path.write_bytes(content)
    for attempt in (lambda: Catalog.open(path), lambda: Catalog.open(path, read_only=True)):
        with pytest.raises(CatalogError) as info:
            attempt()
        assert str(path) in str(info.value) and not isinstance(info.value, CatalogLockedError)
    assert path.read_bytes() == content
    assert _folder(path) == ["catalog.duckdb"]  # no WAL or side files


def test_foreign_duckdb_file_is_refused_unchanged(tmp_path):
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE patients (id INTEGER)")
    con.execute("INSERT INTO patients VALUES (1)")
    con.close()
    before, mtime = _digest(path), path.stat().st_mtime_ns
    with pytest.raises(CatalogError, match="not a MedQ catalog.*patients"):
        Catalog.open(path)
    assert _digest(path) == before and path.stat().st_mtime_ns == mtime
    assert _folder(path) == ["other.duckdb"]


def test_foreign_duckdb_with_only_a_view_or_other_schema(tmp_path):
    path = tmp_path / "v.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA lab")
    con.execute("CREATE TABLE lab.results (v DOUBLE)")
    con.close()
    with pytest.raises(CatalogError, match="lab.results"):
        Catalog.open(path)


def test_newer_schema_is_refused_unchanged(tmp_path):
    path = tmp_path / "c.duckdb"
    Catalog.open(path).execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'future')")
    before = _digest(path)
    with pytest.raises(CatalogError, match="schema version 999, newer than this MedQ"):
        Catalog.open(path)
    with pytest.raises(CatalogError, match="newer"):
        Catalog.open(path, read_only=True)
    assert _digest(path) == before


def test_older_schema_read_only_asks_for_init(tmp_path):
    path = tmp_path / "c.duckdb"
    Catalog.open(path).execute(f"DELETE FROM schema_migrations WHERE version = {LATEST_VERSION}")
    with pytest.raises(CatalogError, match="run `medq init`"):
        Catalog.open(path, read_only=True)


def test_folder_as_catalog_path(tmp_path):
    with pytest.raises(CatalogError, match="is a folder"):
        Catalog.open(tmp_path)
