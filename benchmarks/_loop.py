"""The closed loop driven round by round for benchmarks, with swappable candidate selection.

:func:`run_round` opens a round and runs :func:`medq.tasks.one_round.run_round`, the same
function ``flows/engine_loop.py`` runs inside its flow run; here it is a plain call (no Prefect
engine, no API server, no retries). Only the *selection* step (which pool images go to which
lane) depends on the strategy; annotate, curate, fine-tune, evaluate and promote are the loop's
own steps for every strategy, so a difference between strategies comes from what they select.

Strategies (``k`` = the number of expert-lane labels the round budget buys,
``floor(budget / lanes.expert_cost)``):

- ``engine``: discover -> explore -> route, exactly as the loop (prototypes, retrieval, scoring
  of ``candidates_per_round`` retrieved items, entropy lanes, spot checks, budget policy).
- ``random``: ``k`` images drawn uniformly from the unlabelled pool -> expert lane.
- ``entropy``: a uniform pool sample of ``candidates_per_round`` images (the engine's scoring
  cost) scored by the model; the ``k`` of highest normalized verdict entropy -> expert lane.
- ``retrieval``: the loop's discover + prototype retrieval with a candidate budget of ``k``
  (same allocation over prototypes, anchors, filters and diversity), no entropy routing: every
  retrieved image -> expert lane.
- ``coreset``: k-center greedy (:func:`medq.engine.explore.k_center_greedy`, the routine that
  also spreads the anchors) on the pool embeddings (the workspace's quality embedder), with
  every labelled training image as an initial center -> expert lane.

Baseline picks are scored by the round's starting model *after* selection, only to record what
share of the picks the model gets wrong (``picks_wrong``); that score never influences a choice.
"""
from __future__ import annotations

import math
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from medq.tasks.rounds import OpenedRound, RoundConfig

STRATEGIES = ("random", "entropy", "retrieval", "coreset", "engine")
_CODES = {s: i + 1 for i, s in enumerate(STRATEGIES)}


# -- shared steps (identical for every strategy) ------------------------------------------------

def bootstrap(ws: str, seed: int) -> dict:
    """The loop's round 0 (train, evaluate and promote the seed model; idempotent), plus the
    champion's metrics: {"version", "metrics"}."""
    from medq.tasks.evaluate import evaluate_version
    from medq.tasks.training import bootstrap as step
    champion = step(ws, seed)
    return {"version": champion, "metrics": evaluate_version(ws, champion)["metrics"]}


def prepare_pool(ws: str, seed: int) -> dict:
    """Fit the embedder, embed the pool, build the index (what explore does first, once)."""
    from medq.tasks.embed import embed_pool, ensure_embedder, ensure_pool_index
    embedder = ensure_embedder(ws, seed)
    embedded = embed_pool(ws)
    index = ensure_pool_index(ws, seed)
    return {"embedder": embedder, **embedded, "index": index}


# -- selection of the baselines -----------------------------------------------------------------

def _rng(seed: int, strategy: str, round_index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _CODES[strategy], int(round_index)])


def unlabelled_pool(ws: str) -> list[str]:
    """Pool images that are not labelled, queued or in the eval set (the loop's exclusion)."""
    from medq.storage import loop_records
    from medq.tasks._runtime import open_workspace
    from medq.tasks.explore import excluded_images
    excluded = set(excluded_images(ws))
    return [i for i in loop_records.pool_image_ids(open_workspace(ws).catalog)
            if i not in excluded]


def _select(ws: str, strategy: str, round_id: str, round_index: int, model_in: str, k: int,
            config: RoundConfig, seed: int, coreset_max: int
            ) -> tuple[list[dict], list[str], dict]:
    """Baseline selection: (candidate rows to record, image ids for the expert lane, info)."""
    from medq.engine.explore import k_center_greedy
    from medq.storage import loop_records
    from medq.tasks._runtime import open_workspace
    from medq.tasks.embed import embed_images, ensure_pool_index, pool_store
    from medq.tasks.explore import (
        excluded_images,
        load_prototypes,
        retrieve_candidates,
        score_candidates,
    )
    rng = _rng(seed, strategy, round_index)
    info: dict[str, Any] = {"strategy": strategy, "k": k, "n_scored_for_selection": 0}
    if strategy == "retrieval":
        index = ensure_pool_index(ws, seed)
        prototypes = load_prototypes(ws, round_id)
        rows = retrieve_candidates(ws, round_id, index["index_id"], k, prototypes,
                                   excluded_images(ws))
        picks = [r["image_id"] for r in rows][:k]
        return rows, picks, info
    avail = unlabelled_pool(ws)
    if strategy == "random":
        picks = sorted(rng.choice(avail, size=min(k, len(avail)), replace=False).tolist())
    elif strategy == "entropy":
        size = min(config.candidates_per_round, len(avail))
        sample = sorted(rng.choice(avail, size=size, replace=False).tolist())
        rows = [{"round_id": round_id, "image_id": i, "rank": r} for r, i in enumerate(sample)]
        scored = score_candidates(ws, model_in, rows)
        info["n_scored_for_selection"] = len(scored)
        top = sorted(scored, key=lambda r: (-r["entropy"], r["image_id"]))[:k]
        rank = {r["image_id"]: j for j, r in enumerate(top)}
        for r in scored:  # rank = entropy order of the picks; None for the scored rest
            r["rank"] = rank.get(r["image_id"])
        return scored, [r["image_id"] for r in top], info
    elif strategy == "coreset":
        ws_obj = open_workspace(ws)
        if len(avail) > coreset_max:  # bounded cost on big pools: a uniform subsample
            avail = sorted(rng.choice(avail, size=coreset_max, replace=False).tolist())
            info["coreset_subsample"] = coreset_max
        labelled = loop_records.train_image_ids(ws_obj.catalog)
        store = pool_store(ws_obj)
        in_store = store.contains(labelled)
        centers = [store.get([i for i, s in zip(labelled, in_store) if s])]
        rest = [i for i, s in zip(labelled, in_store) if not s]
        if rest:  # seed images are not pool images: embed them with the same embedder
            centers.append(embed_images(ws, rest))
        picks = [avail[i] for i in k_center_greedy(store.get(avail), k,
                                                   centers=np.concatenate(centers))]
    else:
        raise ValueError(f"unknown baseline strategy {strategy!r}")
    rows = [{"round_id": round_id, "image_id": i, "rank": r} for r, i in enumerate(picks)]
    return rows, picks, info


def _baseline_routes(ws: str, round_id: str, rows: list[dict], picks: list[str], budget: float,
                     info: dict) -> tuple[dict, dict]:
    """Record the selection the way explore + route do: candidates (scored by the starting model
    for the record only) and expert-lane routes within the budget."""
    from medq.engine.route import LANES, Route, RoutingResult
    from medq.tasks._runtime import open_workspace
    from medq.tasks.explore import save_candidates
    from medq.tasks.route import save_routes
    lanes = open_workspace(ws).settings.lanes
    entropy = {r["image_id"]: r.get("entropy") for r in rows}
    explored = save_candidates(ws, round_id, rows, {"selection": info})
    routes, spend = [], 0.0
    for iid in picks:
        if spend + lanes.expert_cost > budget + 1e-9:
            break
        spend += lanes.expert_cost
        routes.append(Route(iid, "expert", float(entropy.get(iid) or 0.0), lanes.expert_cost,
                            False, f"{info['strategy']} selection"))
    by_lane = {lane: {"n": sum(r.lane == lane for r in routes),
                      "spend": float(sum(r.cost for r in routes if r.lane == lane)),
                      "spot_checks": 0} for lane in LANES}
    result = RoutingResult(routes, [], float(spend), budget, lanes.auto_entropy, by_lane)
    return explored, save_routes(ws, round_id, result)


# -- one round ----------------------------------------------------------------------------------

def round_config(ws: str, budget: float, candidates: int, seed: int,
                 annotator: str = "simulated") -> RoundConfig:
    """The run's :class:`~medq.tasks.rounds.RoundConfig` (budget in cost units per round)."""
    from medq.tasks.rounds import resolve_config
    return resolve_config(ws, {"budget_per_round": budget, "annotator": annotator,
                               "candidates_per_round": candidates, "seed": seed})


def _baseline_selection(strategy: str, coreset_max: int):
    """A :data:`~medq.tasks.one_round.Selection` for a baseline `strategy`."""
    from medq.tasks._runtime import open_workspace
    from medq.tasks.discover import discover
    from medq.tasks.explore import score_candidates

    def select(ws: str, opened: OpenedRound, config: RoundConfig) -> tuple[dict, dict, dict]:
        round_id, model_in = opened.round_id, opened.model_in
        seed, budget = config.seed, config.budget_per_round
        discovered: dict = {}
        if strategy == "retrieval":
            discovered = discover(ws, round_id, model_in, seed)
        k = math.floor(budget / open_workspace(ws).settings.lanes.expert_cost + 1e-9)
        rows, picks, info = _select(ws, strategy, round_id, int(opened.round_index), model_in,
                                    k, config, seed, coreset_max)
        if rows and "entropy" not in rows[0]:  # record-only scores (see module docstring)
            rows = score_candidates(ws, model_in, rows)
        explored, routed = _baseline_routes(ws, round_id, rows, picks, budget, info)
        explored["n_scored_for_selection"] = info["n_scored_for_selection"]
        return discovered, explored, routed
    return select


def run_round(ws: str, strategy: str, config: RoundConfig, *,
              coreset_max: int = 50_000) -> dict:
    """One round of `strategy` on workspace `ws` (a folder). Returns the round summary (as the
    loop stores it) plus ``steps`` (wall seconds per step), ``strategy``, ``curation_failed``."""
    from medq.tasks.one_round import run_round as play
    from medq.tasks.rounds import current_champion, open_round
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known: {STRATEGIES}")
    steps: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        steps[name] = round(steps.get(name, 0.0) + now - t, 3)
        t = now

    opened = open_round(ws, config, current_champion(ws))
    lap("open")
    select = None if strategy == "engine" else _baseline_selection(strategy, coreset_max)
    out = play(ws, opened, config, select=select, on_step=lap)
    if out.summary is None:
        return {"round_id": out.round_id, "round_index": out.round_index, "strategy": strategy,
                "model_in": out.model_in, "curation_failed": out.curation_failed,
                "steps": steps, "spend": out.routed.get("spend", 0.0),
                "n_candidates": out.explored.get("n_candidates")}
    scored = out.explored.get("n_scored_for_selection")
    if strategy == "engine" and scored is None:
        scored = out.explored.get("n_candidates") or 0
    return {**out.summary, "strategy": strategy, "curation_failed": None, "steps": steps,
            "n_scored_for_selection": scored}


def round_labels(ws: str, round_id: str) -> dict[str, Any]:
    """What the round added and picked, from the catalog (ground truth only for diagnostics):
    labels added to training by lane, annotation records, the human-lane picks' modalities and
    the share of them the starting model got wrong (None where no prediction or truth)."""
    from medq.storage import loop_records
    from medq.storage.catalog import loads
    from medq.tasks._runtime import open_workspace
    cat = open_workspace(ws).catalog
    added = loop_records.labels_added_by_lane(cat, round_id)
    records = loop_records.annotation_count(cat, round_id)
    picks = loop_records.human_pick_outcomes(cat, round_id)
    judged = [p["predicted"] != p["verdict"] for p in picks
              if p["predicted"] is not None and p["verdict"] is not None]
    report = loads(loop_records.round_report_text(cat, round_id), {}) or {}
    return {"added_by_lane": added,
            "human_labels": added.get("expert", 0) + added.get("verify", 0),
            "pseudo_labels": added.get("auto", 0), "annotation_records": records,
            "picks_by_modality": dict(Counter(p["modality"] or "unknown" for p in picks)),
            "picks_wrong": float(np.mean(judged)) if judged else None,
            "pool_base_rate": report.get("pool_base_rate")}
