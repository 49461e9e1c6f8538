"""Pool-scale benchmark: embedding throughput, index build / memory / query latency / recall per
index kind at 100k and 1M pool vectors, the candidates a round scores vs the pool size, and
HDBSCAN time on 50k failures.

Usage::

    .venv/bin/python benchmarks/pool_scale.py                 # 100k and 1M, every kind
    .venv/bin/python benchmarks/pool_scale.py --quick         # 100k, no HNSW, smaller samples
    .venv/bin/python benchmarks/pool_scale.py --sizes 100000 --kinds flat,ivf

Prints one JSON object and writes ``benchmarks/results/pool_scale.json``.

Pool vectors are d=64 unit vectors from a seeded Gaussian mixture (2000 anisotropic clusters):
structured like real embeddings (uniform random vectors have no neighbourhood structure and make
every approximate index look bad), generated batch by batch so the pool itself is never held in
memory; only the index is. Embedding throughput is measured separately with the real quality
embedder on generated images (the embedder is the same whatever the pool size), and reported as
images/s plus the projected time to embed 1M images on this machine.

Per size and kind: build seconds (training included), RSS delta of the process (MiB, after the
build, vs before), serialized index bytes, latency of one round's retrieval (all anchors of
12 prototypes x 3 anchors in one batched search, k from :func:`medq.engine.explore.retrieval_k`
for 600 candidates), recall@10 against exact search on 200 perturbed pool vectors (exact top-k
accumulated by streaming the pool), and for the store-backed IVF-PQ path the recall with exact
re-ranking. The "scoring" section runs the real selection (:func:`select_candidates`, 1 % of the
pool excluded as labelled/queued) and reports how many images the model scores per round and
what fraction of the pool that is.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# OpenMP threads that spin-wait make faiss crawl when the cores are shared with other work
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
D = 64
N_CLUSTERS = 2000
BATCH = 65536


def machine() -> dict:
    import faiss
    import psutil
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "mem_gib": round(psutil.virtual_memory().total / 2 ** 30, 1),
            "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(),
            "faiss_gpus": faiss.get_num_gpus(), "load_avg_1m": round(os.getloadavg()[0], 2)}


def rss_mib() -> float:
    import psutil
    gc.collect()
    return psutil.Process().memory_info().rss / 2 ** 20


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (VmHWM, Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Mixture:
    """Seeded Gaussian mixture on the unit sphere, generated in reproducible batches."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.centers = rng.normal(size=(N_CLUSTERS, D)).astype(np.float32)
        # anisotropic spread: each cluster stretched along a few random directions
        self.scales = rng.uniform(0.15, 0.45, size=(N_CLUSTERS, 1)).astype(np.float32)
        self.seed = seed

    def batch(self, start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, start])
        c = rng.integers(0, N_CLUSTERS, n)
        x = self.centers[c] + self.scales[c] * rng.normal(size=(n, D)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return np.arange(start, start + n, dtype=np.int64), x.astype(np.float32)

    def batches(self, n: int):
        for s in range(0, n, BATCH):
            yield self.batch(s, min(BATCH, n - s))


def embedding_throughput(n_images: int) -> dict:
    """Quality embedder (features + standardize + PCA to 64) on generated 128x128 grayscale and
    256x256 RGB images."""
    from scipy import ndimage

    from medq.engine.embed import QualityEmbedder
    rng = np.random.default_rng(0)
    imgs = []
    for i in range(n_images):
        size = 256 if i % 4 == 0 else 128
        f = ndimage.gaussian_filter(rng.normal(size=(size, size)), 4)
        f = (f - f.min()) / (np.ptp(f) + 1e-9)
        f = np.clip(f + rng.normal(0, 0.03 * (i % 3), f.shape), 0, 1).astype(np.float32)
        imgs.append(np.stack([f, f * 0.9, f * 0.8], -1) if i % 4 == 0 else f)
    emb = QualityEmbedder(dims=D)
    t = time.perf_counter()
    emb.fit(imgs[: min(len(imgs), 256)])
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    out = emb.embed(imgs)
    dt = time.perf_counter() - t
    ips = len(imgs) / dt
    return {"images": len(imgs), "mix": "3/4 128x128 gray, 1/4 256x256 RGB", "dim": out.shape[1],
            "fit_s": round(fit_s, 2), "embed_s": round(dt, 2), "images_per_s": round(ips, 1),
            "projected_1m_hours_this_machine": round(1e6 / ips / 3600, 2),
            "note": "embedding is a one-off per pool image (incremental as the pool grows); "
                    "rounds never re-embed the pool"}


def round_queries(mix: Mixture, n: int, rng: np.random.Generator, n_protos: int = 12,
                  per_proto: int = 3) -> np.ndarray:
    """Anchors of one round: failure embeddings near pool points (perturbed pool vectors)."""
    idx = rng.choice(n, size=n_protos * per_proto, replace=False)
    x = np.concatenate([mix.batch(int(i), 1)[1] for i in idx])
    x = x + 0.03 * rng.normal(size=x.shape).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_truth(mix: Mixture, n: int, queries: np.ndarray, k: int):
    from medq.storage.pool_index import _ExactTopK
    acc = _ExactTopK(queries, k)
    t = time.perf_counter()
    for ids, x in mix.batches(n):
        acc.update(ids, x)
    return acc, time.perf_counter() - t


def index_bytes(pidx) -> int:
    fd, tmp = tempfile.mkstemp(suffix=".faiss")
    os.close(fd)
    try:
        pidx.write(tmp)
        return os.path.getsize(tmp)
    finally:
        os.unlink(tmp)


def bench_kind(kind: str, n: int, settings_json: dict, truth_q: np.ndarray, truth_i: np.ndarray,
               round_q: np.ndarray, k_round: int, memmap_path: str | None = None) -> dict:
    """One (size, kind) measurement; runs in a fresh process so that memory is its own."""
    from medq.settings import IndexSettings
    from medq.storage.pool_index import PoolIndex, _ExactTopK, recall_at_k
    settings = IndexSettings(**settings_json)
    mix = Mixture(seed=0)
    truth = _ExactTopK(truth_q, truth_i.shape[1])
    truth.i = truth_i
    store = _MemmapVectors.open(memmap_path, n) if memmap_path else None
    before = rss_mib()
    t = time.perf_counter()
    train = None
    if kind in ("ivf", "ivfpq"):
        # random sample for training: every mixture batch is i.i.d., a strided subset is random
        parts = [mix.batch(s, min(BATCH, n - s))[1][: max(1, settings.train_size * BATCH // n)]
                 for s in range(0, n, BATCH)]
        train = np.concatenate(parts)[: settings.train_size]
    pidx = PoolIndex.build(mix.batches(n), settings=settings, kind=kind, dim=D, expected_size=n,
                           train_vectors=train, check_recall=False)
    build_s = time.perf_counter() - t
    del train
    rss_delta = rss_mib() - before
    peak_delta = peak_rss_mib() - before
    q_ids, _ = pidx.search(truth.q, truth.k)
    t = time.perf_counter()
    reps = 5
    for _ in range(reps):
        pidx.search(round_q, k_round)
    round_ms = 1000 * (time.perf_counter() - t) / reps
    res = {"kind": kind, "n": n, "build_s": round(build_s, 2), "params": pidx.params,
           "rss_delta_mib": round(rss_delta, 1), "peak_rss_delta_mib": round(peak_delta, 1),
           "index_bytes": index_bytes(pidx),
           "bytes_per_vector": round(index_bytes(pidx) / n, 1),
           "round_queries": len(round_q), "round_k": k_round,
           "round_search_ms": round(round_ms, 2),
           "per_query_ms": round(round_ms / len(round_q), 3),
           f"recall@{truth.k}": round(recall_at_k(q_ids, truth.i), 4)}
    if kind == "ivfpq" and store is not None:
        vec = store
        r_ids, _ = pidx.search(truth.q, truth.k, vectors=vec)
        t = time.perf_counter()
        for _ in range(reps):
            pidx.search(round_q, k_round, vectors=vec)
        res[f"recall@{truth.k}_reranked"] = round(recall_at_k(r_ids, truth.i), 4)
        res["round_search_ms_reranked"] = round(1000 * (time.perf_counter() - t) / reps, 2)
    del pidx
    gc.collect()
    return res


def bench_scoring(n: int, mix: Mixture, settings, round_q: np.ndarray, rng) -> dict:
    """The real selection on top of a flat-index search: how many images get scored."""
    from medq.engine.discover import Prototype
    from medq.engine.explore import Anchor, allocate_budget, retrieval_k, select_candidates
    from medq.storage.pool_index import PoolIndex
    n_protos, per = 12, 3
    protos = [Prototype(f"p{i}", "r", ["m"], [0], 0, "m", None, round_q[i * per], float(
        rng.uniform(1, 10)), 0.2, None, None, None, None, "", False, 0.0) for i in range(n_protos)]
    for p in protos:
        p.weight = p.error_mass
    budget = allocate_budget(protos, 600)
    anchors = [Anchor(f"p{i}", a, None, round_q[i * per + a]) for i in range(n_protos)
               for a in range(per)]
    excluded = set(rng.choice(n, size=n // 100, replace=False).tolist())
    k = retrieval_k(budget, anchors, n_excluded=0)
    pidx = PoolIndex.build(mix.batches(n), settings=settings, kind="flat", dim=D,
                           check_recall=False)
    t = time.perf_counter()
    ids, dist = pidx.search(round_q, k)
    search_s = time.perf_counter() - t
    uniq = np.unique(ids[ids >= 0])
    vec_lookup = {int(i): mix.batch(int(i), 1)[1][0] for i in uniq}
    t = time.perf_counter()
    cands = select_candidates(anchors, ids, dist, budget, vectors=vec_lookup, exclude=excluded,
                              near_duplicate_distance=1e-3, diversity=0.3)
    select_s = time.perf_counter() - t
    del pidx
    return {"n": n, "prototypes": n_protos, "anchors": len(anchors), "k_per_anchor": k,
            "retrieved_unique": int(len(uniq)), "excluded_share_of_pool": 0.01,
            "candidates_scored": len(cands), "scored_fraction_of_pool": round(len(cands) / n, 6),
            "search_s": round(search_s, 3), "select_s": round(select_s, 3)}


class _MemmapVectors:
    """Exact pool vectors on disk (np.memmap, like the EmbeddingStore's shard memmaps): the
    IVF-PQ re-ranking source. Written once per size, batch by batch."""

    def __init__(self, mix: Mixture, n: int, folder: Path):
        self.path = folder / f"pool_{n}.f32"
        mm = np.memmap(self.path, dtype=np.float32, mode="w+", shape=(n, D))
        for ids, x in mix.batches(n):
            mm[ids[0]:ids[-1] + 1] = x
        mm.flush()
        del mm
        self.mm = np.memmap(self.path, dtype=np.float32, mode="r", shape=(n, D))

    @classmethod
    def open(cls, path: str, n: int) -> "_MemmapVectors":
        self = cls.__new__(cls)
        self.path = Path(path)
        self.mm = np.memmap(self.path, dtype=np.float32, mode="r", shape=(n, D))
        return self

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        order = np.argsort(ids)
        out = np.empty((len(ids), D), np.float32)
        out[order] = self.mm[np.asarray(ids)[order]]
        return out


def bench_hdbscan(n: int = 50_000) -> dict:
    from medq.engine.discover import Failure, discover_prototypes
    mix = Mixture(seed=7)
    rng = np.random.default_rng(7)
    # failures concentrate on 40 of the mixture's clusters (what a model gets wrong is not uniform)
    picked = rng.choice(N_CLUSTERS, 40, replace=False)
    c = picked[rng.integers(0, 40, n)]
    x = mix.centers[c] + mix.scales[c] * rng.normal(size=(n, D)).astype(np.float32)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    fails = [Failure(f"f{i}", f"i{i}", "wrong_mcq", 1.0) for i in range(n)]
    t = time.perf_counter()
    res = discover_prototypes("bench", fails, x, min_cluster_size=25, reduce_dims=8)
    dt = time.perf_counter() - t
    return {"failures": n, "dim": D, "reduce_dims": 8, "min_cluster_size": 25,
            "seconds": round(dt, 2), "prototypes": sum(not p.is_noise for p in res.prototypes),
            "noise_points": int((res.labels == -1).sum()), "true_clusters": 40}


def _merge(old: dict, new: dict) -> dict:
    """`old` with the sections and (size, kind) entries measured in `new` replaced."""
    merged = dict(old)
    for key in ("embedding", "hdbscan", "settings"):
        if key in new:
            merged[key] = new[key]
    merged.setdefault("runs", []).append({k: new[k] for k in ("started", "finished", "machine")})
    sizes = {e["n"]: e for e in old.get("sizes", [])}
    for e in new.get("sizes", []):
        if e["n"] not in sizes:
            sizes[e["n"]] = e
            continue
        kinds = {k["kind"]: k for k in sizes[e["n"]]["kinds"]}
        kinds.update({k["kind"]: k for k in e["kinds"]})
        sizes[e["n"]] = {**sizes[e["n"]], **{k: v for k, v in e.items() if k != "kinds"},
                         "kinds": list(kinds.values())}
    merged["sizes"] = [sizes[n] for n in sorted(sizes)]
    return merged


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--kinds", default="flat,ivf,ivfpq,hnsw")
    ap.add_argument("--quick", action="store_true", help="100k only, no HNSW, fewer images")
    ap.add_argument("--images", type=int, default=512, help="images for embedding throughput")
    ap.add_argument("--no-hdbscan", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pool_scale.json"))
    ap.add_argument("--merge", action="store_true",
                    help="update only the measured (size, kind) entries of an existing --out file")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = args.kinds.split(",")
    if args.quick:
        sizes, kinds, args.images = [100_000], [k for k in kinds if k != "hnsw"], 128

    from medq.engine.explore import Anchor, retrieval_k
    from medq.settings import IndexSettings
    settings = IndexSettings(recall_sample=200, recall_k=10, use_gpu=True)
    out: dict = {"benchmark": "pool_scale", "machine": machine(), "dim": D,
                 "data": f"Gaussian mixture, {N_CLUSTERS} clusters, unit-normalized",
                 "settings": settings.model_dump(mode="json"), "started": time.strftime("%F %T")}
    if args.images > 0:
        print(f"embedding throughput on {args.images} images ...", file=sys.stderr)
        out["embedding"] = embedding_throughput(args.images)
    out["sizes"] = []
    mix = Mixture(seed=0)
    for n in sizes:
        rng = np.random.default_rng(n)
        sample = np.concatenate([mix.batch(int(i), 1)[1] for i in rng.choice(n, 200, replace=False)])
        queries = (sample + 0.05 * rng.normal(size=sample.shape).astype(np.float32) / math.sqrt(D))
        truth, exact_s = exact_truth(mix, n, queries.astype(np.float32), 10)
        round_q = round_queries(mix, n, rng)
        anchors = [Anchor(f"p{i // 3}", i % 3, None, q) for i, q in enumerate(round_q)]
        k_round = retrieval_k({f"p{i}": 50 for i in range(12)}, anchors)
        entry = {"n": n, "exact_stream_s_200_queries": round(exact_s, 2), "kinds": []}
        with tempfile.TemporaryDirectory(prefix="medq-pool-") as tmp:
            store = _MemmapVectors(mix, n, Path(tmp)) if "ivfpq" in kinds else None
            for kind in kinds:
                print(f"n={n} kind={kind} ...", file=sys.stderr)
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
                    r = ex.submit(bench_kind, kind, n, settings.model_dump(mode="json"), truth.q,
                                  truth.i, round_q, k_round,
                                  str(store.path) if store and kind == "ivfpq" else None).result()
                print(json.dumps(r), file=sys.stderr)
                entry["kinds"].append(r)
            del store
        from medq.storage.pool_index import choose_index_kind
        entry["auto_kind"] = choose_index_kind(n, settings)
        print(f"n={n} scoring ...", file=sys.stderr)
        entry["scoring"] = bench_scoring(n, mix, settings, round_q, rng)
        out["sizes"].append(entry)
    if not args.no_hdbscan:
        print("hdbscan on 50k failures ...", file=sys.stderr)
        out["hdbscan"] = bench_hdbscan(10_000 if args.quick else 50_000)
    out["finished"] = time.strftime("%F %T")
    out["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    if args.merge and Path(args.out).is_file():
        out = _merge(json.loads(Path(args.out).read_text()), out)
    text = json.dumps(out, indent=1, default=str)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
