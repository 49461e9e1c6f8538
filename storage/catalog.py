"""DuckDB catalog: the records every round, dashboard, resumed run and audit read.

Interface (all a caller needs):

- ``Catalog(path, read_only=False)`` then ``catalog.migrate()`` (``Catalog.open`` does both),
- ``catalog.upsert(table, rows)``: idempotent insert-or-update keyed by the table's primary key,
- ``with catalog.transaction() as tx: tx.upsert(...); tx.execute(...)``: all or nothing,
- ``catalog.query(sql, params)`` -> list of dicts, ``catalog.query_df(...)`` -> pandas,
  ``catalog.scalar(...)``.

Connections are opened per operation and closed right after, so another process (the dashboard,
a second CLI) can open the file between writes. DuckDB allows one writing process at a time: a
second process that tries while a write is in progress gets :class:`CatalogLockedError` (after
``lock_timeout_s``) instead of corrupting anything. JSON payloads are VARCHAR columns: values that
are dicts or lists are serialized on the way in; :func:`loads` reads them back.
"""
from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from medq.errors import MedQError

SCHEMA_TABLE = "schema_migrations"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DUCKDB_MAGIC = b"DUCK"  # bytes 8..12 of every DuckDB database file
# Never fetch or auto-load extensions: no downloads at run time, and a foreign file (SQLite, ...)
# must fail fast instead of DuckDB trying to install a scanner for it.
_CONNECT_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


class CatalogError(MedQError):
    """The catalog file is unusable (corrupt, foreign, newer schema) or a write was invalid."""


class CatalogLockedError(CatalogError):
    """Another process holds the catalog's write lock."""


def dumps(value: Any) -> str | None:
    """JSON text for a JSON column (None stays NULL)."""
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, default=_json_default)


def loads(text: str | None, default: Any = None) -> Any:
    return default if text is None or text == "" else json.loads(text)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every file in storage/migrations, in order."""
    found = []
    for entry in resources.files("medq.storage.migrations").iterdir():
        m = re.match(r"^(\d+)_(\w+)\.sql$", entry.name)
        if m:
            found.append((int(m.group(1)), m.group(2), entry.read_text()))
    return sorted(found)


LATEST_VERSION = max(v for v, _, _ in _migrations())


class CatalogTx:
    """Operations inside one open transaction (see :meth:`Catalog.transaction`)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, columns: dict[str, dict[str, str]],
                 primary_keys: dict[str, list[str]]):
        self.con = con
        self._columns = columns
        self._pks = primary_keys

    def execute(self, sql: str, params: Sequence[Any] | dict | None = None) -> None:
        self.con.execute(sql, params or [])

    def query(self, sql: str, params: Sequence[Any] | dict | None = None) -> list[dict]:
        cur = self.con.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def upsert(self, table: str, rows: Iterable[dict[str, Any]]) -> int:
        """Insert or update `rows` keyed by `table`'s primary key. Returns the number of distinct
        keys written.

        Only the columns present in a row are written on update, so an upsert that omits a column
        keeps its stored value (rows with different column sets are written per column set, never
        padding with NULL). Duplicates of a key inside one call are merged in order, later values
        winning, exactly as if they had been upserted one after the other."""
        if table not in self._columns:
            raise CatalogError(f"unknown catalog table {table!r}; tables: {sorted(self._columns)}")
        known = self._columns[table]
        pk = self._pks[table]
        merged: dict[tuple, dict] = {}
        for row in rows:
            unknown = [c for c in row if c not in known]
            if unknown:
                raise CatalogError(f"table {table!r} has no column(s) {unknown}; "
                                   f"columns: {list(known)}")
            missing = [k for k in pk if k not in row]
            if missing:
                raise CatalogError(f"upsert into {table!r} needs primary key column(s) {missing}")
            key = tuple(row[k] for k in pk)
            if any(v is None for v in key):
                raise CatalogError(f"upsert into {table!r}: primary key {pk} is NULL in {row!r:.200}")
            merged[key] = {**merged.get(key, {}), **row}
        groups: dict[tuple[str, ...], list[dict]] = {}
        for row in merged.values():
            groups.setdefault(tuple(c for c in known if c in row), []).append(row)
        try:
            for cols, group in groups.items():
                self._write(table, list(cols), group)
        except duckdb.Error as exc:
            raise CatalogError(f"upsert of {len(merged)} row(s) into {table!r} failed: {exc}") from exc
        return len(merged)

    def _write(self, table: str, cols: list[str], rows: list[dict]) -> None:
        known, pk = self._columns[table], self._pks[table]
        values = [[_encode(row[c], known[c]) for c in cols] for row in rows]
        updates = [c for c in cols if c not in pk]
        conflict = (f"DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in updates)}"
                    if updates else "DO NOTHING")
        insert = f"INSERT INTO {table} ({', '.join(cols)})"
        on_conflict = f"ON CONFLICT ({', '.join(pk)}) {conflict}"
        if len(values) <= 8:  # executemany costs ~30 ms a row; arrow is flat beyond a few rows
            placeholders = ", ".join("?" for _ in cols)
            self.con.executemany(f"{insert} VALUES ({placeholders}) {on_conflict}", values)
            return
        # Bulk path: one arrow relation instead of thousands of parameter bindings.
        # Arrow (not pandas) so that ints with NULLs are not widened to float.
        frame = pa.table({c: _arrow_column([v[i] for v in values]) for i, c in enumerate(cols)})
        self.con.register("_medq_upsert", frame)
        try:
            select = ", ".join(f"CAST({c} AS {known[c]})" for c in cols)
            self.con.execute(f"{insert} SELECT {select} FROM _medq_upsert {on_conflict}")
        finally:
            with contextlib.suppress(duckdb.Error):  # an aborted transaction refuses this too
                self.con.unregister("_medq_upsert")


def _arrow_column(values: list[Any]) -> pa.Array:
    """Arrow array with the type inferred from all values; mixed types fall back to text (the
    INSERT casts every column to the table's type anyway)."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def _encode(value: Any, sql_type: str) -> Any:
    if sql_type == "VARCHAR" and (isinstance(value, (dict, list, tuple))
                                  or getattr(value, "ndim", 0) > 0):
        return dumps(value)  # JSON column (numpy arrays become lists)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()  # numpy scalar
    return value


class Catalog:
    """The MedQ catalog in one DuckDB file (see module docstring)."""

    # Per thread: resolved path -> [connection, read_only, open transaction depth]. Shared by all
    # Catalog objects of one path so that nested calls on a thread reuse one connection (DuckDB
    # refuses a second in-process connection to the same file with another configuration).
    _local = threading.local()

    def __init__(self, path: Path | str, *, read_only: bool = False, lock_timeout_s: float = 0.0):
        self.path = Path(path).expanduser().resolve()
        self.read_only = read_only
        self.lock_timeout_s = lock_timeout_s
        self._columns: dict[str, dict[str, str]] = {}
        self._pks: dict[str, list[str]] = {}

    @classmethod
    def open(cls, path: Path | str, *, read_only: bool = False, lock_timeout_s: float = 0.0
             ) -> Catalog:
        """Open (and, unless read-only, create or migrate) the catalog at `path`."""
        cat = cls(path, read_only=read_only, lock_timeout_s=lock_timeout_s)
        if read_only:
            if not cat.path.is_file():
                raise CatalogError(f"no catalog at {cat.path} (run `medq init` first)")
            cat._check_version(allow_older=False)
        else:
            cat.migrate()
        return cat

    # -- connections -------------------------------------------------------------------------
    def _open_slot(self) -> list | None:
        slots = self._local.__dict__.setdefault("slots", {})
        return slots.get(str(self.path))

    @contextlib.contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection; reuses the one already open on this thread (nesting)."""
        slot = self._open_slot()
        if slot is not None:
            if slot[1] and not self.read_only:
                raise CatalogError(f"catalog {self.path} is open read-only on this thread; "
                                   "a write cannot nest inside a read-only operation")
            yield slot[0]
            return
        con = self._open_connection()
        slots = self._local.__dict__.setdefault("slots", {})
        slots[str(self.path)] = [con, self.read_only, 0]
        try:
            yield con
        finally:
            slots.pop(str(self.path), None)
            con.close()

    def _check_header(self) -> None:
        """Refuse a file that is not a DuckDB database before DuckDB touches it."""
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(16)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise CatalogError(f"catalog {self.path} cannot be read: {exc}") from exc
        if head[8:12] != _DUCKDB_MAGIC:
            what = "an empty file" if not head else "not a DuckDB database (corrupt or foreign file)"
            raise CatalogError(f"catalog {self.path} is {what}; move it away or point "
                               "catalog.path elsewhere")

    def _open_connection(self) -> duckdb.DuckDBPyConnection:
        if self.path.is_dir():
            raise CatalogError(f"catalog path {self.path} is a folder, not a DuckDB file")
        if self.read_only and not self.path.is_file():
            raise CatalogError(f"no catalog at {self.path} (run `medq init` first)")
        self._check_header()
        if not self.read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=self.read_only,
                                      config=dict(_CONNECT_CONFIG))
            except duckdb.ConnectionException as exc:
                raise CatalogError(f"catalog {self.path} is already open in this process in "
                                   f"another mode (read-only vs read-write): {exc}") from exc
            except duckdb.IOException as exc:
                msg = str(exc)
                if "lock" in msg.lower():
                    if time.monotonic() < deadline:
                        time.sleep(0.1)
                        continue
                    raise CatalogLockedError(
                        f"catalog {self.path} is in use by another process ({_lock_holder(msg)}); "
                        "wait for it to finish or stop it, then retry") from exc
                raise CatalogError(f"catalog {self.path} cannot be opened: {msg}") from exc
            except duckdb.Error as exc:
                raise CatalogError(f"catalog {self.path} is not a DuckDB database "
                                   f"(corrupt or foreign file): {exc}") from exc

    @contextlib.contextmanager
    def transaction(self) -> Iterator[CatalogTx]:
        """One all-or-nothing unit of work; rolled back on any exception.

        A transaction opened while another is open on this thread (e.g. ``catalog.upsert`` inside
        ``with catalog.transaction()``) joins the outer one: it commits or rolls back with it."""
        if self.read_only:
            raise CatalogError(f"catalog {self.path} was opened read-only")
        with self.connect() as con:
            self._load_layout(con)
            slot = self._open_slot()
            assert slot is not None  # connect() above registered this thread's connection
            if slot[2] > 0:  # nested: part of the outer transaction
                slot[2] += 1
                try:
                    yield CatalogTx(con, self._columns, self._pks)
                finally:
                    slot[2] -= 1
                return
            con.execute("BEGIN TRANSACTION")
            slot[2] = 1
            try:
                yield CatalogTx(con, self._columns, self._pks)
            except BaseException:
                slot[2] = 0
                with contextlib.suppress(duckdb.Error):  # keep the original error visible
                    con.execute("ROLLBACK")
                raise
            slot[2] = 0
            try:
                con.execute("COMMIT")
            except duckdb.Error as exc:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise CatalogError(f"commit to catalog {self.path} failed: {exc}") from exc

    # -- schema ------------------------------------------------------------------------------
    def schema_version(self) -> int:
        """Applied schema version (0 for an empty new file)."""
        with self.connect() as con:
            return self._version(con)

    def _version(self, con: duckdb.DuckDBPyConnection) -> int:
        # Every user object in any schema counts: a file with only views or non-main tables is
        # just as foreign as one with tables in main.
        objects = {r[0] for r in con.execute(
            "SELECT CASE WHEN schema_name = 'main' THEN table_name ELSE schema_name || '.' || "
            "table_name END FROM duckdb_tables() WHERE NOT internal AND database_name = "
            "current_database() UNION ALL SELECT view_name FROM duckdb_views() WHERE NOT internal "
            "AND NOT temporary AND database_name = current_database()").fetchall()}
        if SCHEMA_TABLE not in objects:
            if objects:
                raise CatalogError(
                    f"{self.path} is a DuckDB file but not a MedQ catalog (it holds "
                    f"{sorted(objects)[:8]}); point catalog.path elsewhere")
            return 0
        return int(_aggregate(con, f"SELECT max(version) FROM {SCHEMA_TABLE}") or 0)

    def _check_version(self, *, allow_older: bool) -> int:
        version = self.schema_version()
        if version > LATEST_VERSION:
            raise CatalogError(f"catalog {self.path} has schema version {version}, newer than this "
                               f"MedQ ({LATEST_VERSION}); upgrade MedQ")
        if not allow_older and version < LATEST_VERSION:
            raise CatalogError(f"catalog {self.path} has schema version {version}; run "
                               f"`medq init` to migrate to {LATEST_VERSION}")
        return version

    def migrate(self) -> list[int]:
        """Apply pending migrations, each in its own transaction. Returns the versions applied."""
        applied = []
        with self.connect() as con:
            current = self._version(con)
            if current > LATEST_VERSION:
                raise CatalogError(f"catalog {self.path} has schema version {current}, newer than "
                                   f"this MedQ ({LATEST_VERSION}); upgrade MedQ")
            for version, name, sql in _migrations():
                if version <= current:
                    continue
                con.execute("BEGIN TRANSACTION")
                try:
                    if version == 1:
                        con.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version INTEGER "
                                    "PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP DEFAULT "
                                    "current_timestamp)")
                    con.execute(sql)
                    con.execute(f"INSERT INTO {SCHEMA_TABLE} (version, name) VALUES (?, ?)",
                                [version, name])
                    con.execute("COMMIT")
                except Exception as exc:
                    with contextlib.suppress(duckdb.Error):
                        con.execute("ROLLBACK")
                    raise CatalogError(f"migration {version}_{name} failed on {self.path}: {exc}") from exc
                applied.append(version)
            self._columns, self._pks = {}, {}
            self._load_layout(con)
        return applied

    def _load_layout(self, con: duckdb.DuckDBPyConnection) -> None:
        if self._columns:
            return
        for table, column, dtype in con.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position").fetchall():
            self._columns.setdefault(table, {})[column] = dtype
        for table, cols in con.execute(
                "SELECT table_name, constraint_column_names FROM duckdb_constraints() "
                "WHERE constraint_type = 'PRIMARY KEY'").fetchall():
            self._pks[table] = list(cols)

    # -- convenience -------------------------------------------------------------------------
    def upsert(self, table: str, rows: Iterable[dict[str, Any]]) -> int:
        with self.transaction() as tx:
            return tx.upsert(table, rows)

    def execute(self, sql: str, params: Sequence[Any] | dict | None = None) -> None:
        with self.transaction() as tx:
            tx.execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] | dict | None = None) -> list[dict]:
        with self.connect() as con:
            cur = con.execute(sql, params or [])
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def query_df(self, sql: str, params: Sequence[Any] | dict | None = None) -> pd.DataFrame:
        with self.connect() as con:
            return con.execute(sql, params or []).df()

    def scalar(self, sql: str, params: Sequence[Any] | dict | None = None) -> Any:
        with self.connect() as con:
            row = con.execute(sql, params or []).fetchone()
            return None if row is None else row[0]

    def tables(self) -> dict[str, int]:
        """Row count of every table (for `medq status`)."""
        with self.connect() as con:
            self._load_layout(con)
            return {t: int(_aggregate(con, f"SELECT count(*) FROM {t}"))
                    for t in sorted(self._columns) if _IDENT.match(t)}

    def step_done(self, round_id: str, step: str) -> dict | None:
        """The checkpoint of `step` in `round_id`, or None if it has not finished."""
        rows = self.query("SELECT status, info FROM round_steps WHERE round_id = ? AND step = ? "
                          "AND status = 'done'", [round_id, step])
        return {"status": rows[0]["status"], "info": loads(rows[0]["info"], {})} if rows else None


def _lock_holder(msg: str) -> str:
    m = re.search(r"PID (\d+)", msg)
    return f"PID {m.group(1)}" if m else "another DuckDB process"


def _aggregate(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    """The value of a one-column aggregate query without GROUP BY (which always yields one row)."""
    row = con.execute(sql).fetchone()
    assert row is not None  # an aggregate without GROUP BY returns exactly one row
    return row[0]
