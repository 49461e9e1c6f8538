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
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import duckdb
import pandas as pd

from medq.errors import MedQError

SCHEMA_TABLE = "schema_migrations"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
        """Insert or update `rows` keyed by `table`'s primary key. Returns the row count.

        Only the columns present in the rows are written on update, so an upsert that omits a
        column keeps its stored value. Later duplicates of a key inside one call win."""
        if table not in self._columns:
            raise CatalogError(f"unknown catalog table {table!r}; tables: {sorted(self._columns)}")
        rows = list(rows)
        if not rows:
            return 0
        known = self._columns[table]
        cols: list[str] = []
        for row in rows:
            for c in row:
                if c not in cols:
                    cols.append(c)
        unknown = [c for c in cols if c not in known]
        if unknown:
            raise CatalogError(f"table {table!r} has no column(s) {unknown}; columns: {list(known)}")
        pk = self._pks[table]
        missing = [k for k in pk if k not in cols]
        if missing:
            raise CatalogError(f"upsert into {table!r} needs primary key column(s) {missing}")
        dedup: dict[tuple, dict] = {}
        for row in rows:
            key = tuple(row.get(k) for k in pk)
            if any(v is None for v in key):
                raise CatalogError(f"upsert into {table!r}: primary key {pk} is NULL in {row!r:.200}")
            dedup[key] = row
        values = [[_encode(row.get(c), known[c]) for c in cols] for row in dedup.values()]
        placeholders = ", ".join("?" for _ in cols)
        updates = [c for c in cols if c not in pk]
        conflict = (f"DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in updates)}"
                    if updates else "DO NOTHING")
        sql = (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({placeholders}) "
               f"ON CONFLICT ({', '.join(pk)}) {conflict}")
        if len(values) > 2000:
            # Bulk path: one arrow relation instead of thousands of parameter bindings.
            frame = pd.DataFrame(values, columns=cols)
            self.con.register("_medq_upsert", frame)
            try:
                select = ", ".join(f"CAST({c} AS {known[c]})" for c in cols)
                self.con.execute(
                    f"INSERT INTO {table} ({', '.join(cols)}) SELECT {select} FROM _medq_upsert "
                    f"ON CONFLICT ({', '.join(pk)}) {conflict}")
            finally:
                self.con.unregister("_medq_upsert")
        else:
            self.con.executemany(sql, values)
        return len(values)


def _encode(value: Any, sql_type: str) -> Any:
    if isinstance(value, (dict, list, tuple)) and sql_type == "VARCHAR":
        return dumps(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()  # numpy scalar
    return value


class Catalog:
    """The MedQ catalog in one DuckDB file (see module docstring)."""

    _local = threading.local()

    def __init__(self, path: Path | str, *, read_only: bool = False, lock_timeout_s: float = 0.0):
        self.path = Path(path)
        self.read_only = read_only
        self.lock_timeout_s = lock_timeout_s
        self._columns: dict[str, dict[str, str]] = {}
        self._pks: dict[str, list[str]] = {}

    @classmethod
    def open(cls, path: Path | str, *, read_only: bool = False, lock_timeout_s: float = 0.0
             ) -> "Catalog":
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
    @contextlib.contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection; reuses the one already open on this thread (nesting)."""
        existing = getattr(self._local, "con", None)
        if existing is not None and getattr(self._local, "path", None) == self.path:
            yield existing
            return
        con = self._open_connection()
        self._local.con, self._local.path = con, self.path
        try:
            yield con
        finally:
            self._local.con = None
            con.close()

    def _open_connection(self) -> duckdb.DuckDBPyConnection:
        if not self.read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=self.read_only)
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
        """One all-or-nothing unit of work; rolled back on any exception."""
        if self.read_only:
            raise CatalogError(f"catalog {self.path} was opened read-only")
        with self.connect() as con:
            self._load_layout(con)
            con.execute("BEGIN TRANSACTION")
            try:
                yield CatalogTx(con, self._columns, self._pks)
            except BaseException:
                con.execute("ROLLBACK")
                raise
            else:
                con.execute("COMMIT")

    # -- schema ------------------------------------------------------------------------------
    def schema_version(self) -> int:
        """Applied schema version (0 for an empty new file)."""
        with self.connect() as con:
            return self._version(con)

    def _version(self, con: duckdb.DuckDBPyConnection) -> int:
        tables = {r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
        if SCHEMA_TABLE not in tables:
            if tables:
                raise CatalogError(
                    f"{self.path} is a DuckDB file but not a MedQ catalog (tables: "
                    f"{sorted(tables)[:8]}); point catalog.path elsewhere")
            return 0
        row = con.execute(f"SELECT max(version) FROM {SCHEMA_TABLE}").fetchone()
        return int(row[0] or 0)

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
            return {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
                    for t in sorted(self._columns) if _IDENT.match(t)}

    def step_done(self, round_id: str, step: str) -> dict | None:
        """The checkpoint of `step` in `round_id`, or None if it has not finished."""
        rows = self.query("SELECT status, info FROM round_steps WHERE round_id = ? AND step = ? "
                          "AND status = 'done'", [round_id, step])
        return {"status": rows[0]["status"], "info": loads(rows[0]["info"], {})} if rows else None


def _lock_holder(msg: str) -> str:
    m = re.search(r"PID (\d+)", msg)
    return f"PID {m.group(1)}" if m else "another DuckDB process"
