"""Evaluate a model version on the evaluation split: answer every MCQ (option probabilities,
entropy, extracted letter), describe and compare images, judge the texts, and write every
per-item prediction plus the run's metrics to the catalog in one transaction.

- :func:`evaluate_flow` is the Prefect flow (loads the version, publishes a VLMEvalKit-style
  markdown artifact).
- :func:`evaluate_model` is the same pipeline as a plain function the loop (or the CLI) calls
  with a model already in memory. Inside a flow run its steps run as Prefect tasks (retries,
  logging, the judge cache); outside one they run as plain calls, with no Prefect server.

The eval id is derived from (model version, split, judge), so evaluating again replaces the
previous rows of that evaluation instead of adding new ones.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext

from medq.engine.models.base import QualityModel
from medq.engine.scoring import EvalResult, eval_id_for, results_markdown
from medq.errors import MedQError
from medq.settings import load_settings
from medq.tasks._runtime import open_workspace
from medq.tasks.evaluate import (
    answer_mcq_batch,
    compare_batch,
    describe_batch,
    judge_descriptions,
    judge_name,
    load_eval_images,
    load_eval_items,
    load_model,
    score_eval,
    write_eval_results,
)

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def _step(task_obj, *args, **kwargs):
    """Run a task as a Prefect task inside a flow run, as a plain function otherwise."""
    if FlowRunContext.get() is not None:
        return task_obj(*args, **kwargs)
    return task_obj.fn(*args, **kwargs)


def _batches(seq: list, size: int):
    for start in range(0, len(seq), size):
        yield seq[start:start + size]


def _workspace_path(workspace: Any) -> str:
    if workspace is None:
        return str(load_settings().workspace)
    root = getattr(workspace, "root", None)
    return str(root if root is not None else workspace)


def evaluate_model(workspace: Any, model: QualityModel, judge: str | None = "rules", *,
                   split: str = "eval", round_id: str | None = None, batch_size: int = 32,
                   match_option_text: bool = False, progress: Progress | None = None
                   ) -> EvalResult:
    """Evaluate `model` on `split` of `workspace` (a Workspace or its folder) and store it.

    `judge`: "rules", "openai", "openai:URL" or None (settings.judge decides). Returns the
    :class:`EvalResult` (metrics as stored in ``eval_runs.metrics``)."""
    ws = _workspace_path(workspace)
    settings = open_workspace(ws).settings
    name = judge_name(judge, settings.judge)
    eval_id = eval_id_for(model.version, split, name)
    items = _step(load_eval_items, ws, split)
    if not items:
        raise MedQError(f"no evaluation items (split {split!r}) in the catalog of workspace {ws}; "
                        "generate a synthetic world or import MedQ-Bench TSVs first")
    mcq = [i for i in items if i.kind == "mcq"]
    desc = [i for i in items if i.kind == "description"]
    paired = [i for i in items if i.kind == "paired"]
    total = len(items)
    done = 0

    def tick(stage: str, n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(stage, done, total)

    answers = []
    for batch in _batches(mcq, batch_size):
        images = _step(load_eval_images, ws, [i.image_id for i in batch])
        answers += _step(answer_mcq_batch, model, [i.mcq(img) for i, img in zip(batch, images)])
        tick("answer", len(batch))

    texts, d_scores = [], []
    for batch in _batches(desc, batch_size):
        images = _step(load_eval_images, ws, [i.image_id for i in batch])
        out = _step(describe_batch, model, images, [i.question for i in batch])
        texts += out
        d_scores += _step(judge_descriptions, ws, judge, out, [i.reference() for i in batch])
        tick("describe", len(batch))

    comparisons, p_scores = [], []
    for batch in _batches(paired, batch_size):
        ids = [i.image_id for i in batch] + [i.image_b_id for i in batch]
        images = _step(load_eval_images, ws, ids)
        pairs = list(zip(images[:len(batch)], images[len(batch):]))
        out = _step(compare_batch, model, pairs)
        comparisons += out
        p_scores += _step(judge_descriptions, ws, judge, [c.text for c in out],
                          [i.reference() for i in batch], [c.better for c in out])
        tick("compare", len(batch))

    rows, metrics = _step(score_eval, eval_id, name, mcq, answers, desc, texts, d_scores, paired,
                          comparisons, p_scores, match_option_text)
    run = {"eval_id": eval_id, "model_version": model.version, "round_id": round_id,
           "split": split, "judge": name, "metrics": metrics}
    _step(write_eval_results, ws, run, rows)
    return EvalResult(eval_id=eval_id, model_version=model.version, split=split, judge=name,
                      metrics=metrics, n_predictions=len(rows), round_id=round_id)


def _artifact_key(version: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", version.lower()).strip("-") or "model"
    return f"evaluate-{slug}"[:100]


@flow(name="evaluate", log_prints=True)
def evaluate_flow(model_version: str, judge: str = "rules", workspace: str | None = None,
                  split: str = "eval", round_id: str | None = None, batch_size: int = 32) -> dict:
    """Evaluate `model_version` (loaded from the workspace's model registry) on `split` with
    `judge` ("rules" | "openai" | "openai:URL"); returns :meth:`EvalResult.to_dict`."""
    ws = _workspace_path(workspace)
    model = load_model(ws, model_version)
    result = evaluate_model(ws, model, judge, split=split, round_id=round_id,
                            batch_size=batch_size)
    create_markdown_artifact(markdown=results_markdown(result.metrics, model_version),
                             key=_artifact_key(model_version),
                             description=f"MedQ evaluation of {model_version} ({result.judge})")
    acc = result.accuracy
    print(f"evaluated {model_version}: {result.n_predictions} predictions, eval {result.eval_id}"
          + (f", MCQ accuracy {100 * acc:.2f}%" if acc is not None else ""))
    return result.to_dict()
