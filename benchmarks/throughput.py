"""Throughput on this machine: ingest, embedding, lite-model scoring, and the wall time of each
step of a demo round.

1. **ingest** (images/s): PNG and DICOM folders through :func:`medq.storage.ingest.ingest`
   (the measurement of ``benchmarks/ingest_throughput.py``, reused: decode, de-identify, hash,
   normalize, thumbnail, object store, catalog) plus a no-op re-ingest.
2. **embedding** (images/s): the workspace's quality embedder over the pool of a generated
   world, (a) in memory (features + projection only) and (b) through ``embed_pool`` (images
   read from the object store, vectors appended to the embedding store), after one fit.
3. **scoring** (items/s): the trained lite seed model answering the verdict question
   (``answer()`` on :func:`medq.engine.questions.verdict_mcq`, what explore's scoring runs) on
   pool images it has never seen (the per-process feature cache cleared first: quality features
   are computed, as for new candidates), then the same items again with cached features (the
   network and text side only).
4. **round steps** (seconds): a demo-like world (biased seed set, rare cases in the pool) loaded
   into a workspace, the seed model bootstrapped, then ``--rounds`` engine rounds driven step by
   step with the loop's own task functions (``benchmarks/_loop.py``, identical to
   ``engine_loop``; no Prefect engine); with ``--flow``, the same rounds again through the real
   ``engine_loop`` Prefect flow on a copy, to show the orchestration overhead.

Usage::

    .venv/bin/python benchmarks/throughput.py --quick    # small world, 2 rounds (about 2-3 min)
    .venv/bin/python benchmarks/throughput.py            # the demo world (eval 100, pool 2000), 2 rounds, --flow

Writes ``benchmarks/results/throughput.json``; prints it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_info, now_iso, setup_paths, write_result

setup_paths()

QUICK = {"eval_size": 40, "pool_size": 400, "seed_size": 80, "rounds": 2, "ingest_n": 50,
         "score_n": 200, "budget": 30.0, "candidates": 150, "flow": False}
FULL = {"eval_size": 100, "pool_size": 2000, "seed_size": 150, "rounds": 2, "ingest_n": 200,
        "score_n": 1000, "budget": 60.0, "candidates": 300, "flow": True}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rate(n: int, seconds: float) -> float | None:
    return round(n / seconds, 2) if seconds > 0 else None


def bench_ingest(root: Path, n: int) -> dict:
    """PNG + DICOM ingest through the pipeline (helpers of ingest_throughput.py)."""
    import ingest_throughput as it

    from medq.settings import load_settings
    from medq.storage.workspace import Workspace
    it._write_pngs(root / "png", n, 256)
    it._write_dicoms(root / "dicom", n)
    ws = Workspace.init(load_settings(workspace=root / "ws"))
    return {"files_per_format": n,
            "png_256": it._run(ws, root / "png", "pool"),
            "dicom_ct_128": it._run(ws, root / "dicom", "pool"),
            "png_reingest_noop": it._run(ws, root / "png", "pool")}


def bench_embedding(ws: str) -> dict:
    """Embedder fit, in-memory embedding and embed_pool over the workspace's pool."""
    from medq.engine.embed import create_embedder
    from medq.storage import loop_records
    from medq.storage.images import load_images
    from medq.tasks._runtime import open_workspace
    from medq.tasks.embed import embed_pool, ensure_embedder, ensure_pool_index
    w = open_workspace(ws)
    ids = loop_records.pool_image_ids(w.catalog)
    size = w.settings.embedder.image_size
    t = time.perf_counter()
    images = load_images(w, ids, size=size)
    load_s = time.perf_counter() - t
    emb = create_embedder(w.settings.embedder)
    t = time.perf_counter()
    emb.fit(images[:min(len(images), 1000)])
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    emb.embed(images)
    mem_s = time.perf_counter() - t
    t = time.perf_counter()
    ensure_embedder(ws, 0)
    ensure_s = time.perf_counter() - t
    t = time.perf_counter()
    pool = embed_pool(ws)
    pool_s = time.perf_counter() - t
    t = time.perf_counter()
    index = ensure_pool_index(ws, 0)
    index_s = time.perf_counter() - t
    return {"images": len(ids), "image_size": size, "dim": emb.dim,
            "load_images_per_s": rate(len(ids), load_s), "fit_s": round(fit_s, 2),
            "in_memory_images_per_s": rate(len(ids), mem_s),
            "ensure_embedder_s": round(ensure_s, 2),
            "embed_pool_images_per_s": rate(pool["added"], pool_s),
            "embed_pool_s": round(pool_s, 2), "index_build_s": round(index_s, 2),
            "index_kind": index.get("kind")}


def bench_scoring(ws: str, version: str, n: int) -> dict:
    """Verdict-question answers of the seed model on `n` unseen pool images, cold and warm."""
    from medq.engine.models import lite
    from medq.storage import loop_records
    from medq.storage.images import load_images
    from medq.storage.model_registry import load_model_version
    from medq.tasks._runtime import open_workspace
    from medq.tasks.explore import verdict_scores
    w = open_workspace(ws)
    rows = loop_records.pool_images_with_modality(w.catalog, n)
    ids, mods = [r["image_id"] for r in rows], [r["modality"] for r in rows]
    model = load_model_version(w, version)
    t = time.perf_counter()
    images = load_images(w, ids)
    load_s = time.perf_counter() - t
    verdict_scores(model, images[:8], ids[:8], mods[:8])  # text side warm (encoder, anchors)
    out = {"backend": model.backend, "model": version, "items": len(ids),
           "load_images_per_s": rate(len(ids), load_s)}
    if hasattr(lite, "_feature_cache"):
        lite._feature_cache.clear()
    for label in ("cold_features", "cached_features"):
        t = time.perf_counter()
        for s in range(0, len(ids), 128):  # explore scores in batches of 128 (SCORE_BATCH)
            verdict_scores(model, images[s:s + 128], ids[s:s + 128], mods[s:s + 128])
        dt = time.perf_counter() - t
        out[f"{label}_items_per_s"] = rate(len(ids), dt)
        out[f"{label}_s"] = round(dt, 2)
    return out


def bench_rounds(work: Path, args) -> dict:
    """World -> workspace -> bootstrap -> `args.rounds` engine rounds (driver), timed per step."""
    from _loop import bootstrap, round_config, run_round
    from prefect.logging import disable_run_logger
    from sample_efficiency import copy_workspace, release, write_config

    from medq.storage.world_writer import write_world
    from medq.tasks._runtime import open_workspace
    from medq.tasks.world_setup import demo_world_spec, load_world_task
    out: dict = {"world": {"eval_size": args.eval_size, "pool_size": args.pool_size,
                           "seed_size": args.seed_size}, "budget": args.budget,
                 "candidates": args.candidates}
    t = time.perf_counter()
    write_world(demo_world_spec(0, eval_size=args.eval_size, pool_size=args.pool_size,
                                seed_size=args.seed_size), work / "world")
    out["synthesize_world_s"] = round(time.perf_counter() - t, 2)
    ws = work / "ws"
    write_config(ws, "lite", 0)
    with disable_run_logger():
        open_workspace(str(ws))
        t = time.perf_counter()
        load_world_task(str(ws), str(work / "world"))
        out["load_world_s"] = round(time.perf_counter() - t, 2)
        out["load_world_images_per_s"] = rate(args.eval_size + args.pool_size + args.seed_size,
                                              time.perf_counter() - t)
        log("embedding")
        out["embedding"] = bench_embedding(str(ws))
        t = time.perf_counter()
        boot = bootstrap(str(ws), 0)
        out["bootstrap_s"] = round(time.perf_counter() - t, 2)
        out["seed_model_accuracy"] = boot["metrics"].get("accuracy")
        log("scoring")
        out["scoring"] = bench_scoring(str(ws), boot["version"], args.score_n)
        release(ws)
        copy_workspace(ws, work / "ws-flow")  # same start for the --flow comparison
        config = round_config(str(ws), args.budget, args.candidates, 0)
        rounds = []
        for r in range(args.rounds):
            log(f"round {r + 1}")
            t = time.perf_counter()
            res = run_round(str(ws), "engine", config)
            rounds.append({"round_id": res["round_id"], "seconds": round(time.perf_counter() - t, 2),
                           "steps": res["steps"], "n_failures": res.get("n_failures"),
                           "n_prototypes": res.get("n_prototypes"),
                           "n_candidates": res.get("n_candidates"),
                           "items_by_lane": res.get("items_by_lane"),
                           "n_train": res.get("n_train"), "accuracy_out": res.get("accuracy_out")})
    out["rounds"] = rounds
    if args.flow:
        log("the same rounds through the engine_loop Prefect flow")
        from medq.flows.engine_loop import engine_loop
        t = time.perf_counter()
        engine_loop(workspace=str(work / "ws-flow"), rounds=args.rounds,
                    budget_per_round=args.budget, annotator="simulated",
                    candidates_per_round=args.candidates, seed=0, plateau_rounds=args.rounds + 1)
        out["engine_loop_flow_s"] = round(time.perf_counter() - t, 2)
        out["driver_rounds_s"] = round(sum(r["seconds"] for r in rounds), 2)
        out["flow_note"] = ("engine_loop includes starting Prefect's temporary local server, "
                            "the API round trips of every task and sub-flow, and artifacts")
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    for k in ("eval_size", "pool_size", "seed_size", "rounds", "ingest_n", "score_n", "candidates"):
        ap.add_argument("--" + k.replace("_", "-"), type=int)
    ap.add_argument("--budget", type=float)
    ap.add_argument("--flow", action=argparse.BooleanOptionalAction, default=None,
                    help="also time the rounds through the engine_loop Prefect flow")
    ap.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    args = ap.parse_args(argv)
    for k, v in (QUICK if args.quick else FULL).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    started, t0 = now_iso(), time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="medq-bench-tp-"))
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    try:
        log(f"ingest: {args.ingest_n} PNG + {args.ingest_n} DICOM files")
        ingest = bench_ingest(work / "ingest", args.ingest_n)
        rounds = bench_rounds(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    steps: dict[str, list[float]] = {}
    for r in rounds["rounds"][1:] or rounds["rounds"]:  # the first round pays one-off imports
        for k, v in r["steps"].items():
            steps.setdefault(k, []).append(v)
    result = {"mode": "quick" if args.quick else "full", "started": started,
              "ingest": ingest, "embedding": rounds.pop("embedding"),
              "scoring": rounds.pop("scoring"), "loop": rounds,
              "round_step_seconds_mean": {k: round(sum(v) / len(v), 2) for k, v in steps.items()},
              "round_step_seconds_first": rounds["rounds"][0]["steps"] if rounds["rounds"] else {},
              "seconds": round(time.perf_counter() - t0, 1), "machine": machine_info()}
    path = write_result("throughput", result, out=args.out, machine=result["machine"])
    import json
    print(json.dumps({k: result[k] for k in ("ingest", "embedding", "scoring",
                                             "round_step_seconds_mean")}, indent=2))
    log(f"wrote {path} ({result['seconds']} s)")
    return result


if __name__ == "__main__":
    main()
