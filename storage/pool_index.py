"""FAISS pool index: build, grow, search, check recall, persist and version in the object store.

Index kinds (:data:`INDEX_KINDS`), chosen by pool size under ``settings.index.kind = auto``
(:func:`choose_index_kind`):

- ``flat``  exact L2 search, pools up to ``index.exact_max`` vectors (recall 1 by construction),
- ``ivf``   IVF-Flat (``nlist`` ~ 4 sqrt(n) lists, ``nprobe`` probed), up to ``index.pq_min``,
- ``ivfpq`` IVF-PQ (``pq_m`` x ``pq_nbits`` codes: 16 bytes per 64-d vector by default) from
  ``index.pq_min``; searches fetch ``k x pq_rerank`` and re-rank with exact vectors when a vector
  source (the :class:`EmbeddingStore`) is given,
- ``hnsw``  HNSW graph, only when asked for (slow to build on few cores, cannot be trained
  incrementally on GPU).

Every kind is wrapped in ``IndexIDMap`` so vectors carry the pool's int64 vector ids
(:func:`medq.storage.embedding_store.vector_id`) and the index can grow with ``add``; ids already
present are skipped, so re-adding a batch after a crash is harmless. Distances returned by
:meth:`PoolIndex.search` are Euclidean (not squared), ids -1 / distance inf mark missing hits.

Recall@k of approximate kinds is measured against exact search on a sample of queries (database
vectors perturbed by small Gaussian noise, so a query is not only its own neighbour) and recorded
with the index version. When faiss has GPU support (``faiss.get_num_gpus() > 0``) and
``index.use_gpu`` is set, searches run on a GPU copy (flat / IVF kinds); everything else, and any
GPU failure, falls back to the CPU index.

Persistence: :func:`save_index` writes ``index/<index_id>.faiss`` (``faiss.write_index`` to a
temporary file, streamed to the object store, so a large index is never held twice in memory) and
``index/<index_id>.json`` (kind, parameters, recall, embedder), then records an ``index_versions``
row in the catalog (the commit point). ``index_id`` is derived from the index bytes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import numpy.typing as npt

from medq.errors import MedQError
from medq.storage.embedding_store import EmbeddingStore, EmbeddingStoreError, vector_id, vector_ids  # noqa: F401

log = logging.getLogger(__name__)

INDEX_KINDS: tuple[str, ...] = ("flat", "ivf", "ivfpq", "hnsw")
INDEX_PREFIX = "index"


class VectorIndexError(MedQError):
    """The pool index cannot be built, grown, searched, saved or loaded (says what and where)."""


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss is a hard dependency
        raise VectorIndexError("the pool index needs faiss (pip install faiss-cpu)") from exc
    return faiss


def _index_settings(settings):
    if settings is None:
        from medq.settings import IndexSettings
        return IndexSettings()
    return getattr(settings, "index", settings)


def choose_index_kind(n: int, settings=None) -> str:
    """Index kind for a pool of `n` vectors: the configured kind, or under ``auto`` flat up to
    ``exact_max``, IVF-PQ from ``pq_min``, IVF-Flat in between."""
    s = _index_settings(settings)
    if s.kind != "auto":
        if s.kind not in INDEX_KINDS:
            raise VectorIndexError(f"index.kind {s.kind!r} is not one of auto, {', '.join(INDEX_KINDS)}")
        return s.kind
    if n <= s.exact_max:
        return "flat"
    if n >= s.pq_min:
        return "ivfpq"
    return "ivf"


def default_nlist(n: int, settings=None) -> int:
    """IVF list count: ``index.nlist`` or about 4 sqrt(n), at most n / 39 (faiss wants >= 39
    training points per list), at least 1."""
    s = _index_settings(settings)
    nlist = s.nlist or int(round(4 * math.sqrt(max(n, 1))))
    return int(max(1, min(nlist, max(n, 1) // 39)))


@dataclass
class RecallReport:
    """recall@k of an approximate index against exact search (1.0 = identical top-k)."""

    k: int
    n_queries: int
    recall: float
    approx_ms_per_query: float
    exact_ms_per_query: float | None = None
    reranked: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class _ExactTopK:
    """Exact top-k of fixed queries accumulated over streamed database batches."""

    def __init__(self, queries: np.ndarray, k: int):
        self.q = np.ascontiguousarray(queries, np.float32)
        self.k = k
        self.d: npt.NDArray[np.float32] = np.full((len(self.q), k), np.inf, np.float32)
        self.i: npt.NDArray[np.int64] = np.full((len(self.q), k), -1, np.int64)
        self.seconds = 0.0

    def update(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        if not len(ids) or not len(self.q):
            return
        t = time.perf_counter()
        kk = min(self.k, len(ids))
        d2, pos = _faiss().knn(self.q, np.ascontiguousarray(vecs, np.float32), kk)
        cand_d = np.concatenate([self.d, d2], 1)
        cand_i = np.concatenate([self.i, np.asarray(ids, np.int64)[pos]], 1)
        order = np.argsort(cand_d, axis=1, kind="stable")[:, :self.k]
        self.d = np.take_along_axis(cand_d, order, 1)
        self.i = np.take_along_axis(cand_i, order, 1)
        self.seconds += time.perf_counter() - t


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / |exact top-k| (missing ids ignored)."""
    hits, total = 0, 0
    for a, e in zip(approx_ids, exact_ids):
        e = set(int(x) for x in e if x >= 0)
        if not e:
            continue
        hits += len(e & set(int(x) for x in a if x >= 0))
        total += len(e)
    return float(hits / total) if total else 1.0


def _perturbed_queries(sample: np.ndarray, rng: np.random.Generator, rel_noise: float = 0.05
                       ) -> np.ndarray:
    """Database vectors plus Gaussian noise of about `rel_noise` x their norm."""
    if not len(sample):
        return sample.astype(np.float32)
    norms = np.linalg.norm(sample, axis=1, keepdims=True)
    noise = rng.normal(size=sample.shape) / math.sqrt(sample.shape[1])
    return (sample + rel_noise * norms * noise).astype(np.float32)


class PoolIndex:
    """A FAISS index over pool vectors with int64 ids (see module docstring).

    Create with :meth:`create` (empty, trained if needed) or :meth:`build` (from batches), grow
    with :meth:`add`, query with :meth:`search`. `params` records everything that shaped the
    index (nlist, nprobe, pq, hnsw, training size); `recall` the last recall check."""

    def __init__(self, index, kind: str, dim: int, *, params: dict | None = None,
                 embedder: str | None = None, settings=None, ids: np.ndarray | None = None):
        self.index = index
        self.kind = kind
        self.dim = int(dim)
        self.params = dict(params or {})
        self.embedder = embedder
        self.settings = _index_settings(settings)
        self.recall: RecallReport | None = None
        self.index_id: str | None = None
        self._ids = np.sort(np.asarray(ids if ids is not None else [], np.int64))
        self._gpu = None
        self._apply_search_params()

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def create(cls, kind: str, dim: int, *, settings=None, expected_size: int | None = None,
               train_vectors: np.ndarray | None = None, embedder: str | None = None,
               seed: int = 0) -> "PoolIndex":
        """An empty index of `kind`. IVF kinds are trained on `train_vectors` (required; a
        random sample of the pool, at least 39 per list)."""
        faiss = _faiss()
        s = _index_settings(settings)
        if kind not in INDEX_KINDS:
            raise VectorIndexError(f"unknown index kind {kind!r}; choose one of {INDEX_KINDS}")
        if dim < 1:
            raise VectorIndexError(f"index dimension must be >= 1, got {dim}")
        params: dict[str, Any] = {"metric": "l2"}
        if kind == "flat":
            inner = faiss.IndexFlatL2(dim)
        elif kind == "hnsw":
            inner = faiss.IndexHNSWFlat(dim, s.hnsw_m)
            inner.hnsw.efConstruction = s.hnsw_ef_construction
            params.update(hnsw_m=s.hnsw_m, ef_construction=s.hnsw_ef_construction)
        else:
            if train_vectors is None or not len(train_vectors):
                raise VectorIndexError(f"index kind {kind!r} needs training vectors (a pool sample)")
            x = np.ascontiguousarray(train_vectors, np.float32)
            if x.ndim != 2 or x.shape[1] != dim:
                raise VectorIndexError(f"training vectors must be (n, {dim}), got {x.shape}")
            n = expected_size or len(x)
            nlist = min(default_nlist(n, s), max(1, len(x) // 39))
            quantizer = faiss.IndexFlatL2(dim)
            if kind == "ivf":
                inner = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_L2)
            else:
                # 4-dim sub-vectors by default (16 bytes at d=64): 8-dim ones (8 bytes) lose
                # too much at 1M vectors (recall@10 0.71 even after 4x exact re-ranking)
                pq_m = s.pq_m or (dim // 4 if dim % 4 == 0 else 1)
                if dim % pq_m:
                    raise VectorIndexError(f"index.pq_m={pq_m} must divide the dimension {dim}")
                if len(x) < 2 ** s.pq_nbits:
                    raise VectorIndexError(f"IVF-PQ with {s.pq_nbits}-bit codes needs at least "
                                           f"{2 ** s.pq_nbits} training vectors, got {len(x)}")
                inner = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m, s.pq_nbits)
                params.update(pq_m=pq_m, pq_nbits=s.pq_nbits)
            inner.cp.seed = seed
            t = time.perf_counter()
            inner.train(x)
            params.update(nlist=nlist, n_train=int(len(x)), trained_for=int(n),
                          train_s=round(time.perf_counter() - t, 3))
        index = faiss.IndexIDMap(inner)
        return cls(index, kind, dim, params=params, embedder=embedder, settings=s)

    @classmethod
    def build(cls, batches: Iterable[tuple[np.ndarray, np.ndarray]], *, settings=None,
              expected_size: int | None = None, kind: str | None = None, dim: int | None = None,
              embedder: str | None = None, train_vectors: np.ndarray | None = None,
              check_recall: bool = True, seed: int = 0) -> "PoolIndex":
        """Build from a stream of ``(ids int64 (b,), vectors float32 (b, d))`` batches without
        holding the pool in memory.

        The kind comes from `kind`, else from `expected_size` via :func:`choose_index_kind`;
        with neither, the stream is buffered up to ``exact_max`` vectors to decide between flat
        and IVF. IVF kinds train on `train_vectors` when given (best: a random pool sample, see
        :func:`build_from_store`), else on the first ``train_size`` streamed vectors (fine when
        the stream is shuffled). Recall@k is checked on the fly: queries are drawn from the
        first buffered vectors and their exact top-k is accumulated over every batch."""
        s = _index_settings(settings)
        it = iter(batches)
        buf_ids: list[np.ndarray] = []
        buf_vecs: list[np.ndarray] = []
        buffered = 0
        exhausted = False
        if kind is None and expected_size is not None:
            kind = choose_index_kind(expected_size, s)
        if kind is None and s.kind != "auto":
            kind = s.kind
        if kind is None:
            need = s.exact_max + 1
        elif kind in ("ivf", "ivfpq") and train_vectors is None:
            need = s.train_size
        else:
            need = 1
        need = max(need, s.recall_sample)
        while buffered < need:
            try:
                ids, vecs = next(it)
            except StopIteration:
                exhausted = True
                break
            ids, vecs = _check_batch(ids, vecs, dim)
            dim = dim or vecs.shape[1]
            buf_ids.append(ids)
            buf_vecs.append(vecs)
            buffered += len(ids)
        if dim is None:
            raise VectorIndexError("cannot build a pool index from no vectors without `dim`")
        head_ids = np.concatenate(buf_ids) if buf_ids else np.zeros(0, np.int64)
        head = np.concatenate(buf_vecs) if buf_vecs else np.zeros((0, dim), np.float32)
        if kind is None:
            kind = "flat" if exhausted and buffered <= s.exact_max else "ivf"
        if kind in ("ivf", "ivfpq") and train_vectors is None:
            train_vectors = head[:s.train_size]
        size_hint = expected_size or (buffered if exhausted else None)
        pidx = cls.create(kind, dim, settings=s, expected_size=size_hint,
                          train_vectors=train_vectors, embedder=embedder, seed=seed)
        rng = np.random.default_rng(seed)
        exact = None
        if check_recall and kind != "flat" and len(head):
            pick = rng.choice(len(head), size=min(s.recall_sample, len(head)), replace=False)
            exact = _ExactTopK(_perturbed_queries(head[pick], rng), s.recall_k)
        t = time.perf_counter()
        for ids, vecs in _chain([(head_ids, head)], it, dim):
            added_ids, added = pidx._add_new(ids, vecs)
            if exact is not None:
                exact.update(added_ids, added)
        pidx.params["build_s"] = round(time.perf_counter() - t, 3)
        if kind == "flat":
            pidx.recall = RecallReport(s.recall_k, 0, 1.0, 0.0)
        elif exact is not None:
            pidx.recall = pidx._recall_from(exact)
        return pidx

    # -- growing ---------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    def _add_new(self, ids: np.ndarray, vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids, vecs = _check_batch(ids, vecs, self.dim)
        if (ids < 0).any():
            raise VectorIndexError("pool index ids must be >= 0 (-1 marks a missing hit)")
        uniq, first = np.unique(ids, return_index=True)
        first = first[~np.isin(uniq, self._ids, assume_unique=True)]
        first.sort()
        if not len(first):
            return ids[:0], vecs[:0]
        new_ids, new_vecs = ids[first], np.ascontiguousarray(vecs[first])
        self.index.add_with_ids(new_vecs, new_ids)
        self._ids = np.union1d(self._ids, new_ids)
        self._gpu = None  # the GPU copy is stale now
        return new_ids, new_vecs

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> int:
        """Add vectors under int64 `ids`; ids already in the index are skipped. Returns the
        number added."""
        return int(len(self._add_new(ids, vectors)[0]))

    def contains(self, ids: np.ndarray) -> np.ndarray:
        return np.isin(np.asarray(ids, np.int64), self._ids)

    def rebuild_reason(self, settings=None) -> str | None:
        """Why this index should be rebuilt from the store (grown past its kind's range or far
        past the size its IVF lists were trained for), or None."""
        s = _index_settings(settings or self.settings)
        if s.kind == "auto" and self.kind != "hnsw":
            want = choose_index_kind(self.ntotal, s)
            if want != self.kind:
                return f"{self.ntotal} vectors call for a {want} index, this one is {self.kind}"
        trained = self.params.get("trained_for")
        if trained and self.ntotal > 4 * trained:
            return f"IVF lists were trained for {trained} vectors, index holds {self.ntotal}"
        return None

    # -- searching -------------------------------------------------------------------------
    def _apply_search_params(self) -> None:
        faiss = _faiss()
        inner = faiss.downcast_index(self.index.index) if hasattr(self.index, "index") else self.index
        if self.kind in ("ivf", "ivfpq"):
            ivf = faiss.extract_index_ivf(self.index)
            ivf.nprobe = min(self.settings.nprobe, ivf.nlist)
            self.params["nprobe"] = int(ivf.nprobe)
        elif self.kind == "hnsw":
            inner.hnsw.efSearch = self.settings.hnsw_ef_search
            self.params["ef_search"] = self.settings.hnsw_ef_search

    def _search_index(self):
        """The GPU copy when faiss GPU is usable for this kind, else the CPU index."""
        faiss = _faiss()
        if not self.settings.use_gpu or self.kind == "hnsw" or not hasattr(faiss, "StandardGpuResources"):
            return self.index
        try:
            if faiss.get_num_gpus() <= 0:
                return self.index
            if self._gpu is None:
                self._gpu = faiss.index_cpu_to_gpu(_gpu_resources(), 0, self.index)
                if self.kind in ("ivf", "ivfpq"):
                    faiss.GpuParameterSpace().set_index_parameter(self._gpu, "nprobe",
                                                                  self.params["nprobe"])
            return self._gpu
        except Exception as exc:  # any GPU problem: CPU search still answers correctly
            log.warning("faiss GPU search unavailable (%s); using the CPU index", exc)
            self.settings = self.settings.model_copy(update={"use_gpu": False})
            return self.index

    @property
    def on_gpu(self) -> bool:
        return self._search_index() is not self.index

    def search(self, queries: np.ndarray, k: int, *,
               vectors: Callable[[np.ndarray], np.ndarray] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """k nearest pool vectors of each query.

        `queries` (Q, d) float32. Returns ``(ids (Q, k) int64, distances (Q, k) float32)``,
        Euclidean, nearest first; -1 / inf where fewer than k vectors exist. For ``ivfpq``,
        `vectors` (vector ids -> (n, d) exact vectors, e.g. ``EmbeddingStore.get_by_vid``)
        enables re-ranking of ``k x pq_rerank`` approximate hits with exact distances."""
        q = np.ascontiguousarray(queries, np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise VectorIndexError(f"queries must be (Q, {self.dim}), got {q.shape}")
        if k < 1:
            raise VectorIndexError(f"k must be >= 1, got {k}")
        if not len(q):
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        rerank = self.kind == "ivfpq" and vectors is not None and self.settings.pq_rerank > 1
        kk = k * self.settings.pq_rerank if rerank else k
        kk = min(kk, max(self.ntotal, 1))
        d2, ids = self._search_index().search(q, kk)
        if rerank:
            d2, ids = _rerank(q, ids, vectors, k)
        d2, ids = _pad(d2, ids, k)
        dist = np.where(ids >= 0, np.sqrt(np.maximum(d2, 0)), np.inf).astype(np.float32)
        return ids.astype(np.int64), dist

    # -- recall ----------------------------------------------------------------------------
    def _recall_from(self, exact: _ExactTopK, vectors=None) -> RecallReport:
        t = time.perf_counter()
        ids, _ = self.search(exact.q, exact.k, vectors=vectors)
        approx_ms = 1000 * (time.perf_counter() - t) / max(len(exact.q), 1)
        return RecallReport(exact.k, len(exact.q), recall_at_k(ids, exact.i), round(approx_ms, 4),
                            round(1000 * exact.seconds / max(len(exact.q), 1), 4),
                            reranked=vectors is not None and self.kind == "ivfpq")

    def measure_recall(self, batches: Iterable[tuple[np.ndarray, np.ndarray]], *,
                       queries: np.ndarray | None = None, k: int | None = None,
                       vectors: Callable[[np.ndarray], np.ndarray] | None = None,
                       seed: int = 0) -> RecallReport:
        """Recall@k against exact search over `batches` (the indexed vectors, e.g.
        ``store.iter_batches()``). `queries` default: perturbed vectors sampled from the first
        batch(es). The result is kept in ``self.recall``."""
        k = k or self.settings.recall_k
        it = iter(batches)
        rng = np.random.default_rng(seed)
        head: list[tuple[np.ndarray, np.ndarray]] = []
        if queries is None:
            got = 0
            for ids, vecs in it:
                head.append((ids, vecs))
                got += len(ids)
                if got >= self.settings.recall_sample:
                    break
            if not head:
                raise VectorIndexError("measure_recall: no vectors given")
            pool = np.concatenate([v for _, v in head])
            pick = rng.choice(len(pool), size=min(self.settings.recall_sample, len(pool)),
                              replace=False)
            queries = _perturbed_queries(pool[pick], rng)
        exact = _ExactTopK(queries, k)
        for ids, vecs in _chain(head, it, self.dim):
            exact.update(ids, vecs)
        self.recall = self._recall_from(exact, vectors)
        return self.recall

    # -- persistence -----------------------------------------------------------------------
    def metadata(self) -> dict:
        return {"format": 1, "kind": self.kind, "dim": self.dim, "n_vectors": self.ntotal,
                "embedder": self.embedder, "params": self.params,
                "recall": None if self.recall is None else self.recall.to_dict()}

    def write(self, path: Path | str) -> None:
        """Write the CPU index to a local file (``faiss.write_index``)."""
        _faiss().write_index(self.index, str(path))

    @classmethod
    def read(cls, path: Path | str, meta: dict, *, settings=None) -> "PoolIndex":
        faiss = _faiss()
        try:
            index = faiss.read_index(str(path))
        except Exception as exc:
            raise VectorIndexError(f"pool index file {path} cannot be read: {exc}") from exc
        ids = faiss.vector_to_array(index.id_map).astype(np.int64) if hasattr(index, "id_map") \
            else None
        if ids is None:
            raise VectorIndexError(f"pool index file {path} has no id map (not a MedQ index)")
        p = cls(index, meta["kind"], meta["dim"], params=meta.get("params"),
                embedder=meta.get("embedder"), settings=settings, ids=ids)
        if meta.get("recall"):
            p.recall = RecallReport(**meta["recall"])
        return p


_GPU_RES = None


def _gpu_resources():
    global _GPU_RES
    if _GPU_RES is None:
        _GPU_RES = _faiss().StandardGpuResources()
    return _GPU_RES


def _check_batch(ids, vecs, dim: int | None) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(ids, np.int64).reshape(-1)
    v = np.ascontiguousarray(vecs, np.float32)
    if v.ndim != 2 or len(v) != len(ids):
        raise VectorIndexError(f"index batch: {len(ids)} ids but vectors of shape {v.shape}")
    if dim is not None and v.shape[1] != dim:
        raise VectorIndexError(f"index batch: vectors have d={v.shape[1]}, index has d={dim}")
    if not np.isfinite(v).all():
        raise VectorIndexError("index batch: vectors contain NaN or infinite values")
    return ids, v


def _chain(head, rest, dim) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for ids, vecs in head:
        if len(ids):
            yield ids, vecs
    for ids, vecs in rest:
        yield _check_batch(ids, vecs, dim)


def _pad(d2: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if ids.shape[1] >= k:
        return d2[:, :k], ids[:, :k]
    extra = k - ids.shape[1]
    return (np.pad(d2, ((0, 0), (0, extra)), constant_values=np.inf),
            np.pad(ids, ((0, 0), (0, extra)), constant_values=-1))


def _rerank(q: np.ndarray, ids: np.ndarray, vectors, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact squared distances for approximate hits, re-sorted; missing hits stay last."""
    flat = ids.reshape(-1)
    valid = flat >= 0
    uniq = np.unique(flat[valid])
    exact = np.full(ids.shape, np.inf, np.float32)
    if len(uniq):
        vecs = np.asarray(vectors(uniq), np.float32)
        pos = np.searchsorted(uniq, np.where(valid, flat, uniq[0])).reshape(ids.shape)
        diff = vecs[pos] - q[:, None, :]
        exact = np.where(ids >= 0, (diff * diff).sum(-1), np.inf).astype(np.float32)
    order = np.argsort(exact, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(exact, order, 1), np.take_along_axis(ids, order, 1)


# --------------------------------------------------------------------------------------------
# Store-backed build, search and persistence
# --------------------------------------------------------------------------------------------

def build_from_store(store: EmbeddingStore, *, settings=None, kind: str | None = None,
                     batch_size: int = 65536, check_recall: bool = True,
                     seed: int = 0) -> PoolIndex:
    """Build the pool index for everything in `store`: kind by size, IVF trained on a random
    sample of the store, vectors streamed in batches, recall checked (with exact re-ranking
    for IVF-PQ, as searches through :func:`search_pool` do)."""
    s = _index_settings(settings)
    n = len(store)
    if n == 0:
        raise VectorIndexError(f"embedding store {store.prefix} is empty: embed the pool first")
    kind = kind or choose_index_kind(n, s)
    train = None
    if kind in ("ivf", "ivfpq"):
        _, train = store.sample(min(s.train_size, n), seed=seed)
    pidx = PoolIndex.build(store.iter_batches(batch_size), settings=s, expected_size=n,
                           kind=kind, dim=store.dim, embedder=store.embedder_version,
                           train_vectors=train, check_recall=False, seed=seed)
    if check_recall and kind != "flat":
        _, sample = store.sample(s.recall_sample, seed=seed + 1)
        queries = _perturbed_queries(sample, np.random.default_rng(seed))
        pidx.measure_recall(store.iter_batches(batch_size), queries=queries,
                            vectors=store.get_by_vid if kind == "ivfpq" else None)
    return pidx


def search_pool(index: PoolIndex, store: EmbeddingStore | None, queries: np.ndarray, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Search and map vector ids to image ids: ``(image_ids (Q, k) object, None = no hit,
    distances (Q, k) float32)``. The store also provides exact re-ranking for IVF-PQ."""
    ids, dist = index.search(queries, k, vectors=None if store is None else store.get_by_vid)
    if store is None:
        return ids.astype(object), dist
    flat = store.image_ids_for(ids.reshape(-1))
    return np.array(flat, dtype=object).reshape(ids.shape), dist


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_index(index: PoolIndex, objects, catalog=None, *, scratch: Path | str | None = None) -> str:
    """Persist `index` as a new version: ``index/<index_id>.faiss`` + ``.json`` in the object
    store, then an ``index_versions`` row in `catalog` (when given). Returns the index id
    (``idx-<kind>-<n>-<sha256 of the file, 12 hex>``; saving an unchanged index again gives the
    same id and rewrites identical objects)."""
    fd, tmp = tempfile.mkstemp(prefix="medq-index-", suffix=".faiss", dir=scratch)
    os.close(fd)
    try:
        index.write(tmp)
        digest = _sha256_file(Path(tmp))
        index_id = f"idx-{index.kind}-{index.ntotal}-{digest[:12]}"
        key = f"{INDEX_PREFIX}/{index_id}.faiss"
        objects.put_file(key, tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)
    meta = index.metadata() | {"index_id": index_id, "object_key": key, "sha256": digest}
    objects.put_bytes(f"{INDEX_PREFIX}/{index_id}.json",
                      json.dumps(meta, sort_keys=True, indent=1).encode())
    if catalog is not None:
        catalog.upsert("index_versions", [{
            "index_id": index_id, "embedder": index.embedder or "unknown", "kind": index.kind,
            "n_vectors": index.ntotal, "dim": index.dim, "object_key": key,
            "recall": None if index.recall is None else index.recall.recall}])
    index.index_id = index_id
    return index_id


def latest_index_id(catalog, embedder: str | None = None) -> str | None:
    """The most recently recorded index version (for `embedder`, when given)."""
    sql = "SELECT index_id FROM index_versions"
    params: list[Any] = []
    if embedder is not None:
        sql += " WHERE embedder = ?"
        params.append(embedder)
    rows = catalog.query(sql + " ORDER BY created_at DESC, n_vectors DESC LIMIT 1", params)
    return rows[0]["index_id"] if rows else None


def load_index(objects, catalog=None, *, index_id: str | None = None, embedder: str | None = None,
               settings=None, scratch: Path | str | None = None) -> PoolIndex:
    """Load a saved index version (`index_id`, or the latest in `catalog` for `embedder`)."""
    if index_id is None:
        if catalog is None:
            raise VectorIndexError("load_index needs an index_id or a catalog to find the latest")
        index_id = latest_index_id(catalog, embedder)
        if index_id is None:
            raise VectorIndexError(f"no pool index recorded in the catalog"
                                   f"{' for embedder ' + embedder if embedder else ''}; "
                                   "build one first")
    try:
        meta = json.loads(objects.get_bytes(f"{INDEX_PREFIX}/{index_id}.json"))
    except MedQError as exc:
        raise VectorIndexError(f"pool index {index_id}: metadata missing in {objects!r}: {exc}") from exc
    fd, tmp = tempfile.mkstemp(prefix="medq-index-", suffix=".faiss", dir=scratch)
    os.close(fd)
    try:
        objects.download(meta["object_key"], tmp)
        if meta.get("sha256") and _sha256_file(Path(tmp)) != meta["sha256"]:
            raise VectorIndexError(f"pool index {index_id}: file checksum does not match its metadata")
        pidx = PoolIndex.read(tmp, meta, settings=settings)
    finally:
        Path(tmp).unlink(missing_ok=True)
    if pidx.ntotal != meta["n_vectors"]:
        raise VectorIndexError(f"pool index {index_id}: holds {pidx.ntotal} vectors, metadata "
                               f"says {meta['n_vectors']}")
    pidx.index_id = index_id
    return pidx
