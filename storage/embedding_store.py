"""Pool embedding store: image id <-> int64 vector id <-> embedding, sharded in the object store.

A million-image pool needs its embeddings (32-128 float32 each: 128-512 MB at 1M x 64-128) for
index (re)builds, exact re-ranking, recall checks and candidate diversity, without keeping them
all in RAM. Layout under the object store, per embedder version::

    embeddings/<embedder_version>/<shard>.vec.npy   float32 (n, d)
    embeddings/<embedder_version>/<shard>.ids.npy   structured (n,): vid int64, image_id bytes

Shards are immutable and content-named (hash of their vector ids), so writing the same batch
twice (a re-run after a crash) writes the same objects. The ``.ids.npy`` object is written last and
marks the shard complete. Reading downloads shards into a local cache folder and memory-maps them;
only the id columns (16 + len(image id) bytes per vector) are held in RAM for lookups.

Vector ids are derived from image ids (:func:`vector_id`: first 63 bits of sha256), so any process
computes the same id without a shared counter; a collision (odds about 5e-8 at 1M images) is
detected on write and refused.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import numpy.typing as npt

from medq.errors import MedQError

PREFIX = "embeddings"


class EmbeddingStoreError(MedQError):
    """Missing ids, shape mismatches or corrupt shards in the pool embedding store."""


def vector_id(image_id: str) -> int:
    """Stable non-negative int64 id of an image id (first 63 bits of its sha256)."""
    return int.from_bytes(hashlib.sha256(image_id.encode("utf-8")).digest()[:8], "big") >> 1


def vector_ids(image_ids: Sequence[str]) -> np.ndarray:
    """(n,) int64 vector ids of `image_ids`."""
    return np.fromiter((vector_id(i) for i in image_ids), dtype=np.int64, count=len(image_ids))


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


class EmbeddingStore:
    """Append-only embeddings of pool images for one embedder version (see module docstring).

    `objects`: a :class:`medq.storage.objects.ObjectStore`; `cache_dir`: local folder for the
    memory-mapped shard copies (e.g. ``settings.index_root / "cache"``)."""

    def __init__(self, objects, embedder_version: str, cache_dir: Path | str):
        if not embedder_version or "/" in embedder_version:
            raise EmbeddingStoreError(f"embedding store: bad embedder version {embedder_version!r}")
        self.objects = objects
        self.embedder_version = embedder_version
        self.prefix = f"{PREFIX}/{embedder_version}/"
        self.cache_dir = Path(cache_dir) / embedder_version
        self._shards: list[str] = []
        self._vec: list[np.ndarray] = []
        self._ids: list[np.ndarray] = []
        self._dim: int | None = None
        self._reset_lookup()
        self.refresh()

    # -- loading ---------------------------------------------------------------------------
    def _reset_lookup(self) -> None:
        self._sorted_vids: npt.NDArray[np.int64] = np.zeros(0, np.int64)
        self._sorted_shard: npt.NDArray[np.int32] = np.zeros(0, np.int32)
        self._sorted_row: npt.NDArray[np.int64] = np.zeros(0, np.int64)

    def _load_shard(self, name: str) -> None:
        paths = {}
        for part in ("vec", "ids"):
            key = f"{self.prefix}{name}.{part}.npy"
            path = self.cache_dir / f"{name}.{part}.npy"
            if not path.is_file():
                self.objects.download(key, path)
            paths[part] = path
        try:
            vec = np.load(paths["vec"], mmap_mode="r", allow_pickle=False)
            ids = np.load(paths["ids"], mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise EmbeddingStoreError(f"embedding shard {self.prefix}{name} is corrupt: {exc}") from exc
        if vec.ndim != 2 or ids.shape != (vec.shape[0],) or ids.dtype.names != ("vid", "image_id"):
            raise EmbeddingStoreError(f"embedding shard {self.prefix}{name}: inconsistent arrays "
                                      f"{vec.shape} / {ids.shape}")
        if self._dim is not None and vec.shape[1] != self._dim:
            raise EmbeddingStoreError(f"embedding shard {self.prefix}{name} has d={vec.shape[1]}, "
                                      f"store has d={self._dim}")
        self._dim = int(vec.shape[1])
        self._shards.append(name)
        self._vec.append(vec)
        self._ids.append(ids)

    def refresh(self) -> None:
        """Pick up shards written since opening (by this or another process)."""
        names = sorted(k[len(self.prefix):-len(".ids.npy")] for k in self.objects.list(self.prefix)
                       if k.endswith(".ids.npy"))
        new = [n for n in names if n not in set(self._shards)]
        for name in new:
            self._load_shard(name)
        if new or not len(self._sorted_vids):
            self._rebuild_lookup()

    def _rebuild_lookup(self) -> None:
        if not self._ids:
            self._reset_lookup()
            return
        vids = np.concatenate([np.asarray(i["vid"]) for i in self._ids])
        shard = np.concatenate([np.full(len(i), s, np.int32) for s, i in enumerate(self._ids)])
        row = np.concatenate([np.arange(len(i), dtype=np.int64) for i in self._ids])
        # a vid present in two shards (two writers raced) counts once: the first shard wins
        uniq, first = np.unique(vids, return_index=True)
        self._sorted_vids, self._sorted_shard, self._sorted_row = uniq, shard[first], row[first]

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(len(self._sorted_vids))

    @property
    def dim(self) -> int | None:
        return self._dim

    @property
    def vids(self) -> np.ndarray:
        """All vector ids, sorted (int64, a read-only view)."""
        view = self._sorted_vids.view()
        view.flags.writeable = False
        return view

    def _locate(self, vids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions in the sorted lookup and whether each vid is present."""
        pos = np.searchsorted(self._sorted_vids, vids)
        pos = np.minimum(pos, max(len(self._sorted_vids) - 1, 0))
        found = (self._sorted_vids[pos] == vids) if len(self._sorted_vids) else np.zeros(len(vids), bool)
        return pos, found

    def contains_vids(self, vids: np.ndarray) -> np.ndarray:
        return self._locate(np.asarray(vids, np.int64))[1]

    def contains(self, image_ids: Sequence[str]) -> np.ndarray:
        """(n,) bool: which image ids have an embedding."""
        return self.contains_vids(vector_ids(list(image_ids)))

    def get_by_vid(self, vids: np.ndarray | Sequence[int]) -> np.ndarray:
        """(n, d) float32 embeddings of vector ids (raises on an unknown id)."""
        vids = np.asarray(vids, np.int64)
        pos, found = self._locate(vids)
        if not found.all():
            raise EmbeddingStoreError(f"embedding store {self.prefix}: no vector for id "
                                      f"{int(vids[~found][0])} ({int((~found).sum())} missing)")
        out = np.empty((len(vids), self._dim or 0), np.float32)
        shard, row = self._sorted_shard[pos], self._sorted_row[pos]
        for s in np.unique(shard):
            sel = np.where(shard == s)[0]
            order = np.argsort(row[sel])  # ascending rows read the memmap sequentially
            out[sel[order]] = self._vec[s][row[sel][order]]
        return out

    def get(self, image_ids: Sequence[str]) -> np.ndarray:
        """(n, d) float32 embeddings of image ids, in order (raises naming a missing one)."""
        image_ids = list(image_ids)
        vids = vector_ids(image_ids)
        _, found = self._locate(vids)
        if not found.all():
            missing = [i for i, f in zip(image_ids, found) if not f]
            raise EmbeddingStoreError(f"embedding store {self.prefix}: no embedding for image "
                                      f"{missing[0]!r} ({len(missing)} missing); embed the pool first")
        return self.get_by_vid(vids)

    def image_ids_for(self, vids: np.ndarray | Sequence[int]) -> list[str | None]:
        """Image id of each vector id (None for -1 / unknown ids)."""
        vids = np.asarray(vids, np.int64)
        pos, found = self._locate(vids)
        out: list[str | None] = [None] * len(vids)
        for i in np.where(found)[0]:
            s, r = self._sorted_shard[pos[i]], self._sorted_row[pos[i]]
            out[i] = bytes(self._ids[s][r]["image_id"]).decode("utf-8")
        return out

    def iter_batches(self, batch_size: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(vids (b,), vectors (b, d) float32) over the whole store, shard by shard; duplicated
        vids are yielded once. Memory stays at one batch."""
        for s, (ids, vec) in enumerate(zip(self._ids, self._vec)):
            vids = np.asarray(ids["vid"])
            pos, _ = self._locate(vids)
            own = (self._sorted_shard[pos] == s) & (self._sorted_row[pos] == np.arange(len(vids)))
            for start in range(0, len(vids), batch_size):
                sl = slice(start, start + batch_size)
                keep = own[sl]
                yield vids[sl][keep], np.asarray(vec[sl][keep], np.float32)

    def sample(self, n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """A seeded random sample of up to `n` (vids, vectors), e.g. to train IVF quantizers."""
        rng = np.random.default_rng(seed)
        m = len(self)
        pick = np.sort(rng.choice(m, size=min(n, m), replace=False)) if m else np.zeros(0, np.int64)
        vids = self._sorted_vids[pick]
        return vids, self.get_by_vid(vids)

    # -- writing ---------------------------------------------------------------------------
    def append(self, image_ids: Sequence[str], vectors: np.ndarray) -> int:
        """Store embeddings of images not stored yet, as one new shard. Returns how many were
        new. Idempotent: ids already present are skipped (their stored vectors are kept)."""
        image_ids = list(image_ids)
        v = np.asarray(vectors, np.float32)
        if v.ndim != 2 or len(v) != len(image_ids):
            raise EmbeddingStoreError(f"embedding store: {len(image_ids)} ids but vectors {v.shape}")
        if self._dim is not None and v.shape[1] != self._dim:
            raise EmbeddingStoreError(f"embedding store {self.prefix}: vectors have d={v.shape[1]}, "
                                      f"store has d={self._dim}")
        if not np.isfinite(v).all():
            raise EmbeddingStoreError("embedding store: vectors contain NaN or infinite values")
        if not image_ids:
            return 0
        self.refresh()
        vids = vector_ids(image_ids)
        uniq, first = np.unique(vids, return_index=True)
        if len(uniq) != len(set(image_ids)):
            raise EmbeddingStoreError("embedding store: two image ids share a vector id (hash "
                                      "collision); rename one image id")
        present = self.contains_vids(uniq)
        if present.any():
            stored = self.image_ids_for(uniq[present])
            given = [image_ids[i] for i in first[present]]
            clash = [(g, s) for g, s in zip(given, stored) if g != s]
            if clash:
                raise EmbeddingStoreError(f"embedding store: image {clash[0][0]!r} collides with "
                                          f"stored {clash[0][1]!r} (same vector id)")
        keep = np.sort(first[~present])
        if not len(keep):
            return 0
        ids_new = [image_ids[i] for i in keep]
        width = max(len(i.encode("utf-8")) for i in ids_new)
        table = np.zeros(len(keep), dtype=[("vid", "<i8"), ("image_id", f"S{width}")])
        table["vid"] = vids[keep]
        table["image_id"] = [i.encode("utf-8") for i in ids_new]
        name = hashlib.sha256(np.sort(vids[keep]).tobytes()).hexdigest()[:20]
        self.objects.put_bytes(f"{self.prefix}{name}.vec.npy", _npy_bytes(v[keep]))
        self.objects.put_bytes(f"{self.prefix}{name}.ids.npy", _npy_bytes(table))  # commit marker
        self.refresh()
        return int(len(keep))
