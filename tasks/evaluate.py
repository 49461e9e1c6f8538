"""Evaluate tasks: one I/O step or one engine call each.

Tasks receive the workspace as a path string (see :mod:`medq.tasks._runtime`). Model outputs,
images and models are passed in memory and never persisted (``NO_CACHE``); only the judge step
has a cache key (an LLM judge is slow and costs money, and its verdict on a text is fixed by the
judge, the texts and the references).
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from medq.engine.models.base import MCQ, Comparison, MCQAnswer, QualityModel
from medq.engine.scoring import (
    DescriptionJudge,
    DescriptionScores,
    EvalItem,
    LLMJudge,
    RulesJudge,
    ScoringError,
    description_rows,
    mcq_rows,
    paired_rows,
    summarize,
)
from medq.engine.scoring.description import Reference
from medq.engine.scoring.llm_judge import PROMPT_VERSION
from medq.errors import MedQError
from medq.settings import JudgeSettings
from medq.storage.catalog import CatalogError
from medq.tasks._runtime import open_workspace, stable_hash

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
                              retries=settings.retries, backoff_s=settings.backoff_s)
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

@task(name="load-eval-items", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def load_eval_items(workspace: str, split: str = "eval") -> list[EvalItem]:
    """Every item of `split` (MCQ, description, paired), parsed, in item-id order."""
    ws = open_workspace(workspace)
    rows = ws.catalog.query(
        "SELECT item_id, kind, image_id, image_b_id, question, options, answer, question_type, "
        "modality, verdict, degradations, level, description FROM items "
        "WHERE split = ? AND kind IN ('mcq', 'description', 'paired') ORDER BY item_id", [split])
    return [EvalItem.from_row(r) for r in rows]


def resolve_model_version(workspace, version: str) -> QualityModel:
    """Load `version` through the model registry (:mod:`medq.storage.model_registry`)."""
    try:
        from medq.storage.model_registry import load_model_version
    except ImportError as exc:
        raise ModelLoadError(f"cannot load model {version!r}: the model registry "
                             f"(medq.storage.model_registry) is not available: {exc}") from exc
    return load_model_version(workspace, version)


@task(name="load-model-version", retries=1, retry_delay_seconds=1, cache_policy=NO_CACHE)
def load_model(workspace: str, version: str) -> QualityModel:
    return resolve_model_version(open_workspace(workspace), version)


@task(name="load-eval-images", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def load_eval_images(workspace: str, image_ids: list[str]) -> list[np.ndarray]:
    """Pixels of `image_ids` (float32 [0, 1]), in order; duplicates decoded once."""
    from medq.storage.images import load_images
    return load_images(open_workspace(workspace), image_ids)


@task(name="write-eval-results", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def write_eval_results(workspace: str, run: dict, rows: list[dict]) -> int:
    """Replace the eval run's predictions and upsert its ``eval_runs`` row, in ONE transaction
    (a crash leaves the previous result intact; a re-run never duplicates a row)."""
    ws = open_workspace(workspace)
    bad = [r["item_id"] for r in rows if r.get("eval_id") != run["eval_id"]]
    if bad:
        raise CatalogError(f"prediction rows for {bad[:3]} do not belong to eval {run['eval_id']}")
    with ws.catalog.transaction() as tx:
        tx.execute("DELETE FROM predictions WHERE eval_id = ?", [run["eval_id"]])
        tx.upsert("predictions", rows)
        tx.upsert("eval_runs", [run])
    return len(rows)


# -- engine calls ----------------------------------------------------------------------------

@task(name="answer-mcq-batch", cache_policy=NO_CACHE)
def answer_mcq_batch(model: QualityModel, questions: list[MCQ]) -> list[MCQAnswer]:
    answers = model.answer(questions)
    if len(answers) != len(questions):
        raise ScoringError(f"model {model.version} returned {len(answers)} answers for "
                           f"{len(questions)} questions")
    return answers


@task(name="describe-batch", cache_policy=NO_CACHE)
def describe_batch(model: QualityModel, images: list[np.ndarray],
                   questions: list[str | None]) -> list[str]:
    texts = model.describe(images, questions)
    if len(texts) != len(images):
        raise ScoringError(f"model {model.version} returned {len(texts)} descriptions for "
                           f"{len(images)} images")
    return [t or "" for t in texts]


@task(name="compare-batch", cache_policy=NO_CACHE)
def compare_batch(model: QualityModel, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[Comparison]:
    out = model.compare(pairs)
    if len(out) != len(pairs):
        raise ScoringError(f"model {model.version} returned {len(out)} comparisons for "
                           f"{len(pairs)} pairs")
    return out


@task(name="judge-descriptions", cache_key_fn=_judge_cache_key,
      cache_expiration=timedelta(days=JUDGE_CACHE_DAYS))
def judge_descriptions(workspace: str, judge: str | None, predictions: list[str],
                       references: list[Reference],
                       predicted_better: list[str | None] | None = None) -> list[dict]:
    """Four-dimension scores (dicts, see DescriptionScores.to_dict) for each prediction."""
    ws = open_workspace(workspace)
    scorer = make_judge(judge, ws.settings.judge)
    return [s.to_dict() for s in scorer.score_many(predictions, references, predicted_better)]


@task(name="score-eval", cache_policy=NO_CACHE)
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
