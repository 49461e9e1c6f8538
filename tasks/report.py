"""Round reports: the summary stored with each round and its Prefect artifacts."""
from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from medq.storage import loop_records
from medq.tasks._runtime import loop_task, open_workspace

LANES = ("expert", "verify", "auto")


@loop_task(name="round-summary", cache_policy=NO_CACHE)
def round_summary(workspace: str, round_id: str, discovered: dict, explored: dict, routed: dict,
                  annotated: dict, curated: dict, tuned: dict) -> dict[str, Any]:
    """The headline numbers of a round (stored in rounds.report; read by CLI and dashboard).

    Accuracies are MCQ accuracy on the eval set in [0, 1]; description scores 0-8 (higher is
    better); spend in lane cost units; failure_yield / pool_base_rate are the shares of retrieved
    candidates / of a random pool sample whose verdict the starting model gets wrong."""
    catalog = open_workspace(workspace).catalog
    index = loop_records.round_index_of(catalog, round_id)
    by_lane = routed.get("by_lane") or {}
    return {
        "round_id": round_id, "round_index": index,
        "model_in": loop_records.model_in_of(catalog, round_id),
        "model_out": tuned.get("model_out"), "promoted": bool(tuned.get("promoted")),
        "promotion_reason": tuned.get("reason"),
        "accuracy_in": tuned.get("accuracy_in"), "accuracy_out": tuned.get("accuracy_out"),
        "description_in": tuned.get("description_in"),
        "description_out": tuned.get("description_out"),
        "spend": routed.get("spend", 0.0),
        "spend_by_lane": {lane: (by_lane.get(lane) or {}).get("spend", 0.0) for lane in LANES},
        "items_by_lane": {lane: int((by_lane.get(lane) or {}).get("n", 0)) for lane in LANES},
        "spot_checks": routed.get("spot_checks", 0),
        "n_failures": discovered.get("n_failures"), "n_prototypes": discovered.get("n_prototypes"),
        "prototypes": discovered.get("prototypes", []),
        "n_candidates": explored.get("n_candidates"), "failure_yield": explored.get("failure_yield"),
        "pool_base_rate": explored.get("pool_base_rate"),
        "annotations": annotated.get("inserted", 0) + annotated.get("updated", 0)
        + annotated.get("unchanged", 0),
        "dataset_id": curated.get("dataset_id"), "n_new_labels": curated.get("n_new"),
        "n_train": curated.get("n_train"), "quarantined": curated.get("quarantined"),
        "auto_threshold": routed.get("auto_threshold"),
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def summary_markdown(s: dict[str, Any]) -> str:
    lanes = ", ".join(f"{k} {s['items_by_lane'][k]} items / {s['spend_by_lane'][k]:.1f}"
                      for k in LANES)
    lines = [f"# MedQ round {s['round_id']}", "",
             (f"- model: `{s['model_in']}` -> `{s['model_out']}` "
             f"({'**promoted**' if s['promoted'] else 'not promoted'}: {s['promotion_reason']})"),
             f"- MCQ accuracy: {_pct(s['accuracy_in'])} -> {_pct(s['accuracy_out'])}",
             f"- description score (0-8): {s['description_in']} -> {s['description_out']}",
             f"- failures: {s['n_failures']}, prototypes: {s['n_prototypes']}",
             (f"- candidates scored: {s['n_candidates']}; failure yield {_pct(s['failure_yield'])} "
             f"vs pool base rate {_pct(s['pool_base_rate'])}"),
             f"- spend: {s['spend']:.1f} cost units ({lanes})",
             (f"- new labels: {s['n_new_labels']}, training set: {s['n_train']}, "
             f"quarantined: {s['quarantined']}"), "", "## Prototypes", ""]
    lines += [f"- {p}" for p in s.get("prototypes") or []] or ["- none"]
    return "\n".join(lines)


@loop_task(name="publish-round-artifact", cache_policy=NO_CACHE)
def publish_round_artifact(summary: dict[str, Any]) -> None:
    """Markdown summary + a per-lane table in the Prefect UI (same numbers as the catalog)."""
    key = f"medq-round-{summary['round_id']}".lower()
    create_markdown_artifact(markdown=summary_markdown(summary), key=key,
                             description=f"MedQ round {summary['round_id']} summary")
    create_table_artifact(key=f"{key}-lanes", table=[
        {"lane": lane, "items": summary["items_by_lane"][lane],
         "spend": round(summary["spend_by_lane"][lane], 2)} for lane in LANES],
        description=f"MedQ round {summary['round_id']}: annotation spend by lane")
