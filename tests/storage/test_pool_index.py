"""Pool index kinds with recall checks, incremental growth, persistence through a
LocalObjectStore + catalog, and the pool embedding store."""
from __future__ import annotations

import numpy as np
import pytest

from medq.settings import IndexSettings
from medq.storage.embedding_store import EmbeddingStore, EmbeddingStoreError, vector_id, vector_ids
from medq.storage.objects import LocalObjectStore
from medq.storage.pool_index import (
    PoolIndex,
    VectorIndexError,
    build_from_store,
    choose_index_kind,
    default_nlist,
    latest_index_id,
    load_index,
    recall_at_k,
    save_index,
    search_pool,
)

D = 16


def clustered(n: int, seed: int = 0, d: int = D) -> np.ndarray:
    """Unit vectors around 40 centres (embeddings have structure; uniform noise has none)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(40, d))
    x = c[rng.integers(0, 40, n)] + 0.35 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def batches(ids, x, size=700):
    for s in range(0, len(ids), size):
        yield ids[s:s + size], x[s:s + size]


SMALL = IndexSettings(exact_max=500, pq_min=2500, nprobe=8, recall_sample=60, pq_nbits=6,
                      train_size=3000, hnsw_m=16)


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    """faiss' OpenMP threads spin-wait; on a shared 2-core machine one thread is much faster
    for these small indexes."""
    import faiss
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    x = clustered(3000)
    ids = np.arange(3000, dtype=np.int64) * 11 + 5
    return ids, x


def exact_knn(x, q, k):
    d = ((q[:, None, :] - x[None]) ** 2).sum(-1)
    order = np.argsort(d, axis=1)[:, :k]
    return order, np.sqrt(np.take_along_axis(d, order, 1))


def test_choose_kind_by_size():
    assert choose_index_kind(500, SMALL) == "flat"
    assert choose_index_kind(501, SMALL) == "ivf"
    assert choose_index_kind(2500, SMALL) == "ivfpq"
    assert choose_index_kind(10, SMALL.model_copy(update={"kind": "hnsw"})) == "hnsw"
    with pytest.raises(VectorIndexError):
        choose_index_kind(10, SMALL.model_copy(update={"kind": "lsh"}))
    assert default_nlist(1_000_000) == 4000 and default_nlist(100) == 2 and default_nlist(5) == 1


@pytest.mark.parametrize("kind,min_recall", [("flat", 1.0), ("ivf", 0.9), ("ivfpq", 0.4),
                                             ("hnsw", 0.9)])
def test_each_kind_builds_searches_and_records_recall(data, kind, min_recall):
    ids, x = data
    idx = PoolIndex.build(batches(ids, x), settings=SMALL, kind=kind, embedder="emb-1")
    assert idx.kind == kind and idx.ntotal == 3000 and idx.dim == D
    assert idx.recall is not None and idx.recall.recall >= min_recall
    if kind != "flat":
        assert idx.recall.n_queries == 60 and idx.recall.k == 10
    # the recorded recall agrees with an independent check against brute force
    q = x[:40] + 0.01
    got, dist = idx.search(q, 10)
    truth, tdist = exact_knn(x, q, 10)
    r = recall_at_k(got, ids[truth])
    assert r >= min_recall
    if kind in ("flat", "ivf", "hnsw"):
        hit = got[:, 0] == ids[truth[:, 0]]
        np.testing.assert_allclose(dist[hit, 0], tdist[hit, 0], rtol=1e-4, atol=1e-5)
    assert (np.diff(dist, axis=1) >= -1e-6).all()  # nearest first


def test_ivfpq_reranking_with_exact_vectors(data):
    ids, x = data
    idx = PoolIndex.build(batches(ids, x), settings=SMALL, kind="ivfpq")
    lookup = {int(i): v for i, v in zip(ids, x)}
    q = x[100:160] + 0.01
    truth, _ = exact_knn(x, q, 10)
    plain = recall_at_k(idx.search(q, 10)[0], ids[truth])
    reranked_ids, reranked_d = idx.search(q, 10, vectors=lambda v: np.stack([lookup[int(i)] for i in v]))
    reranked = recall_at_k(reranked_ids, ids[truth])
    assert reranked > plain and reranked >= 0.85
    truth_d = np.sqrt(((q[:, None] - x[truth]) ** 2).sum(-1))
    np.testing.assert_allclose(reranked_d[:, 0], truth_d[:, 0], rtol=1e-3, atol=1e-4)


def test_auto_kind_without_size_hint_buffers_the_stream(data):
    ids, x = data
    small = PoolIndex.build(batches(ids[:400], x[:400]), settings=SMALL)
    assert small.kind == "flat"
    big = PoolIndex.build(batches(ids, x), settings=SMALL)
    assert big.kind == "ivf"
    assert PoolIndex.build(batches(ids, x), settings=SMALL, expected_size=3000).kind == "ivfpq"


def test_incremental_growth_is_idempotent(data):
    ids, x = data
    idx = PoolIndex.build(batches(ids[:2000], x[:2000]), settings=SMALL, kind="ivf")
    assert idx.add(ids[1500:3000], x[1500:3000]) == 1000   # the overlap is skipped
    assert idx.add(ids[2500:3000], x[2500:3000]) == 0
    assert idx.ntotal == 3000 and idx.contains(ids[2999:]).all()
    got, dist = idx.search(x[2990:3000], 1)
    assert (got[:, 0] == ids[2990:3000]).all() and np.allclose(dist[:, 0], 0, atol=1e-3)
    flat = PoolIndex.create("flat", D, settings=SMALL)
    flat.add(ids[:10], x[:10])
    ids2, d2 = flat.search(x[:2], 15)  # fewer vectors than k: padded
    assert (ids2[:, 10:] == -1).all() and np.isinf(d2[:, 10:]).all()
    assert flat.rebuild_reason() is None
    flat.add(ids[10:600], x[10:600])
    assert "ivf" in flat.rebuild_reason()  # grew past exact_max
    with pytest.raises(VectorIndexError, match="d=8"):
        flat.add(ids[:2], x[:2, :8])
    with pytest.raises(VectorIndexError, match=">= 0"):
        flat.add(np.array([-3]), x[:1])
    with pytest.raises(VectorIndexError, match="queries"):
        flat.search(x[:2, :8], 3)


def test_persistence_round_trip(workspace, data):
    ids, x = data
    objects = LocalObjectStore(workspace.settings.objects_root)
    cat = workspace.catalog
    for kind in ("flat", "ivfpq", "hnsw"):
        idx = PoolIndex.build(batches(ids, x), settings=SMALL, kind=kind, embedder="emb-1")
        index_id = save_index(idx, objects, cat)
        assert objects.exists(f"index/{index_id}.faiss") and objects.exists(f"index/{index_id}.json")
        back = load_index(objects, cat, index_id=index_id, settings=SMALL)
        assert (back.kind, back.ntotal, back.dim, back.embedder) == (kind, 3000, D, "emb-1")
        assert back.recall.recall == pytest.approx(idx.recall.recall)
        q = x[:30]
        np.testing.assert_array_equal(back.search(q, 5)[0], idx.search(q, 5)[0])
        assert back.add(ids[:5], x[:5]) == 0  # ids survive the round trip
        assert save_index(idx, objects, cat) == index_id  # unchanged index: same version
    rows = cat.query("SELECT * FROM index_versions ORDER BY kind")
    assert [r["kind"] for r in rows] == ["flat", "hnsw", "ivfpq"]
    assert all(r["n_vectors"] == 3000 and r["dim"] == D and r["embedder"] == "emb-1" for r in rows)
    assert latest_index_id(cat, "emb-1") in {r["index_id"] for r in rows}
    assert load_index(objects, cat, embedder="emb-1").ntotal == 3000
    with pytest.raises(VectorIndexError, match="no pool index"):
        load_index(objects, cat, embedder="other")
    # a grown index is a new version
    grown = load_index(objects, cat, index_id=rows[0]["index_id"], settings=SMALL)
    grown.add(ids[:10] + 1, x[:10])
    assert save_index(grown, objects, cat) != rows[0]["index_id"]


def test_corrupt_index_file_is_refused(tmp_path, data):
    ids, x = data
    objects = LocalObjectStore(tmp_path / "o")
    idx = PoolIndex.build(batches(ids[:300], x[:300]), settings=SMALL, kind="flat")
    index_id = save_index(idx, objects)
    objects.put_bytes(f"index/{index_id}.faiss", b"not an index")
    with pytest.raises(VectorIndexError, match="checksum"):
        load_index(objects, index_id=index_id)
    with pytest.raises(VectorIndexError, match="metadata missing"):
        load_index(objects, index_id="idx-nope")


# -- embedding store ------------------------------------------------------------------------

def test_vector_ids_are_stable_and_non_negative():
    assert vector_id("abc") == vector_id("abc") != vector_id("abd")
    v = vector_ids([f"img{i}" for i in range(1000)])
    assert v.dtype == np.int64 and (v >= 0).all() and len(set(v.tolist())) == 1000


def test_embedding_store_append_get_and_reopen(tmp_path):
    objects = LocalObjectStore(tmp_path / "o")
    x = clustered(500, seed=3)
    names = [f"sha-{i:04d}" for i in range(500)]
    store = EmbeddingStore(objects, "emb-1", tmp_path / "cache")
    assert len(store) == 0
    assert store.append(names[:300], x[:300]) == 300
    assert store.append(names[200:], x[200:]) == 200  # overlap skipped
    assert store.append(names[:50], x[:50] + 1.0) == 0  # idempotent, stored vectors kept
    assert len(store) == 500 and store.dim == D
    np.testing.assert_array_equal(store.get(names[::7]), x[::7])
    assert store.image_ids_for(vector_ids(names[:3]).tolist() + [-1]) == names[:3] + [None]
    assert store.contains(["sha-0001", "nope"]).tolist() == [True, False]
    with pytest.raises(EmbeddingStoreError, match="'nope'"):
        store.get(["nope"])
    with pytest.raises(EmbeddingStoreError, match="d=8"):
        store.append(["new"], np.zeros((1, 8), np.float32))
    # another process (fresh object, empty cache) sees the same content
    again = EmbeddingStore(objects, "emb-1", tmp_path / "cache2")
    assert len(again) == 500
    seen = np.concatenate([v for v, _ in again.iter_batches(64)])
    assert sorted(seen.tolist()) == sorted(vector_ids(names).tolist())
    vids, vecs = again.sample(50, seed=1)
    np.testing.assert_array_equal(vecs, again.get_by_vid(vids))
    # a different embedder version is a different store
    assert len(EmbeddingStore(objects, "emb-2", tmp_path / "cache")) == 0


def test_store_backed_build_and_search(tmp_path):
    objects = LocalObjectStore(tmp_path / "o")
    x = clustered(3000, seed=4)
    names = [f"img-{i}" for i in range(3000)]
    store = EmbeddingStore(objects, "emb-1", tmp_path / "cache")
    for s in range(0, 3000, 1000):
        store.append(names[s:s + 1000], x[s:s + 1000])
    idx = build_from_store(store, settings=SMALL, batch_size=512)
    assert idx.kind == "ivfpq" and idx.ntotal == 3000 and idx.embedder == "emb-1"
    assert idx.recall.reranked and idx.recall.recall >= 0.85
    image_ids, dist = search_pool(idx, store, x[:5], 3)
    assert image_ids.shape == (5, 3) and list(image_ids[:, 0]) == names[:5]
    assert np.allclose(dist[:, 0], 0, atol=1e-4)
    flat = build_from_store(store, settings=SMALL, kind="flat")
    assert flat.recall.recall == 1.0
    with pytest.raises(VectorIndexError, match="empty"):
        build_from_store(EmbeddingStore(objects, "none", tmp_path / "c"), settings=SMALL)


def test_grow_index_from_store_with_new_vectors(tmp_path):
    """The growth path a flow takes: new pool embeddings -> add only what the index lacks."""
    objects = LocalObjectStore(tmp_path / "o")
    x = clustered(900, seed=5)
    names = [f"img-{i}" for i in range(900)]
    store = EmbeddingStore(objects, "emb-1", tmp_path / "cache")
    store.append(names[:400], x[:400])
    idx = build_from_store(store, settings=SMALL)
    assert idx.kind == "flat" and idx.ntotal == 400
    store.append(names[400:], x[400:])
    new = store.vids[~idx.contains(store.vids)]
    assert len(new) == 500
    assert idx.add(new, store.get_by_vid(new)) == 500
    assert idx.ntotal == len(store) == 900
    assert idx.rebuild_reason(SMALL) is not None  # 900 > exact_max: time for IVF
    with pytest.raises(ValueError):
        store.vids[0] = 1  # read-only view
