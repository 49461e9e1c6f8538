"""The demo: a small synthetic world with a biased seed set, loaded into a workspace, then the
closed loop with simulated annotators for a few rounds."""
from __future__ import annotations

from prefect import flow

from medq.flows.engine_loop import engine_loop
from medq.tasks.world_setup import load_world_task, synthesize_world


@flow(name="medq-demo", log_prints=True)
def demo(workspace: str, world_dir: str, rounds: int = 3, eval_size: int = 100,
         pool_size: int = 2000, seed_size: int = 150, budget_per_round: float = 60.0,
         candidates_per_round: int = 300, seed: int = 0) -> list[dict]:
    synthesize_world(world_dir, {"seed": seed, "eval_size": eval_size, "pool_size": pool_size,
                                 "seed_size": seed_size})
    load_world_task(workspace, world_dir)
    return engine_loop(workspace=workspace, rounds=rounds, budget_per_round=budget_per_round,
                       candidates_per_round=candidates_per_round, annotator="simulated",
                       seed=seed)
