"""Deployments: the engine loop on a schedule and on-demand evaluation, served by this process.

``medq serve`` calls :func:`serve_deployments`; a data team can equally use ``prefect.yaml`` at the
repository root with ``prefect deploy`` and a work pool.
"""
from __future__ import annotations

from prefect import serve

from medq.flows.engine_loop import engine_loop
from medq.flows.evaluate import evaluate_flow


def serve_deployments(workspace: str, *, cron: str = "0 2 * * *", rounds: int = 1,
                      name: str = "medq-engine-loop") -> None:
    loop = engine_loop.to_deployment(
        name=name, cron=cron, parameters={"workspace": workspace, "more_rounds": rounds},
        tags=["medq", "loop"], description="MedQ closed loop: one or more rounds per run")
    evaluate = evaluate_flow.to_deployment(
        name="medq-evaluate", parameters={"workspace": workspace}, tags=["medq", "evaluate"],
        description="Evaluate a model version on the eval split (pass model_version)")
    serve(loop, evaluate)
