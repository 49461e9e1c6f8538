"""Sample efficiency of the closed loop against the baselines a user would otherwise run.

On one world (generated: a seed set that under-represents MRI and endoscopy, a pool where they
are 10 %; or ANY world folder in the MedQ layout with ``--world DIR``), every strategy runs the
same schedule: the same seed model, the same rounds, the same cost budget per round, the same
simulated annotators, the same curation suite, fine-tuning, evaluation and promotion gate.
Strategies (see ``benchmarks/_loop.py``): ``random``, ``entropy`` (top entropy over a random
sample as large as the engine's scoring cost), ``retrieval`` (prototype retrieval, no routing),
``coreset`` (k-center greedy on the embeddings) and ``engine`` (the full loop).

How: the world is loaded once into a workspace whose embedder, pool embeddings and FAISS index
are built once (they never depend on the model). For each seed that workspace is copied and the
seed model is trained (seed s: model weights, annotator errors, random draws); for each strategy
the seeded workspace is copied again and the rounds run in the copy. Every round is a real
round of the catalog (rounds, candidates, routes, annotations, datasets, model versions), so a
kept workspace (``--keep``) opens in the dashboard.

Measured per (strategy, seed, round): human labels added to training (expert + verify lanes;
x axis), MCQ accuracy on the eval set of the model trained in that round (``accuracy``) and of
the champion after the promotion gate (``champion_accuracy``), pseudo-labels (auto lane, free,
counted apart), annotation records, cost units spent, the share of the picks the starting model
got wrong, and wall seconds per step. Round 0 is the seed model (0 labels).

Summary per strategy (mean, std, min, max over seeds): final labels and accuracy; AUC = mean
accuracy over [0, X] labels (X = the smallest final label count of all strategies of that seed,
trapezoids, linear interpolation); labels needed to first reach random's final accuracy
(linear interpolation between rounds; ``null`` = never reached within the schedule) and the
sample-efficiency ratio = random's labels for that accuracy / the strategy's. The ratio is also
computed on the seed-averaged curves. Everything for ``accuracy`` and for ``champion_accuracy``.

Usage::

    .venv/bin/python benchmarks/sample_efficiency.py --quick          # 2 seeds, 3 rounds: ~4 min on 2 cores
    .venv/bin/python benchmarks/sample_efficiency.py                  # full: 3 seeds, 8 rounds: ~40 min
    .venv/bin/python benchmarks/sample_efficiency.py --world DIR --seeds 0,1,2 --rounds 5
    .venv/bin/python benchmarks/sample_efficiency.py --work DIR --resume   # after an interruption
    .venv/bin/python benchmarks/sample_efficiency.py --from-json FILE      # re-summarize only

Writes ``benchmarks/results/sample_efficiency.json`` ({"curves", "summary", "machine", ...}) and
``benchmarks/results/sample_efficiency.png``; prints the summary table.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_info, mean_std, now_iso, setup_paths, write_json, write_result

setup_paths()

import numpy as np
from _loop import STRATEGIES

QUICK = {"eval_size": 60, "pool_size": 800, "seed_size": 100, "rounds": 3, "seeds": "0,1",
         "budget": 30.0, "candidates": 150}
FULL = {"eval_size": 200, "pool_size": 4000, "seed_size": 150, "rounds": 8, "seeds": "0,1,2",
        "budget": 60.0, "candidates": 300}
PROGRESS = "bench_progress.json"  # per workspace: what --resume reuses
# summary views: name -> (x, y); x = human labels added or cost units spent
VIEWS = {"accuracy": ("annotations", "accuracy"),
         "champion_accuracy": ("annotations", "champion_accuracy"),
         "accuracy_vs_cost": ("cost", "accuracy")}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- workspaces ---------------------------------------------------------------------------------

def write_config(ws: Path, backend: str, seed: int) -> None:
    """The workspace's medq.yaml: model backend and seed (the seed also drives the simulated
    annotators' errors)."""
    import yaml
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "medq.yaml").write_text("# written by benchmarks/sample_efficiency.py\n" + yaml.safe_dump(
        {"model": {"backend": backend, "seed": int(seed)}}))


def copy_workspace(src: Path, dst: Path) -> None:
    """A copy of a closed workspace (catalog, objects, index, model cache) as a new workspace
    instance; the Prefect home and scratch files are left out."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("prefect", "tmp"))
    # a new workspace instance: its own id, so Prefect cache keys (workspace id + inputs) of the
    # copies never collide (model versions are named by dataset, not by training seed)
    (dst / "workspace.id").unlink(missing_ok=True)


def release(ws: Path) -> None:
    """Forget the process caches that hold this workspace (catalog handles, models, backends)."""
    from medq.storage import model_registry as model_store
    from medq.tasks import annotate
    from medq.tasks._runtime import forget_workspaces
    forget_workspaces()
    root = str(ws)
    for cache in (getattr(model_store, "_LOADED", {}), annotate._BACKENDS):
        for key in [k for k in cache if str(k[0]) == root]:
            cache.pop(key, None)


def generate_world(folder: Path, args) -> Path:
    """The demo-like world of `args` in `folder` (reused when its world.json has the same spec;
    the writer removes stale files of another spec)."""
    from dataclasses import replace

    from medq.storage.world_writer import read_world_spec, write_world
    from medq.tasks.world_setup import demo_world_spec
    spec = demo_world_spec(args.world_seed, eval_size=args.eval_size, pool_size=args.pool_size,
                           seed_size=args.seed_size)
    # the demo's biases (MRI + endoscopy: x0.05 in the seed set, 10 % of the pool) unless changed
    spec = replace(spec, seed_bias=replace(spec.seed_bias, factor=args.rare_factor),
                   pool_rare=replace(spec.pool_rare, share=args.rare_share))
    if (folder / "world.json").is_file() and read_world_spec(folder).to_dict() == spec.to_dict():
        return folder
    log(f"generating world: eval {args.eval_size} images, pool {args.pool_size}, seed set "
        f"{args.seed_size}")
    write_world(spec, folder)
    return folder


def world_workspace(world: Path, work: Path, backend: str,
                    resume: bool = False) -> tuple[Path, dict]:
    """Load the world and build embedder + pool embeddings + index once (seed 0)."""
    from _loop import prepare_pool
    from prefect.logging import disable_run_logger

    from medq.storage import loop_records
    from medq.tasks._runtime import open_workspace
    from medq.tasks.world_setup import load_world_task
    ws = work / "world-ws"
    saved = ws / PROGRESS
    if resume and saved.is_file():
        return ws, json.loads(saved.read_text())
    info: dict[str, Any] = {}
    if ws.exists():
        shutil.rmtree(ws)
    write_config(ws, backend, 0)
    t = time.perf_counter()
    with disable_run_logger():
        open_workspace(str(ws))
        loaded = load_world_task(str(ws), str(world))
        info["load_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        info["pool"] = prepare_pool(str(ws), 0)
        info["embed_index_s"] = round(time.perf_counter() - t, 1)
    info["loaded"] = {k: v for k, v in loaded.items() if isinstance(v, (int, float, str, dict))}
    cat = open_workspace(str(ws)).catalog
    info["counts"] = loop_records.split_image_counts(cat)
    info["eval_mcqs"] = loop_records.eval_mcq_count(cat)
    info["oracle_labels"] = loop_records.oracle_label_count(cat)
    release(ws)
    if info["counts"].get("pool", 0) == 0 or info["counts"].get("train", 0) == 0 or not info["eval_mcqs"]:
        from medq.errors import MedQError
        raise MedQError(f"world {world}: needs eval MCQs, a labelled seed set and a pool; loaded "
                        f"{info['counts']} images by split and {info['eval_mcqs']} eval MCQs")
    if info["oracle_labels"] < info["counts"]["pool"]:
        from medq.errors import MedQError
        raise MedQError(f"world {world}: only {info['oracle_labels']} of {info['counts']['pool']} "
                        "pool images have labels (pool_labels.jsonl); simulated annotators need all")
    write_json(saved, info)
    return ws, info


# -- running ------------------------------------------------------------------------------------

def seed_workspace(world_ws: Path, work: Path, seed: int, backend: str,
                   resume: bool = False) -> tuple[Path, dict]:
    """A copy of the world workspace with the seed model of `seed` trained and evaluated."""
    from _loop import bootstrap
    from prefect.logging import disable_run_logger
    ws = work / f"seed{seed}" / "base"
    if resume and (ws / PROGRESS).is_file():
        return ws, json.loads((ws / PROGRESS).read_text())
    copy_workspace(world_ws, ws)
    write_config(ws, backend, seed)
    t = time.perf_counter()
    with disable_run_logger():
        boot = bootstrap(str(ws), seed)
    release(ws)
    boot["seconds"] = round(time.perf_counter() - t, 1)
    write_json(ws / PROGRESS, boot)
    return ws, boot


def run_strategy(base: Path, work: Path, strategy: str, seed: int, seed_model: dict,
                 args) -> tuple[list[dict], list[dict]]:
    """Rounds of one strategy in a fresh copy of the seeded workspace -> (curve points, rounds)."""
    from _loop import round_config, round_labels, run_round
    from prefect.logging import disable_run_logger
    ws = work / f"seed{seed}" / strategy
    progress = ws / PROGRESS
    acc0 = seed_model["metrics"].get("accuracy")
    points = [{"strategy": strategy, "seed": seed, "round": 0, "annotations": 0,
               "accuracy": acc0, "champion_accuracy": acc0,
               "description": (seed_model["metrics"].get("description") or {}).get("overall"),
               "pseudo_labels": 0, "annotation_records": 0, "cost": 0.0, "promoted": None}]
    rounds: list[dict] = []
    if args.resume and progress.is_file():  # rounds recorded by an interrupted run
        saved = json.loads(progress.read_text())
        points, rounds = saved["points"], saved["rounds"]
        log(f"seed {seed} {strategy}: resuming after {len(rounds)} recorded round(s)")
    else:
        copy_workspace(base, ws)
    last = points[-1]
    labels, pseudo, records = last["annotations"], last["pseudo_labels"], last["annotation_records"]
    cost, champion_acc = last["cost"], last["champion_accuracy"]
    with disable_run_logger():
        config = round_config(str(ws), args.budget, args.candidates, seed)
        for r in range(len(rounds) + 1, args.rounds + 1):
            t = time.perf_counter()
            out = run_round(str(ws), strategy, config, coreset_max=args.coreset_max)
            added = round_labels(str(ws), out["round_id"])
            seconds = time.perf_counter() - t
            labels += added["human_labels"]
            pseudo += added["pseudo_labels"]
            records += added["annotation_records"]
            cost += float(out.get("spend") or 0.0)
            failed = out.get("curation_failed")
            if not failed and out.get("promoted"):
                champion_acc = out["accuracy_out"]
            trained_acc = points[-1]["accuracy"] if failed else out.get("accuracy_out")
            points.append({"strategy": strategy, "seed": seed, "round": r, "annotations": labels,
                           "accuracy": trained_acc, "champion_accuracy": champion_acc,
                           "description": None if failed else out.get("description_out"),
                           "pseudo_labels": pseudo, "annotation_records": records,
                           "cost": round(cost, 3), "promoted": None if failed else out.get("promoted"),
                           "curation_failed": failed})
            rounds.append({"strategy": strategy, "seed": seed, "round": r,
                           "round_id": out["round_id"], "seconds": round(seconds, 2),
                           "steps": out["steps"], "curation_failed": failed,
                           "n_candidates": out.get("n_candidates"),
                           "n_scored_for_selection": out.get("n_scored_for_selection"),
                           "n_prototypes": out.get("n_prototypes"),
                           "items_by_lane": out.get("items_by_lane"),
                           "failure_yield": out.get("failure_yield"),
                           "promotion_reason": out.get("promotion_reason"),
                           "model_out": out.get("model_out"), "dataset_id": out.get("dataset_id"),
                           "accuracy_out": out.get("accuracy_out"), "promoted": out.get("promoted"),
                           **added})
            write_json(progress, {"points": points, "rounds": rounds})
            log(f"seed {seed} {strategy:9s} round {r}: +{added['human_labels']} labels "
                f"(+{added['pseudo_labels']} pseudo), acc "
                f"{_pct(trained_acc)} (champion {_pct(champion_acc)}), picks wrong "
                f"{_pct(added['picks_wrong'])}, {seconds:.1f} s" + (f" CURATION FAILED: {failed}"
                                                                   if failed else ""))
    release(ws)
    if not args.keep:
        shutil.rmtree(ws, ignore_errors=True)
    return points, rounds


FLOW_FIELDS = ("model_out", "dataset_id", "accuracy_out", "promoted", "items_by_lane")


def check_engine_flow(base: Path, work: Path, seed: int, driver_rounds: list[dict], args) -> dict:
    """Run the real ``engine_loop`` Prefect flow on another copy of the seeded workspace and
    compare its round reports with the driver's engine rounds (same selection -> same dataset
    ids and model versions, which are content hashes)."""
    from medq.flows.engine_loop import engine_loop
    from medq.storage import loop_records
    from medq.storage.catalog import Catalog, loads
    ws = work / f"seed{seed}" / "engine-flow"
    copy_workspace(base, ws)
    t = time.perf_counter()
    engine_loop(workspace=str(ws), rounds=args.rounds, budget_per_round=args.budget,
                annotator="simulated", candidates_per_round=args.candidates, seed=seed,
                plateau_rounds=args.rounds + 1)
    seconds = time.perf_counter() - t
    cat = Catalog.open(ws / "catalog.duckdb", read_only=True)
    flow = [loads(r["report"], {}) for r in loop_records.done_round_reports(cat)]
    release(ws)
    mine = [r for r in driver_rounds if r["strategy"] == "engine" and r["seed"] == seed]
    diffs = [{"round": i + 1, "field": f, "flow": a.get(f), "driver": b.get(f)}
             for i, (a, b) in enumerate(zip(flow, mine)) for f in FLOW_FIELDS
             if a.get(f) != b.get(f)]
    if len(flow) != len(mine):
        diffs.append({"field": "rounds", "flow": len(flow), "driver": len(mine)})
    if not args.keep:
        shutil.rmtree(ws, ignore_errors=True)
    return {"seed": seed, "identical": not diffs, "differences": diffs,
            "flow_seconds": round(seconds, 1),
            "driver_seconds": round(sum(r["seconds"] for r in mine), 1)}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


# -- summary ------------------------------------------------------------------------------------

def first_reach(xs: list[float], ys: list[float], target: float) -> float | None:
    """Smallest x at which the piecewise-linear curve (xs ascending) first reaches `target`;
    None if it never does."""
    for i, (x, y) in enumerate(zip(xs, ys)):
        if y is None:
            continue
        if y >= target - 1e-12:
            if i == 0 or ys[i - 1] is None or ys[i - 1] >= y or x == xs[i - 1]:
                return float(x)
            x0, y0 = xs[i - 1], ys[i - 1]
            return float(x0 + (target - y0) / (y - y0) * (x - x0))
    return None


def area(xs: list[float], ys: list[float], upto: float) -> float | None:
    """Mean of the piecewise-linear curve over [xs[0], upto] (trapezoids)."""
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
    if len(pts) < 2 or upto <= pts[0][0]:
        return None
    total, prev = 0.0, pts[0]
    for x, y in pts[1:]:
        if prev[0] >= upto:
            break
        if x > upto:  # cut the segment at `upto`
            y = prev[1] + (y - prev[1]) * (upto - prev[0]) / (x - prev[0])
            x = upto
        total += (x - prev[0]) * (y + prev[1]) / 2
        prev = (x, y)
    return total / (min(upto, prev[0]) - pts[0][0]) if prev[0] > pts[0][0] else None


def _curve(points: list[dict], x: str, y: str) -> tuple[list[float], list[float]]:
    pts = sorted(points, key=lambda p: p["round"])
    return [float(p[x]) for p in pts], [p[y] for p in pts]


def picks_summary(rounds: list[dict]) -> dict:
    """What a strategy sent to annotators, over all its rounds and seeds: the share the starting
    model got wrong (mean of rounds) and the share of each modality."""
    wrong = [r["picks_wrong"] for r in rounds if r.get("picks_wrong") is not None]
    mods: dict[str, int] = {}
    for r in rounds:
        for m, n in (r.get("picks_by_modality") or {}).items():
            mods[m] = mods.get(m, 0) + n
    total = sum(mods.values())
    return {"wrong_share": mean_std(wrong),
            "modality_share": {m: round(n / total, 4) for m, n in sorted(mods.items())} if total
            else {}}


def _view(runs: dict[str, list[dict]], x: str, y: str, common: float) -> dict[str, dict]:
    """One seed, one (x, y) view: per strategy final x / y, AUC over [0, common], the x at
    which it first reaches random's final y and the ratio random's x / its x."""
    rx, ry = _curve(runs["random"], x, y)
    target = ry[-1]
    n_random = first_reach(rx, ry, target)
    out = {}
    for s, pts in runs.items():
        xs, ys = _curve(pts, x, y)
        need = first_reach(xs, ys, target)
        # need == 0: the seed model already matches random's final accuracy (no ratio)
        ratio = n_random / need if need and n_random else None
        out[s] = {"final_x": xs[-1], "final": ys[-1], "auc": area(xs, ys, common),
                  "x_to_random_final": need, "reached": need is not None, "ratio": ratio,
                  "random_final": target}
    return out


def summarize(curves: dict[str, list[dict]], seeds: list[int], target_ratio: float,
              rounds: list[dict] | None = None) -> dict:
    """Per-seed and seed-aggregated AUC, x-to-random's-final and efficiency ratios for every
    view in VIEWS (x = labels or cost units, y = trained-model or champion accuracy)."""
    rounds_of: dict[str, list[dict]] = {}
    for r in rounds or []:
        rounds_of.setdefault(r["strategy"], []).append(r)
    out: dict[str, Any] = {"views": {k: {"x": x, "y": y} for k, (x, y) in VIEWS.items()},
                           "strategies": {}, "target_ratio": target_ratio}
    per: dict[str, dict[str, list]] = {s: {} for s in curves}
    for seed in seeds:
        runs = {s: [p for p in pts if p["seed"] == seed] for s, pts in curves.items()}
        runs = {s: v for s, v in runs.items() if len(v) > 1}
        if "random" not in runs:
            continue
        for view, (x, y) in VIEWS.items():
            common = min(max(p[x] for p in v) for v in runs.values())
            for s, row in _view(runs, x, y, common).items():
                per[s].setdefault(view, []).append({"seed": seed, "auc_upto": common, **row})
    for s, views in per.items():
        entry: dict[str, Any] = {}
        for view, rows in views.items():
            entry[view] = {
                "final_x": mean_std([r["final_x"] for r in rows]),
                "final": mean_std([r["final"] for r in rows]),
                "auc": mean_std([r["auc"] for r in rows]),
                "x_to_random_final": mean_std([r["x_to_random_final"] for r in rows]),
                "reached_random_final": f"{sum(r['reached'] for r in rows)}/{len(rows)} seeds",
                "ratio": mean_std([r["ratio"] for r in rows]),
                "per_seed": rows}
        mine = [p for p in curves[s]]
        finals = [max((p for p in mine if p["seed"] == seed), key=lambda p: p["round"])
                  for seed in seeds if any(p["seed"] == seed for p in mine)]
        entry["labels"] = mean_std([p["annotations"] for p in finals])
        entry["pseudo_labels"] = mean_std([p["pseudo_labels"] for p in finals])
        entry["cost"] = mean_std([p["cost"] for p in finals])
        entry["picks"] = picks_summary(rounds_of.get(s, []))
        out["strategies"][s] = entry
    out["mean_curve"] = mc = mean_curves(curves)
    if "random" in mc:  # ratios on the seed-averaged curves
        for view, (x, y) in VIEWS.items():
            rx = [p[x] for p in mc["random"]]
            ry = [p[y]["mean"] for p in mc["random"]]
            n_random = first_reach(rx, ry, ry[-1])
            for s, pts in mc.items():
                need = first_reach([p[x] for p in pts], [p[y]["mean"] for p in pts], ry[-1])
                out["strategies"][s].setdefault("mean_curve_ratio", {})[view] = (
                    n_random / need if need and n_random else None)
    engine = out["strategies"].get("engine", {})
    labels, cost = engine.get("accuracy", {}), engine.get("accuracy_vs_cost", {})
    ratio = (labels.get("ratio") or {}).get("mean")
    out["headline"] = {
        "engine_vs_random_ratio_mean": ratio,
        "engine_vs_random_ratio_std": (labels.get("ratio") or {}).get("std"),
        "engine_reached_random_final": labels.get("reached_random_final"),
        "engine_vs_random_ratio_mean_curve": (engine.get("mean_curve_ratio") or {}).get("accuracy"),
        "engine_vs_random_cost_ratio_mean": (cost.get("ratio") or {}).get("mean"),
        "engine_vs_random_cost_ratio_std": (cost.get("ratio") or {}).get("std"),
        "best_strategy_by_label_ratio": max(
            ((s, (e.get("accuracy", {}).get("ratio") or {}).get("mean") or 0.0)
             for s, e in out["strategies"].items()), key=lambda kv: kv[1], default=(None, 0))[0],
        "target_ratio": target_ratio,
        "target_met": bool(ratio is not None and ratio >= target_ratio)}
    return out


def mean_curves(curves: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Per strategy and round: mean labels and cost, mean/std of each accuracy over seeds."""
    out = {}
    for s, pts in curves.items():
        rows = []
        for r in sorted({p["round"] for p in pts}):
            at = [p for p in pts if p["round"] == r]
            rows.append({"round": r, "annotations": float(np.mean([p["annotations"] for p in at])),
                         "cost": float(np.mean([p["cost"] for p in at])),
                         **{m: mean_std([p[m] for p in at]) for m in ("accuracy",
                                                                      "champion_accuracy")}})
        out[s] = rows
    return out


# -- plot ---------------------------------------------------------------------------------------

COLORS = {"random": "#7f7f7f", "entropy": "#1f77b4", "retrieval": "#2ca02c",
          "coreset": "#9467bd", "engine": "#d62728"}


def plot(result: dict, path: Path) -> Path | None:
    """Accuracy vs labels, accuracy vs cost (mean over seeds, band = ± std) and the ratios."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plot (pip install matplotlib)")
        return None
    summary = result["summary"]
    mc = summary["mean_curve"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5), gridspec_kw={"width_ratios": [3, 3, 2.4]})
    n_seeds = len(result["params"]["seeds"])
    for ax, x, xlabel in ((axes[0], "annotations", "human labels added (expert + verify lanes)"),
                          (axes[1], "cost", "cost units spent (expert 1, verify 0.3, auto 0)")):
        for s, pts in mc.items():
            xs = [p[x] for p in pts]
            y = np.array([100 * (p["accuracy"]["mean"] or np.nan) for p in pts])
            sd = np.array([100 * (p["accuracy"]["std"] or 0.0) for p in pts])
            ax.plot(xs, y, "-o", ms=3.5, color=COLORS.get(s), label=s,
                    lw=2.4 if s == "engine" else 1.4, zorder=3 if s == "engine" else 2)
            if n_seeds > 1:
                ax.fill_between(xs, y - sd, y + sd, color=COLORS.get(s), alpha=0.10)
        target = mc.get("random", [{}])[-1].get("accuracy", {}).get("mean")
        if target is not None:
            ax.axhline(100 * target, color="#7f7f7f", ls=":", lw=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("eval MCQ accuracy (%) of the model trained in the round")
        ax.grid(alpha=0.3)
    axes[0].set_title("Accuracy vs labels (mean over seeds, band ± std;\ndotted: random's final)",
                      fontsize=10)
    axes[1].set_title("Accuracy vs annotation cost (same budget per round)", fontsize=10)
    axes[0].legend(fontsize=8, loc="lower right")
    strategies = [s for s in STRATEGIES if s in summary["strategies"]]
    ax = axes[2]
    width = 0.38
    for j, (view, label, alpha) in enumerate((("accuracy", "per label", 1.0),
                                               ("accuracy_vs_cost", "per cost unit", 0.45))):
        xs = np.arange(len(strategies)) + (j - 0.5) * width
        r = [summary["strategies"][s][view]["ratio"] for s in strategies]
        ax.bar(xs, [v["mean"] or 0.0 for v in r], width, yerr=[v["std"] or 0.0 for v in r],
               capsize=3, color=[COLORS.get(s) for s in strategies], alpha=alpha,
               edgecolor="black", lw=0.5, label=label)
        curve = [summary["strategies"][s].get("mean_curve_ratio", {}).get(view) for s in strategies]
        ax.plot(xs, [c if c is not None else np.nan for c in curve], "kD", ms=4, ls="none")
    ax.axhline(1.0, color="#7f7f7f", lw=1)
    ax.axhline(summary["target_ratio"], color="#d62728", ls="--", lw=1)
    reached = [summary["strategies"][s]["accuracy"]["reached_random_final"].split()[0]
               for s in strategies]
    ax.set_xticks(range(len(strategies)), [f"{s}\n{r}" for s, r in zip(strategies, reached)],
                  fontsize=8)
    ax.set_ylabel("sample-efficiency ratio vs random")
    ax.set_title("Sample efficiency vs random: labels (cost) random needs /\nlabels (cost) the "
                 "strategy needs for random's final accuracy\n(bars: mean of the seeds that reach "
                 "it, n/N below; dots: mean curves)", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    p = result["params"]
    fig.suptitle(f"MedQ sample efficiency: {p['world']}; {len(p['seeds'])} seed(s), "
                 f"{p['rounds']} rounds x {p['budget']:g} cost units, {p['candidates']} scored per "
                 f"round, backend {p['backend']}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown_table(summary: dict) -> str:
    """The per-strategy summary as a markdown table (mean ± std over seeds)."""
    def ms(d, scale=1.0, fmt="{:.1f}"):
        if not d or d.get("mean") is None:
            return "-"
        sd = "" if d.get("std") is None else " ± " + fmt.format(scale * d["std"])
        return fmt.format(scale * d["mean"]) + sd

    def one(x, fmt="{:.2f}"):
        return "-" if x is None else fmt.format(x)

    lines = [("| strategy | labels | cost | pseudo-labels | final acc % | AUC % | labels to random's "
              "final (seeds reaching it) | ratio per label | ratio per label, mean curve | ratio "
              "per cost unit | picks the model got wrong % |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s, e in summary["strategies"].items():
        a, c = e.get("accuracy", {}), e.get("accuracy_vs_cost", {})
        lines.append(
            f"| {s} | {ms(e.get('labels'), fmt='{:.0f}')} | {ms(e.get('cost'), fmt='{:.0f}')} | "
            f"{ms(e.get('pseudo_labels'), fmt='{:.0f}')} | {ms(a.get('final'), 100)} | "
            f"{ms(a.get('auc'), 100)} | {ms(a.get('x_to_random_final'), fmt='{:.0f}')} "
            f"({a.get('reached_random_final', '-')}) | {ms(a.get('ratio'), fmt='{:.2f}')} | "
            f"{one((e.get('mean_curve_ratio') or {}).get('accuracy'))} | "
            f"{ms(c.get('ratio'), fmt='{:.2f}')} | "
            f"{ms((e.get('picks') or {}).get('wrong_share'), 100)} |")
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small world, 2 seeds, 3 rounds (< 10 min)")
    ap.add_argument("--world", type=Path, help="a world folder (eval/, seed/, pool/ + labels); "
                    "default: generate the demo-like world")
    ap.add_argument("--world-seed", type=int, default=0)
    ap.add_argument("--rare-share", type=float, default=0.1,
                    help="generated world: share of MRI + endoscopy in the pool")
    ap.add_argument("--rare-factor", type=float, default=0.05,
                    help="generated world: weight of MRI + endoscopy in the seed set (x)")
    ap.add_argument("--eval-size", type=int)
    ap.add_argument("--pool-size", type=int)
    ap.add_argument("--seed-size", type=int)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--seeds", help="comma-separated, e.g. 0,1,2")
    ap.add_argument("--budget", type=float, help="cost units per round")
    ap.add_argument("--candidates", type=int, help="items the engine scores per round (and the "
                    "entropy baseline's sample)")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--backend", default="lite", help="model backend (settings.model.backend)")
    ap.add_argument("--coreset-max", type=int, default=50_000,
                    help="coreset runs on a uniform subsample of the pool above this size")
    ap.add_argument("--target-ratio", type=float, default=4.0)
    ap.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the strategy workspaces")
    ap.add_argument("--resume", action="store_true",
                    help="with --work of an interrupted --keep run: reuse its world, seed models "
                         "and recorded rounds, run only what is missing")
    ap.add_argument("--check-flow", action="store_true",
                    help="also run the real engine_loop Prefect flow for the first seed and check "
                         "that its rounds equal the driver's engine rounds")
    ap.add_argument("--out", type=Path, default=RESULTS / "sample_efficiency.json")
    ap.add_argument("--from-json", type=Path,
                    help="run nothing: recompute the summary and plot of an earlier result file")
    ap.add_argument("--plot", type=Path, default=None, help="PNG path (default: next to --out)")
    args = ap.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.resume and args.work is None:
        ap.error("--resume needs --work (the folder of the interrupted run)")
    if args.resume:
        args.keep = True
    args.seed_list = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    args.strategy_list = [s.strip() for s in args.strategies.split(",") if s.strip()]
    bad = [s for s in args.strategy_list if s not in STRATEGIES]
    if bad or "random" not in args.strategy_list:
        ap.error(f"--strategies: unknown {bad}; known {list(STRATEGIES)}; 'random' is required "
                 "(it is the reference)")
    return args


def resummarize(args) -> dict:
    """Summary, table and plot again from the curves and rounds of an earlier result."""
    result = json.loads(args.from_json.read_text())
    p = result["params"]
    result["summary"] = summarize(result["curves"], p["seeds"], args.target_ratio,
                                  result.get("rounds"))
    result["resummarized_at"] = now_iso()
    png = args.plot or args.out.with_suffix(".png")
    result["plot"] = _rel(png)
    plot(result, png)
    write_result("sample_efficiency", result, out=args.out, machine=result.get("machine"))
    print(markdown_table(result["summary"]))
    return result


def _rel(path: Path) -> str:
    root = RESULTS.parent.parent
    path = path.resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.from_json:
        return resummarize(args)
    started, t0 = now_iso(), time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="medq-bench-se-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    try:
        world = args.world.resolve() if args.world else generate_world(work / "world", args)
        if args.world and not world.is_dir():
            from medq.errors import MedQError
            raise MedQError(f"--world {world}: not a folder")
        log(f"loading {world} and embedding the pool")
        world_ws, world_info = world_workspace(world, work, args.backend, args.resume)
        log(f"world: {world_info['counts']}, {world_info['eval_mcqs']} eval MCQs "
            f"(load {world_info['load_s']} s, embed+index {world_info['embed_index_s']} s)")
        curves: dict[str, list[dict]] = {s: [] for s in args.strategy_list}
        rounds: list[dict] = []
        seed_models = {}
        flow_check = None
        for seed in args.seed_list:
            base, boot = seed_workspace(world_ws, work, seed, args.backend, args.resume)
            seed_models[str(seed)] = {"version": boot["version"], "seconds": boot["seconds"],
                                      "accuracy": boot["metrics"].get("accuracy")}
            log(f"seed {seed}: seed model {boot['version']} accuracy "
                f"{_pct(boot['metrics'].get('accuracy'))} ({boot['seconds']} s)")
            for strategy in args.strategy_list:
                pts, rds = run_strategy(base, work, strategy, seed, boot, args)
                curves[strategy] += pts
                rounds += rds
            if args.check_flow and seed == args.seed_list[0] and "engine" in args.strategy_list:
                log("running the real engine_loop flow on the same seed workspace (--check-flow)")
                flow_check = check_engine_flow(base, work, seed, rounds, args)
                log(f"engine_loop flow vs driver: identical={flow_check['identical']} "
                    f"({flow_check['flow_seconds']} s vs {flow_check['driver_seconds']} s)")
            if not args.keep:
                shutil.rmtree(base, ignore_errors=True)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    summary = summarize(curves, args.seed_list, args.target_ratio, rounds)
    step_times: dict[str, dict[str, float]] = {}
    for r in rounds:
        for k, v in r["steps"].items():
            step_times.setdefault(r["strategy"], {}).setdefault(k, 0.0)
            step_times[r["strategy"]][k] += v / max(1, len(args.seed_list) * args.rounds)
    result = {
        "params": {"mode": "quick" if args.quick else "full",
                   "world": str(args.world) if args.world else
                   f"generated demo world (seed {args.world_seed}; eval {args.eval_size}, pool "
                   f"{args.pool_size}, seed set {args.seed_size}; MRI + endoscopy x"
                   f"{args.rare_factor:g} in the seed set, {100 * args.rare_share:g} % of the pool)",
                   "seeds": args.seed_list, "rounds": args.rounds, "budget": args.budget,
                   "candidates": args.candidates, "backend": args.backend,
                   "strategies": args.strategy_list, "annotator": "simulated",
                   "x_axis": "human labels added to training (expert + verify lanes)"},
        "world": world_info, "seed_models": seed_models, "engine_flow_check": flow_check,
        "curves": curves, "summary": summary, "rounds": rounds,
        "mean_step_seconds_per_round": {s: {k: round(v, 2) for k, v in d.items()}
                                        for s, d in step_times.items()},
        "started": started, "seconds": round(time.perf_counter() - t0, 1),
        # --resume: rounds recorded by earlier runs were reused, `seconds` covers this run only
        "resumed": bool(args.resume),
        "machine": machine_info(),
    }
    png = args.plot or args.out.with_suffix(".png")
    result["plot"] = _rel(png)
    plot(result, png)
    write_result("sample_efficiency", result, out=args.out, machine=result["machine"])
    print(markdown_table(summary))
    h = summary["headline"]
    print(f"\nengine vs random: {h['engine_vs_random_ratio_mean']} (target {args.target_ratio}x; "
          f"reached random's final accuracy in {h['engine_reached_random_final']}); "
          f"{result['seconds']} s; wrote {args.out} and {png}")
    return result


if __name__ == "__main__":
    main()
