"""The evaluation step: answer every MCQ of a split (option probabilities, entropy, extracted
letter), describe and compare images, judge the texts, and write every per-item prediction plus
the run's metrics to the catalog in one transaction.

- :func:`evaluate_model` is the pipeline, called with a model already in memory (the CLI, the
  Python API, :func:`evaluate_version`).
- :func:`evaluate_version` is the loop's step: the stored evaluation of a registered version,
  or a new one (a sub-flow named ``evaluate`` inside a flow run, with a markdown artifact).
- The rest are its operations, one I/O step or one engine call each.

The eval id is derived from (model version, split, judge), so evaluating again replaces the
previous rows of that evaluation instead of adding new ones. Tasks receive the workspace as a path string (see :mod:`medq.tasks._runtime`). Model outputs,
images and models are passed in memory and never persisted (``NO_CACHE``); only the judge step
has a cache key (an LLM judge is slow and costs money, and its verdict on a text is fixed by the
judge, the texts and the references).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any

import numpy as np
from prefect.cache_policies import NO_CACHE

from medq.engine.models.base import MCQ, Comparison, MCQAnswer, QualityModel
from medq.engine.scoring import (
    DescriptionJudge,
    DescriptionScores,
    EvalItem,
    EvalResult,
    LLMJudge,
    RulesJudge,
    ScoringError,
    description_rows,
    eval_id_for,
    mcq_rows,
    paired_rows,
    results_markdown,
    summarize,
)
from medq.engine.scoring.description import Reference
from medq.engine.scoring.llm_judge import PROMPT_VERSION
from medq.errors import MedQError
from medq.settings import JudgeSettings, load_settings
from medq.storage import loop_records
from medq.storage.catalog import CatalogError, loads
from medq.tasks._runtime import in_flow_run, loop_flow, loop_task, open_workspace, stable_hash

JUDGE_CACHE_DAYS = 30


class JudgeSpecError(MedQError):
    """`--judge` / the judge setting names no usable judge."""


class ModelLoadError(MedQError):
    """A model version cannot be loaded from the workspace."""


# -- judges ----------------------------------------------------------------------------------

def judge_endpoint(spec: str | None, settings: JudgeSettings) -> str | None:
    """The endpoint URL of an LLM judge spec, None for the rules judge.

    `spec`: "rules", "openai" (endpoint from settings.judge.endpoint), "openai:URL", or None
    (settings.judge.kind decides)."""
    spec = (spec or settings.kind or "rules").strip()
    if spec == "rules":
        return None
    if spec == "openai":
        if not settings.endpoint:
            raise JudgeSpecError("judge 'openai' needs an endpoint: pass --judge openai:URL or "
                                 "set judge.endpoint (MEDQ_JUDGE__ENDPOINT)")
        return settings.endpoint
    if spec.startswith("openai:"):
        url = spec[len("openai:"):].strip()
        if not url.startswith(("http://", "https://")):
            raise JudgeSpecError(f"judge {spec!r}: expected openai:http(s)://HOST:PORT (optionally "
                                 "ending in /v1)")
        return url
    raise JudgeSpecError(f"unknown judge {spec!r}; use 'rules', 'openai' or 'openai:URL'")


def judge_name(spec: str | None, settings: JudgeSettings) -> str:
    """Stable judge label (part of the eval id): "rules" or "openai:<model>@<url>"."""
    url = judge_endpoint(spec, settings)
    return "rules" if url is None else f"openai:{settings.model}@{url.rstrip('/')}"


def make_judge(spec: str | None, settings: JudgeSettings) -> DescriptionJudge:
    """The judge a spec names (see :func:`judge_endpoint`)."""
    url = judge_endpoint(spec, settings)
    if url is None:
        return RulesJudge()
    from medq.storage.openai_chat import OpenAIChatClient
    client = OpenAIChatClient(url, settings.model, settings.api_key, timeout_s=settings.timeout_s,
                              retries=settings.retries)
    return LLMJudge(client.complete, name=judge_name(spec, settings), retries=settings.retries,
                    backoff_s=settings.backoff_s, max_workers=settings.max_workers)


def _judge_cache_key(context, parameters: dict) -> str | None:
    """LLM-judge batches are cached by (judge, texts, references); the rules judge is cheap and
    changes with the code, so it is never cached."""
    ws = open_workspace(parameters["workspace"])
    name = judge_name(parameters.get("judge"), ws.settings.judge)
    if name == "rules":
        return None
    refs = [vars(r) for r in parameters["references"]]
    return "judge-" + stable_hash(name, PROMPT_VERSION, parameters["predictions"], refs,
                                  parameters.get("predicted_better"), length=32)


# -- I/O steps -------------------------------------------------------------------------------

@loop_task(name="load-eval-items", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def load_eval_items(workspace: str, split: str = "eval") -> list[EvalItem]:
    """Every item of `split` (MCQ, description, paired), parsed, in item-id order."""
    ws = open_workspace(workspace)
    return [EvalItem.from_row(r) for r in loop_records.eval_item_rows(ws.catalog, split)]


def resolve_model_version(workspace, version: str) -> QualityModel:
    """Load `version` through the model registry (:mod:`medq.storage.model_registry`)."""
    try:
        from medq.storage.model_registry import load_model_version
    except ImportError as exc:
        raise ModelLoadError(f"cannot load model {version!r}: the model registry "
                             f"(medq.storage.model_registry) is not available: {exc}") from exc
    return load_model_version(workspace, version)


@loop_task(name="load-model-version", retries=1, retry_delay_seconds=1, cache_policy=NO_CACHE)
def load_model(workspace: str, version: str) -> QualityModel:
    return resolve_model_version(open_workspace(workspace), version)


@loop_task(name="load-eval-images", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def load_eval_images(workspace: str, image_ids: list[str]) -> list[np.ndarray]:
    """Pixels of `image_ids` (float32 [0, 1]), in order; duplicates decoded once."""
    from medq.storage.images import load_images
    return load_images(open_workspace(workspace), image_ids)


@loop_task(name="write-eval-results", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def write_eval_results(workspace: str, run: dict, rows: list[dict]) -> int:
    """Replace the eval run's predictions and upsert its ``eval_runs`` row, in ONE transaction
    (a crash leaves the previous result intact; a re-run never duplicates a row)."""
    ws = open_workspace(workspace)
    bad = [r["item_id"] for r in rows if r.get("eval_id") != run["eval_id"]]
    if bad:
        raise CatalogError(f"prediction rows for {bad[:3]} do not belong to eval {run['eval_id']}")
    with ws.catalog.transaction() as tx:
        loop_records.replace_predictions(tx, run["eval_id"])
        tx.upsert("predictions", rows)
        tx.upsert("eval_runs", [run])
    return len(rows)


# -- engine calls ----------------------------------------------------------------------------

@loop_task(name="answer-mcq-batch", cache_policy=NO_CACHE)
def answer_mcq_batch(model: QualityModel, questions: list[MCQ]) -> list[MCQAnswer]:
    answers = model.answer(questions)
    if len(answers) != len(questions):
        raise ScoringError(f"model {model.version} returned {len(answers)} answers for "
                           f"{len(questions)} questions")
    return answers


@loop_task(name="describe-batch", cache_policy=NO_CACHE)
def describe_batch(model: QualityModel, images: list[np.ndarray],
                   questions: list[str | None]) -> list[str]:
    texts = model.describe(images, questions)
    if len(texts) != len(images):
        raise ScoringError(f"model {model.version} returned {len(texts)} descriptions for "
                           f"{len(images)} images")
    return [t or "" for t in texts]


@loop_task(name="compare-batch", cache_policy=NO_CACHE)
def compare_batch(model: QualityModel, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[Comparison]:
    out = model.compare(pairs)
    if len(out) != len(pairs):
        raise ScoringError(f"model {model.version} returned {len(out)} comparisons for "
                           f"{len(pairs)} pairs")
    return out


@loop_task(name="judge-descriptions", cache_key_fn=_judge_cache_key,
           cache_expiration=timedelta(days=JUDGE_CACHE_DAYS))
def judge_descriptions(workspace: str, judge: str | None, predictions: list[str],
                       references: list[Reference],
                       predicted_better: list[str | None] | None = None) -> list[dict]:
    """Four-dimension scores (dicts, see DescriptionScores.to_dict) for each prediction."""
    ws = open_workspace(workspace)
    scorer = make_judge(judge, ws.settings.judge)
    return [s.to_dict() for s in scorer.score_many(predictions, references, predicted_better)]


@loop_task(name="score-eval", cache_policy=NO_CACHE)
def score_eval(eval_id: str, judge: str, mcq_items: Sequence[EvalItem],
               answers: Sequence[MCQAnswer], description_items: Sequence[EvalItem],
               texts: Sequence[str], description_scores: Sequence[dict],
               paired_items: Sequence[EvalItem], comparisons: Sequence[Comparison],
               paired_scores: Sequence[dict], match_option_text: bool = False
               ) -> tuple[list[dict], dict]:
    """Per-item prediction rows and the metrics of the run (pure engine call)."""
    m_rows, m_results = mcq_rows(eval_id, mcq_items, answers, match_option_text=match_option_text)
    d_scores = [DescriptionScores.from_dict(s) for s in description_scores]
    p_scores = [DescriptionScores.from_dict(s) for s in paired_scores]
    d_rows = description_rows(eval_id, description_items, texts, d_scores)
    p_rows = paired_rows(eval_id, paired_items, comparisons, p_scores)
    metrics = summarize(mcq_results=m_results, description_items=description_items,
                        description_scores=d_scores, paired_items=paired_items,
                        paired_scores=p_scores, paired_correct=[r["correct"] for r in p_rows],
                        judge=judge)
    return m_rows + d_rows + p_rows, metrics


@loop_task(name="existing-evaluation", cache_policy=NO_CACHE)
def existing_evaluation(workspace: str, version: str, judge: str | None = None) -> dict | None:
    """The stored eval run of `version` on the eval split with the workspace judge, if any:
    {"eval_id", "metrics"}."""
    ws = open_workspace(workspace)
    eval_id = eval_id_for(version, "eval", judge_name(judge, ws.settings.judge))
    row = loop_records.eval_run(ws.catalog, eval_id)
    if row is None:
        return None
    return {"eval_id": row["eval_id"], "metrics": loads(row["metrics"], {})}


# -- the pipeline and the step ---------------------------------------------------------------

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def _batches(seq: list, size: int) -> Iterator[list]:
    for start in range(0, len(seq), size):
        yield seq[start:start + size]


def workspace_path(workspace: Any) -> str:
    """The folder of `workspace` (a Workspace, a path, or None: the settings' workspace)."""
    if workspace is None:
        return str(load_settings().workspace)
    root = getattr(workspace, "root", None)
    return str(root if root is not None else workspace)


def evaluate_model(workspace: Any, model: QualityModel, judge: str | None = "rules", *,
                   split: str = "eval", round_id: str | None = None, batch_size: int = 32,
                   match_option_text: bool = False, progress: Progress | None = None
                   ) -> EvalResult:
    """Evaluate `model` on `split` of `workspace` (a Workspace or its folder) and store it.

    `judge`: "rules", "openai", "openai:URL" or None (settings.judge decides). Inside a flow run
    its operations run as Prefect tasks (retries, logging, the judge cache); outside one as plain
    calls. Returns the :class:`EvalResult` (metrics as stored in ``eval_runs.metrics``)."""
    ws = workspace_path(workspace)
    settings = open_workspace(ws).settings
    name = judge_name(judge, settings.judge)
    eval_id = eval_id_for(model.version, split, name)
    items = load_eval_items(ws, split)
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

    answers: list[MCQAnswer] = []
    for batch in _batches(mcq, batch_size):
        images = load_eval_images(ws, [i.image_id for i in batch])
        answers += answer_mcq_batch(model, [i.mcq(img) for i, img in zip(batch, images)])
        tick("answer", len(batch))

    texts: list[str] = []
    d_scores: list[dict] = []
    for batch in _batches(desc, batch_size):
        images = load_eval_images(ws, [i.image_id for i in batch])
        out = describe_batch(model, images, [i.question for i in batch])
        texts += out
        d_scores += judge_descriptions(ws, judge, out, [i.reference() for i in batch])
        tick("describe", len(batch))

    comparisons: list[Comparison] = []
    p_scores: list[dict] = []
    for batch in _batches(paired, batch_size):
        ids = [i.image_id for i in batch] + [i.image_b_id for i in batch]
        images = load_eval_images(ws, ids)
        pairs = list(zip(images[:len(batch)], images[len(batch):]))
        compared = compare_batch(model, pairs)
        comparisons += compared
        p_scores += judge_descriptions(ws, judge, [c.text for c in compared],
                                       [i.reference() for i in batch],
                                       [c.better for c in compared])
        tick("compare", len(batch))

    rows, metrics = score_eval(eval_id, name, mcq, answers, desc, texts, d_scores, paired,
                               comparisons, p_scores, match_option_text)
    run = {"eval_id": eval_id, "model_version": model.version, "round_id": round_id,
           "split": split, "judge": name, "metrics": metrics}
    write_eval_results(ws, run, rows)
    return EvalResult(eval_id=eval_id, model_version=model.version, split=split, judge=name,
                      metrics=metrics, n_predictions=len(rows), round_id=round_id)


def _artifact_key(version: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", version.lower()).strip("-") or "model"
    return f"evaluate-{slug}"[:100]


def publish_evaluation(result: EvalResult) -> None:
    """Inside a flow run: a VLMEvalKit-style markdown artifact of `result` and one log line.
    Elsewhere (benchmarks, plain calls) nothing: there is no run to attach them to."""
    if not in_flow_run():
        return
    from prefect.artifacts import create_markdown_artifact
    create_markdown_artifact(markdown=results_markdown(result.metrics, result.model_version),
                             key=_artifact_key(result.model_version),
                             description=f"MedQ evaluation of {result.model_version} "
                                         f"({result.judge})")
    acc = result.accuracy
    print(f"evaluated {result.model_version}: {result.n_predictions} predictions, eval "
          f"{result.eval_id}" + (f", MCQ accuracy {100 * acc:.2f}%" if acc is not None else ""))


@loop_flow(name="evaluate", log_prints=True)
def evaluate_version(workspace: str, model_version: str, round_id: str | None = None) -> dict:
    """The loop's evaluation of a registered version on the eval split with the workspace judge:
    the stored one when it exists, otherwise a new one. Returns {"eval_id", "metrics"}."""
    done = existing_evaluation(workspace, model_version)
    if done is not None:
        return done
    result = evaluate_model(workspace, load_model(workspace, model_version), None,
                            round_id=round_id)
    publish_evaluation(result)
    return {"eval_id": result.eval_id, "metrics": result.metrics}
