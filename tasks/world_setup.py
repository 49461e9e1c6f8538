"""World tasks: synthesize a world folder and load a world into a workspace."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.cache_policies import NO_CACHE

from medq.engine.world_plan import Mix, Selection, WorldSpec
from medq.storage.world_loader import load_world
from medq.storage.world_writer import write_world
from medq.tasks._runtime import loop_task, open_workspace


def demo_world_spec(seed: int = 0, *, eval_size: int = 100, pool_size: int = 2000,
                    seed_size: int = 150) -> WorldSpec:
    """The demo's world: five modalities; MRI and endoscopy are nearly absent from the labelled
    seed set (the model will fail on them) and rare in the pool (10 %), so random sampling finds
    few of them while prototype retrieval should find many."""
    rare = ("MRI", "endoscopy")
    return WorldSpec(eval_size=eval_size, pool_size=pool_size, seed_size=seed_size, seed=seed,
                     image_size=128,
                     mix=Mix(modalities={m: 1.0 for m in ("CT", "MRI", "X-ray", "fundus",
                                                          "histopathology", "endoscopy")}),
                     seed_bias=Selection(modalities=rare, factor=0.05),
                     pool_rare=Selection(modalities=rare, share=0.1))


@loop_task(name="synthesize-world", retries=1, cache_policy=NO_CACHE)
def synthesize_world(out_dir: str, spec: dict[str, Any]) -> str:
    """Write the world folder (idempotent: the same spec reproduces identical files)."""
    write_world(demo_world_spec(**spec), Path(out_dir))
    return out_dir


@loop_task(name="load-world", retries=1, cache_policy=NO_CACHE)
def load_world_task(workspace: str, folder: str) -> dict[str, Any]:
    """Bring a world folder into the workspace catalog and object store (idempotent)."""
    summary = load_world(open_workspace(workspace), Path(folder))
    return summary.to_dict() if hasattr(summary, "to_dict") else vars(summary)
