"""A pool of a million images without a million files: the pool manifest on disk.

- :func:`build_manifest` writes the rows of :func:`medq.engine.manifest.manifest_rows` to a
  Parquet file block by block (one row group per block of 65,536 rows, zstd), atomically, with
  the generation parameters in the file's metadata. 1,000,000 rows take well under a minute and
  about 40 MB (see benchmarks/manifest_build.py).
- :class:`PoolManifest` opens one and renders rows (by row number or image id) on demand,
  identical every time; base images are loaded once and kept in memory.
- :func:`register_pool` makes a manifest a pool of a workspace: the file is copied into
  ``<workspace>/manifests/<manifest_id>.parquet`` and every row becomes an ``images`` row
  (``source_format='manifest'``, ``manifest_row``, ``object_key`` NULL,
  ``source_uri='manifest:<manifest_id>#<row>'``), a pool item (``pool:image:<image_id>``,
  ``kind='image'``, no labels) and an ``oracle_labels`` row (ground truth for simulated
  annotators). Inserted in bulk chunks, each chunk one transaction; rows that exist are left as
  they are, so registering twice changes nothing.
- :func:`render_for_workspace` renders catalog image ids that live in a registered manifest
  (used by :func:`medq.storage.images.load_images`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medq.engine import taxonomy
from medq.engine.manifest import (
    BLOCK,
    MANIFEST_FORMAT,
    SCHEMA,
    manifest_rows,
    render_row,
    row_degradations,
)
from medq.engine.questions import describe
from medq.engine.world_plan import Mix, Selection, base_size
from medq.errors import MedQError
from medq.storage import base_images as sources

META_KEY = b"medq_manifest"
MANIFEST_DIR = "manifests"
SOURCE_PREFIX = "manifest:"

Progress = Callable[[int, int, str], None]


class ManifestError(MedQError):
    """A manifest file is missing, not a MedQ manifest, or does not hold a requested row."""


def _refs(mix: Mix, image_size: int) -> dict[str, list[str]]:
    return {m: [b.ref for b in sources.base_refs(m, min_native=image_size)]
            for m, w in mix.modalities.items() if w > 0}


def manifest_id(meta: dict) -> str:
    """Stable id of a manifest: sha256 of its generation parameters (16 hex chars)."""
    keys = ("format", "size", "seed", "image_size", "mix", "rare", "refs")
    canon = json.dumps({k: meta.get(k) for k in keys}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


@dataclass
class ManifestBuilt:
    path: str
    manifest_id: str
    rows: int
    bytes: int
    seconds: float
    verdicts: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def build_manifest(out_path: Path | str, size: int, seed: int = 0, *, mix: Mix | None = None,
                   rare: Selection | None = None, image_size: int = 128,
                   progress: Progress | None = None) -> ManifestBuilt:
    """Write a pool manifest of `size` rows to `out_path` (Parquet, atomically)."""
    import time
    t0 = time.perf_counter()
    if size < 1:
        raise ManifestError(f"manifest size must be at least 1, got {size}")
    if not 32 <= image_size <= 1024:
        raise ManifestError(f"image_size must be 32-1024 px, got {image_size}")
    mix = (mix or Mix()).validate("manifest mix")
    refs = _refs(mix, image_size)
    meta: dict[str, Any] = {
        "format": MANIFEST_FORMAT, "size": int(size), "seed": int(seed),
        "image_size": int(image_size), "block": BLOCK, "mix": mix.to_dict(),
        "rare": rare.to_dict() if rare else None, "refs": refs,
        "bases": {ref: sources.all_refs()[ref].provenance() for rs in refs.values() for ref in rs}}
    meta["manifest_id"] = manifest_id(meta)
    schema = SCHEMA.with_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    verdicts = {v: 0 for v in taxonomy.VERDICTS}
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd", compression_level=3) as writer:
            for start in range(0, size, BLOCK):
                stop = min(size, start + BLOCK)
                table = manifest_rows(size, seed, mix, refs, start=start, stop=stop,
                                      image_size=image_size, rare=rare)
                for v, n in zip(*np.unique(table.column("verdict").to_numpy(zero_copy_only=False),
                                           return_counts=True)):
                    verdicts[str(v)] += int(n)
                writer.write_table(table.replace_schema_metadata(schema.metadata),
                                   row_group_size=BLOCK)
                if progress:
                    progress(stop, size, "manifest")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return ManifestBuilt(str(out), meta["manifest_id"], int(size), out.stat().st_size,
                         round(time.perf_counter() - t0, 3), verdicts)


class PoolManifest:
    """A manifest file opened for reading and rendering."""

    def __init__(self, path: Path | str, cache_groups: int = 4):
        self.path = Path(path)
        if not self.path.is_file():
            raise ManifestError(f"pool manifest not found: {self.path}")
        try:
            self._file = pq.ParquetFile(self.path)
        except Exception as exc:
            raise ManifestError(f"{self.path}: not a readable Parquet file: {exc}") from exc
        raw = (self._file.schema_arrow.metadata or {}).get(META_KEY)
        if raw is None:
            raise ManifestError(f"{self.path}: Parquet file has no MedQ manifest metadata")
        self.meta = json.loads(raw)
        if self.meta.get("format") != MANIFEST_FORMAT:
            raise ManifestError(f"{self.path}: manifest format {self.meta.get('format')!r}, "
                                f"expected {MANIFEST_FORMAT!r}")
        self.manifest_id: str = self.meta["manifest_id"]
        self.image_size: int = int(self.meta["image_size"])
        self.block: int = int(self.meta.get("block", BLOCK))
        self._groups: OrderedDict[int, pa.Table] = OrderedDict()
        self._cache_groups = cache_groups
        self._lock = threading.Lock()  # one Parquet reader shared by callers on several threads

    def __len__(self) -> int:
        return self._file.metadata.num_rows

    def _group(self, g: int) -> pa.Table:
        with self._lock:
            if g in self._groups:
                self._groups.move_to_end(g)
                return self._groups[g]
            table = self._file.read_row_group(g)
            self._groups[g] = table
            if len(self._groups) > self._cache_groups:
                self._groups.popitem(last=False)
            return table

    def rows(self, rows: Sequence[int]) -> list[dict]:
        """The manifest rows (as dicts of columns) with these row numbers, in order."""
        out = []
        n = len(self)
        for r in rows:
            r = int(r)
            if not 0 <= r < n:
                raise ManifestError(f"{self.path}: row {r} out of range (manifest has {n} rows)")
            row = self._group(r // self.block).slice(r % self.block, 1).to_pylist()[0]
            if row["row"] != r:  # row groups are whole blocks; anything else is a foreign file
                raise ManifestError(f"{self.path}: row {r} holds row number {row['row']}")
            out.append(row)
        return out

    def find(self, image_ids: Sequence[str]) -> list[int]:
        """Row numbers of `image_ids` (scans the id column once per call)."""
        wanted = list(image_ids)
        with self._lock:
            table = self._file.read(columns=["row", "image_id"])
        mask = pc.is_in(table.column("image_id"), value_set=pa.array(wanted, pa.string()))
        hits = table.filter(mask)
        where = dict(zip(hits.column("image_id").to_pylist(), hits.column("row").to_pylist()))
        missing = [i for i in wanted if i not in where]
        if missing:
            raise ManifestError(f"{self.path}: {len(missing)} image id(s) not in the manifest, "
                                f"e.g. {missing[0]}")
        return [where[i] for i in wanted]

    def bases(self, refs) -> dict[str, np.ndarray]:
        return sources.base_lookup(refs, base_size(self.image_size))

    def render(self, which: Sequence[int] | Sequence[str]) -> list[np.ndarray]:
        """Images of rows given by row numbers or by image ids (not mixed), in order."""
        chosen = list(which)
        if not chosen:
            return []
        # not mixed: the first entry tells which of the two kinds all of them are
        rows = self.rows(self.find(cast("list[str]", chosen)) if isinstance(chosen[0], str)
                         else cast("list[int]", chosen))
        bases = self.bases({r["base_ref"] for r in rows})
        return [render_row(r, bases) for r in rows]


# -- workspace registration -----------------------------------------------------------------------

@dataclass
class PoolRegistered:
    manifest_id: str
    path: str
    rows: int
    images_new: int
    items_new: int
    oracle_new: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def workspace_manifest_path(workspace, mid: str) -> Path:
    return workspace.root / MANIFEST_DIR / f"{mid}.parquet"


def _install(workspace, manifest: PoolManifest) -> Path:
    """Copy (or hard-link) the manifest into the workspace so the workspace is self-contained."""
    target = workspace_manifest_path(workspace, manifest.manifest_id)
    if target.is_file() and target.stat().st_size == manifest.path.stat().st_size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(manifest.path, tmp)
    except OSError:
        shutil.copyfile(manifest.path, tmp)
    os.replace(tmp, target)
    return target


def _channels(refs) -> dict[str, int]:
    known = sources.all_refs()
    missing = [r for r in refs if r not in known]
    if missing:
        raise ManifestError(f"manifest uses base image(s) this installation does not have, e.g. "
                            f"{missing[0]!r}")
    return {ref: known[ref].channels for ref in refs}


def register_pool(workspace, manifest_path: Path | str, *, chunk: int = BLOCK,
                  progress: Progress | None = None) -> PoolRegistered:
    """Register every row of a manifest as a pool image of `workspace` (see module docstring).
    Idempotent: existing rows are kept."""
    import time
    t0 = time.perf_counter()
    manifest = PoolManifest(manifest_path)
    _install(workspace, manifest)
    mid = manifest.manifest_id
    size = manifest.image_size
    channels = _channels({r for rs in manifest.meta["refs"].values() for r in rs})
    catalog = workspace.catalog
    before = {t: catalog.scalar(f"SELECT count(*) FROM {t}")
              for t in ("images", "items", "oracle_labels")}
    total = len(manifest)
    done = 0
    cols = ["row", "image_id", "modality", "base_ref", "degradations", "verdict", "seed"]
    parsed: dict[str, list] = {}  # few distinct degradation lists: parse each JSON text once
    for batch in manifest._file.iter_batches(batch_size=chunk, columns=cols):
        t = pa.Table.from_batches([batch])
        t = _not_registered(catalog, t)
        if t.num_rows:
            _insert_chunk(catalog, t, mid, size, channels, parsed)
        done += batch.num_rows
        if progress:
            progress(done, total, "register")
    after = {t: catalog.scalar(f"SELECT count(*) FROM {t}")
             for t in ("images", "items", "oracle_labels")}
    return PoolRegistered(mid, str(workspace_manifest_path(workspace, mid)), total,
                          after["images"] - before["images"], after["items"] - before["items"],
                          after["oracle_labels"] - before["oracle_labels"],
                          round(time.perf_counter() - t0, 3))


def _not_registered(catalog, t: pa.Table) -> pa.Table:
    """Rows of `t` whose image, pool item or oracle label is missing (a re-run skips the rest
    without generating their descriptions again)."""
    with catalog.connect() as con:
        con.register("_medq_chunk_ids", t.select(["image_id"]))
        try:
            done = con.execute(
                "SELECT c.image_id FROM _medq_chunk_ids c "
                "JOIN images i ON i.image_id = c.image_id "
                "JOIN oracle_labels o ON o.image_id = c.image_id "
                "JOIN items it ON it.item_id = 'pool:image:' || c.image_id").fetchall()
        finally:
            con.unregister("_medq_chunk_ids")
    if not done:
        return t
    registered = pa.array([r[0] for r in done], pa.string())
    return t.filter(pc.invert(pc.is_in(t.column("image_id"), value_set=registered)))


def _insert_chunk(catalog, t: pa.Table, mid: str, size: int, channels: dict[str, int],
                  parsed: dict[str, list]) -> None:
    n = t.num_rows
    rows = t.column("row").to_numpy()
    ids = t.column("image_id").to_pylist()
    mods = t.column("modality").to_pylist()
    refs = t.column("base_ref").to_pylist()
    degs = t.column("degradations").to_pylist()
    verdicts = t.column("verdict").to_pylist()
    seeds = t.column("seed").to_pylist()
    for d in set(degs) - parsed.keys():
        parsed[d] = json.loads(d)
    descriptions = [describe(m, parsed[d], v, seed=s)
                    for m, d, v, s in zip(mods, degs, verdicts, seeds)]
    images = pa.table({
        "image_id": ids, "source_uri": [f"{SOURCE_PREFIX}{mid}#{r}" for r in rows.tolist()],
        "source_format": ["manifest"] * n, "modality": mods,
        "width": np.full(n, size, np.int32), "height": np.full(n, size, np.int32),
        "channels": np.array([channels[r] for r in refs], np.int32),
        "manifest_row": rows.astype(np.int64)})
    items = pa.table({
        "item_id": [f"pool:image:{i}" for i in ids], "split": ["pool"] * n,
        "kind": ["image"] * n, "image_id": ids, "modality": mods,
        "source": [f"manifest:{mid}"] * n})
    oracle = pa.table({"image_id": ids, "modality": mods, "verdict": verdicts,
                       "degradations": degs, "description": descriptions})
    with catalog.transaction() as tx:
        tx.con.execute("SET enable_progress_bar = false")
        for name, table, key in (("images", images, "image_id"), ("items", items, "item_id"),
                                 ("oracle_labels", oracle, "image_id")):
            tx.con.register("_medq_manifest_rows", table)
            try:
                tx.con.execute(f"INSERT INTO {name} ({', '.join(table.column_names)}) "
                               f"SELECT * FROM _medq_manifest_rows ON CONFLICT ({key}) DO NOTHING")
            finally:
                tx.con.unregister("_medq_manifest_rows")


_OPEN: dict[Path, PoolManifest] = {}
_OPEN_LOCK = threading.Lock()


def _open(path: Path) -> PoolManifest:
    with _OPEN_LOCK:
        if path not in _OPEN:
            _OPEN[path] = PoolManifest(path)
        return _OPEN[path]


def render_for_workspace(workspace, image_ids: Sequence[str]) -> list[np.ndarray]:
    """Render catalog images that live in a registered manifest, in the order of `image_ids`.
    Checks that each manifest row still has the catalog's image id."""
    ids = list(image_ids)
    if not ids:
        return []
    found = {r["image_id"]: r for r in workspace.catalog.query(
        "SELECT image_id, source_uri, manifest_row FROM images WHERE image_id IN "
        "(SELECT unnest(?::VARCHAR[]))", [ids])}
    by_manifest: dict[str, list[str]] = {}
    for i in ids:
        r = found.get(i)
        if r is None or not str(r["source_uri"] or "").startswith(SOURCE_PREFIX) \
                or r["manifest_row"] is None:
            raise ManifestError(f"image {i} is not a manifest image of workspace {workspace.root}")
        mid = r["source_uri"][len(SOURCE_PREFIX):].split("#", 1)[0]
        by_manifest.setdefault(mid, []).append(i)
    out: dict[str, np.ndarray] = {}
    for mid, group in by_manifest.items():
        manifest = _open(workspace_manifest_path(workspace, mid))
        rows = manifest.rows([found[i]["manifest_row"] for i in group])
        for i, row in zip(group, rows):
            if row["image_id"] != i:
                raise ManifestError(f"manifest {mid} row {row['row']} holds image "
                                    f"{row['image_id']}, the catalog expects {i}")
        bases = manifest.bases({r["base_ref"] for r in rows})
        for i, row in zip(group, rows):
            out[i] = render_row(row, bases)
    return [out[i] for i in ids]


__all__ = [
    "ManifestBuilt",
    "ManifestError",
    "PoolManifest",
    "PoolRegistered",
    "build_manifest",
    "register_pool",
    "render_for_workspace",
    "row_degradations",
]
