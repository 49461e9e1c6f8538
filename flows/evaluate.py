"""The on-demand evaluation flow (``medq evaluate``, the ``medq-evaluate`` deployment): load a
registered model version, evaluate it on a split with a judge, publish a VLMEvalKit-style
markdown artifact. The pipeline itself is :func:`medq.tasks.evaluate.evaluate_model`, the same
function the loop's evaluation step runs.
"""
from __future__ import annotations

from prefect import flow

from medq.tasks.evaluate import evaluate_model, load_model, publish_evaluation, workspace_path


@flow(name="evaluate", log_prints=True)
def evaluate_flow(model_version: str, judge: str = "rules", workspace: str | None = None,
                  split: str = "eval", round_id: str | None = None, batch_size: int = 32) -> dict:
    """Evaluate `model_version` (loaded from the workspace's model registry) on `split` with
    `judge` ("rules" | "openai" | "openai:URL"); returns :meth:`EvalResult.to_dict`."""
    ws = workspace_path(workspace)
    model = load_model(ws, model_version)
    result = evaluate_model(ws, model, judge, split=split, round_id=round_id,
                            batch_size=batch_size)
    publish_evaluation(result)
    return result.to_dict()
