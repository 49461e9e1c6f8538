"""Curate: a Great Expectations suite over a round's new training rows, quarantine and a report.

Input: one row per new training item (a pandas DataFrame) with the columns of
:data:`REQUIRED_COLUMNS`:

``item_id, image_id, modality, verdict, degradations ([{"type", "level"}] or its JSON text),
description, lane (expert|verify|auto|seed), label_source, eval_distance (Euclidean embedding
distance to the nearest eval item; NaN = unknown), image_hash (content hash of the pixels)``.

Two stages, both run by GX 1.x in an ephemeral context (nothing written to disk):

1. **Row checks** (column-map expectations; a failing row is *quarantined* with the reasons of
   every check it fails, the rest of the batch goes on): required values present, verdict in
   good/usable/reject, modality known, lane and label source allowed and consistent with each other
   (expert->expert, verify->verify, auto->auto, seed->seed), degradations well formed with levels
   1 or 2, description present and ending in "Overall, the quality of this image is <verdict>."
   with the same verdict as the verdict column, no exact duplicate of an eval image (image hash or
   image id) and no near-duplicate (embedding distance below ``near_duplicate_distance``), no
   repeated item id or image hash within the batch (the first occurrence is kept).
2. **Batch checks** on the rows that survived (failing any stops the round): the schema, at
   least ``min_rows`` rows, at most ``max_quarantine_share`` of the batch quarantined, and class
   balance: no verdict above ``max_class_share`` of the batch (checked from ``balance_min_rows``
   rows on, since tiny batches are unbalanced by chance).

:func:`curate_batch` returns a :class:`CurationReport` (``passed``, clean item ids, quarantine
entries with reasons, every check's outcome, :meth:`CurationReport.markdown`).
:func:`mix_training_set` combines the new rows with earlier rounds' training data.
"""
from __future__ import annotations

import json
import math
import os
import re
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from medq.engine.taxonomy import MODALITIES, VERDICTS
from medq.errors import MedQError

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

REQUIRED_COLUMNS: tuple[str, ...] = ("item_id", "image_id", "modality", "verdict", "degradations",
                                     "description", "lane", "label_source", "eval_distance",
                                     "image_hash")
LANE_VALUES: tuple[str, ...] = ("expert", "verify", "auto", "seed")
LANE_SOURCE_PAIRS: tuple[tuple[str, str], ...] = (("expert", "expert"), ("verify", "verify"),
                                                  ("auto", "auto"), ("seed", "seed"))
_VERDICT_END = re.compile(r"Overall, the quality of this image is (good|usable|reject)\.\s*$")
_VERDICT_END_GX = r"Overall, the quality of this image is (?:good|usable|reject)\.\s*$"
_ROW = "_row"


class CurationError(MedQError):
    """The curation input is not a table the suite can run on."""


@dataclass
class CurationConfig:
    """Thresholds of the suite (defaults match ``settings.loop`` where they overlap)."""

    near_duplicate_distance: float = 1e-3
    max_class_share: float = 0.8
    balance_min_rows: int = 20
    max_quarantine_share: float = 0.5
    min_rows: int = 1
    modalities: tuple[str, ...] = MODALITIES
    lane_source_pairs: tuple[tuple[str, str], ...] = LANE_SOURCE_PAIRS


@dataclass
class CheckResult:
    """One expectation's outcome. `stage`: row | batch | schema."""

    name: str
    stage: str
    success: bool
    unexpected_count: int = 0
    observed: Any = None
    description: str = ""


@dataclass
class QuarantineEntry:
    item_id: str
    image_id: str | None
    reasons: list[str]

    def to_row(self, round_id: str | None, stage: str = "curation") -> dict:
        """Row of the catalog's ``quarantine`` table (stable id: stage + round + item)."""
        return {"quarantine_id": f"{stage}:{round_id or '-'}:{self.item_id}", "stage": stage,
                "ref": self.item_id, "reason": "; ".join(self.reasons), "round_id": round_id,
                "payload": {"image_id": self.image_id, "reasons": self.reasons}}


@dataclass
class CurationReport:
    passed: bool
    n_rows: int
    n_clean: int
    clean_item_ids: list[str]
    quarantined: list[QuarantineEntry]
    checks: list[CheckResult]
    verdict_counts: dict[str, int] = field(default_factory=dict)
    failure_reasons: list[str] = field(default_factory=list)

    def quarantine_rows(self, round_id: str | None) -> list[dict]:
        return [q.to_row(round_id) for q in self.quarantined]

    def to_dict(self) -> dict:
        """JSON-safe summary (for ``datasets.report`` / ``rounds.report``)."""
        d = asdict(self)
        d["checks"] = [{**c, "observed": _jsonable(c["observed"])} for c in d["checks"]]
        return d

    def markdown(self) -> str:
        status = "PASSED" if self.passed else "FAILED"
        lines = [f"## Curation {status}", "",
                 f"{self.n_rows} new rows, {self.n_clean} kept, {len(self.quarantined)} quarantined."]
        if self.failure_reasons:
            lines += ["", "**Why the round stops:**", ""]
            lines += [f"- {r}" for r in self.failure_reasons]
        if self.verdict_counts:
            lines += ["", "Verdicts kept: " + ", ".join(f"{k} {v}" for k, v in
                                                       sorted(self.verdict_counts.items()))]
        lines += ["", "| check | stage | result | unexpected |", "|---|---|---|---|"]
        for c in self.checks:
            lines.append(f"| {c.description or c.name} | {c.stage} | "
                         f"{'ok' if c.success else 'FAIL'} | {c.unexpected_count} |")
        if self.quarantined:
            lines += ["", "### Quarantined rows", "", "| item | reasons |", "|---|---|"]
            for q in self.quarantined[:50]:
                lines.append(f"| {q.item_id} | {'; '.join(q.reasons)} |")
            if len(self.quarantined) > 50:
                lines.append(f"| ... | {len(self.quarantined) - 50} more |")
        return "\n".join(lines) + "\n"


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# --------------------------------------------------------------------------------------------
# Derived columns
# --------------------------------------------------------------------------------------------

def _levels_ok(value: Any) -> bool:
    """Degradations well formed: a list (or its JSON) of {"type": non-empty str, "level": 1|2}."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError:
            return False
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True  # no degradations listed = clean image
    if not isinstance(value, (list, tuple)):
        return False
    for d in value:
        if not isinstance(d, Mapping) or not isinstance(d.get("type"), str) or not d["type"]:
            return False
        level = d.get("level")
        if isinstance(level, bool) or level not in (1, 2):
            return False
    return True


def _described_verdict(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    m = _VERDICT_END.search(text.strip())
    return m.group(1) if m else None


def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    out = df.reset_index(drop=True).copy()
    out[_ROW] = np.arange(len(out))
    out["_levels_ok"] = [_levels_ok(v) for v in out["degradations"]]
    out["_described_verdict"] = [_described_verdict(v) for v in out["description"]]
    out["eval_distance"] = pd.to_numeric(out["eval_distance"], errors="coerce")
    # the first occurrence of a repeated id/hash is kept, later ones are flagged
    out["_dup_item"] = out["item_id"].duplicated(keep="first") & out["item_id"].notna()
    out["_dup_hash"] = out["image_hash"].duplicated(keep="first") & out["image_hash"].notna()
    return out


# --------------------------------------------------------------------------------------------
# GX suites
# --------------------------------------------------------------------------------------------

_GX_LOCK = threading.Lock()
_GX_BATCH_DEFINITION = None


def _batch_definition():
    """One in-memory GX context, pandas source and whole-dataframe batch definition per process,
    created on first use (setting them up costs more than a validation) and reused; each
    validation passes its own DataFrame and suite."""
    global _GX_BATCH_DEFINITION
    if _GX_BATCH_DEFINITION is None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig
        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        _GX_BATCH_DEFINITION = (ctx.data_sources.add_pandas("medq_curation")
                                .add_dataframe_asset("new_training_rows")
                                .add_batch_definition_whole_dataframe("whole_batch"))
    return _GX_BATCH_DEFINITION


def _validate(name: str, df: pd.DataFrame, expectations: list[tuple[str, str, Any]]):
    """Run `expectations` [(check name, description, GX expectation)] on `df`; returns
    {check name: GX result}."""
    import great_expectations as gx
    with _GX_LOCK:
        definition = _batch_definition()  # also makes GX's "current project" exist
        suite = gx.ExpectationSuite(name=f"medq_curation_{name}")
        for check, _, exp in expectations:
            exp.meta = {"check": check}
            suite.add_expectation(exp)
        batch = definition.get_batch(batch_parameters={"dataframe": df})
        res = batch.validate(suite, result_format={"result_format": "COMPLETE",
                                                   "unexpected_index_column_names": [_ROW]})
    by_name = {}
    for r in res.results:
        if r.exception_info and r.exception_info.get("raised_exception"):
            raise CurationError(f"curation check {r.expectation_config.meta.get('check')} could not "
                                f"run: {r.exception_info.get('exception_message')}")
        by_name[r.expectation_config.meta["check"]] = r
    missing = [c for c, _, _ in expectations if c not in by_name]
    if missing:
        raise CurationError(f"curation checks {missing} produced no result (duplicate expectation?)")
    return by_name


def _row_expectations(cfg: CurationConfig, eval_hashes: Sequence[str],
                      eval_image_ids: Sequence[str]) -> list[tuple[str, str, Any]]:
    E = __import__("great_expectations").expectations
    checks = [(f"not_null_{c}", f"{c} present", E.ExpectColumnValuesToNotBeNull(column=c))
              for c in ("item_id", "image_id", "verdict", "lane", "label_source", "description",
                        "image_hash")]
    checks += [
        ("verdict_allowed", "verdict in good/usable/reject",
         E.ExpectColumnValuesToBeInSet(column="verdict", value_set=list(VERDICTS))),
        ("modality_allowed", "modality known",
         E.ExpectColumnValuesToBeInSet(column="modality", value_set=list(cfg.modalities))),
        ("lane_allowed", "lane in expert/verify/auto/seed",
         E.ExpectColumnValuesToBeInSet(column="lane", value_set=list(LANE_VALUES))),
        ("lane_consistent", "label source consistent with lane",
         E.ExpectColumnPairValuesToBeInSet(column_A="lane", column_B="label_source",
                                           value_pairs_set=[tuple(p) for p in cfg.lane_source_pairs],
                                           ignore_row_if="either_value_is_missing")),
        ("levels_valid", "degradations well formed, levels 1 or 2",
         E.ExpectColumnValuesToBeInSet(column="_levels_ok", value_set=[True])),
        ("description_verdict_sentence", "description ends with the verdict sentence",
         E.ExpectColumnValuesToMatchRegex(column="description", regex=_VERDICT_END_GX)),
        ("description_matches_verdict", "described verdict equals the verdict column",
         E.ExpectColumnPairValuesToBeEqual(column_A="_described_verdict", column_B="verdict",
                                           ignore_row_if="either_value_is_missing")),
        ("not_eval_image_hash", "not an exact duplicate of an eval image",
         E.ExpectColumnValuesToNotBeInSet(column="image_hash", value_set=sorted(set(eval_hashes)))),
        ("not_eval_image_id", "not an eval image",
         E.ExpectColumnValuesToNotBeInSet(column="image_id", value_set=sorted(set(eval_image_ids)))),
        ("not_near_eval", f"embedding distance to eval >= {cfg.near_duplicate_distance:g}",
         E.ExpectColumnValuesToBeBetween(column="eval_distance",
                                         min_value=cfg.near_duplicate_distance)),
        ("unique_item_id", "item id not repeated in the batch",
         E.ExpectColumnValuesToBeInSet(column="_dup_item", value_set=[False])),
        ("unique_image_hash", "image not repeated in the batch",
         E.ExpectColumnValuesToBeInSet(column="_dup_hash", value_set=[False])),
    ]
    return checks


def curate_batch(rows: pd.DataFrame, *, eval_hashes: Iterable[str] = (),
                 eval_image_ids: Iterable[str] = (), config: CurationConfig | None = None,
                 settings=None) -> CurationReport:
    """Validate a round's new training rows (see module docstring).

    `eval_hashes` / `eval_image_ids`: image hashes and ids of the evaluation set (exact leakage).
    `settings` (the settings tree), when given, supplies ``loop.near_duplicate_distance`` and
    any ``curation.*`` fields present. Returns the report; never raises on bad rows (only on a
    `rows` that is not a DataFrame)."""
    if not isinstance(rows, pd.DataFrame):
        raise CurationError(f"curation expects a pandas DataFrame, got {type(rows).__name__}")
    cfg = config or _config_from_settings(settings)
    eval_hashes, eval_image_ids = list(eval_hashes), list(eval_image_ids)
    E = __import__("great_expectations").expectations
    n = len(rows)

    schema_check = ("schema", "all required columns present",
                    E.ExpectTableColumnsToMatchSet(column_set=[*REQUIRED_COLUMNS, _ROW],
                                                   exact_match=False))
    missing = [c for c in REQUIRED_COLUMNS if c not in rows.columns]
    if missing:
        # the row checks cannot run without their columns: report the schema alone
        schema = _validate("schema", rows.reset_index(drop=True).assign(**{_ROW: np.arange(n)}),
                           [schema_check])["schema"]
        return CurationReport(False, n, 0, [], [], [
            CheckResult("schema", "schema", False, len(missing), _jsonable(
                schema.result.get("details", {}).get("mismatched", missing)),
                "all required columns present")], {},
            [f"missing column(s): {', '.join(missing)}"])

    df = _prepare(rows)
    reasons: dict[int, list[str]] = {}
    checks: list[CheckResult] = []
    row_checks = [schema_check] + (_row_expectations(cfg, eval_hashes, eval_image_ids) if n else [])
    results = _validate("rows", df, row_checks)
    checks.append(CheckResult("schema", "schema", bool(results["schema"].success), 0, None,
                              schema_check[1]))
    for name, desc, _ in row_checks[1:]:
        r = results[name]
        idx = [int(u[_ROW]) for u in (r.result.get("unexpected_index_list") or [])]
        for i in idx:
            reasons.setdefault(i, []).append(_reason(name, desc, df.iloc[i]))
        checks.append(CheckResult(name, "row", bool(r.success), len(set(idx)), None, desc))

    bad = sorted(reasons)
    quarantined = [QuarantineEntry(str(df.at[i, "item_id"]), _opt(df.at[i, "image_id"]), reasons[i])
                   for i in bad]
    clean = df.drop(index=bad)
    n_clean = len(clean)
    shares = clean["verdict"].map(clean["verdict"].value_counts(normalize=True)) if n_clean else \
        pd.Series(dtype=float)
    clean = clean.assign(_verdict_share=shares.astype(float))
    min_keep = max(cfg.min_rows, math.ceil((1.0 - cfg.max_quarantine_share) * n - 1e-9))
    # one row-count expectation carries both bounds (GX keeps one expectation per type and
    # arguments); its description names the binding one
    if min_keep > cfg.min_rows:
        count_check = ("quarantine_share", f"at most {cfg.max_quarantine_share:.0%} of rows "
                                           f"quarantined (>= {min_keep} of {n} kept)")
    else:
        count_check = ("row_count", f"at least {cfg.min_rows} clean rows")
    batch_checks = [(*count_check, E.ExpectTableRowCountToBeBetween(min_value=min_keep))]
    if n_clean >= cfg.balance_min_rows:
        batch_checks.append(("class_balance", f"no verdict above {cfg.max_class_share:.0%}",
                             E.ExpectColumnMaxToBeBetween(column="_verdict_share",
                                                          max_value=cfg.max_class_share)))
    results = _validate("batch", clean, batch_checks)
    failures: list[str] = []
    for name, desc, _ in batch_checks:
        r = results[name]
        observed = _jsonable(r.result.get("observed_value"))
        checks.append(CheckResult(name, "batch", bool(r.success), 0, observed, desc))
        if not r.success:
            failures.append(f"{desc} (observed {observed})")
    counts = {str(k): int(v) for k, v in clean["verdict"].value_counts().items()} if n_clean else {}
    return CurationReport(not failures, n, n_clean, [str(x) for x in clean["item_id"]],
                          quarantined, checks, counts, failures)


def _opt(v: Any) -> str | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _reason(name: str, desc: str, row: pd.Series) -> str:
    detail = {
        "verdict_allowed": lambda r: f"verdict {r['verdict']!r} not in {list(VERDICTS)}",
        "modality_allowed": lambda r: f"unknown modality {r['modality']!r}",
        "lane_allowed": lambda r: f"unknown lane {r['lane']!r}",
        "lane_consistent": lambda r: f"label source {r['label_source']!r} inconsistent with lane "
                                     f"{r['lane']!r}",
        "description_matches_verdict": lambda r: f"description says {r['_described_verdict']!r} "
                                                 f"but verdict is {r['verdict']!r}",
        "not_near_eval": lambda r: f"near-duplicate of an eval image (distance "
                                   f"{r['eval_distance']:.4g})",
    }.get(name)
    return detail(row) if detail else f"failed: {desc}"


def _config_from_settings(settings) -> CurationConfig:
    cfg = CurationConfig()
    if settings is None:
        return cfg
    loop = getattr(settings, "loop", None)
    if loop is not None:
        cfg.near_duplicate_distance = loop.near_duplicate_distance
    cur = getattr(settings, "curation", None)
    if cur is not None:
        for k in ("max_class_share", "balance_min_rows", "max_quarantine_share", "min_rows"):
            if hasattr(cur, k):
                setattr(cfg, k, getattr(cur, k))
        if getattr(cur, "near_duplicate_distance", None) is not None:
            cfg.near_duplicate_distance = cur.near_duplicate_distance
    return cfg


# --------------------------------------------------------------------------------------------
# Training set mixing
# --------------------------------------------------------------------------------------------

def _getter(name: str) -> Callable[[Any], Any]:
    def get(item: Any) -> Any:
        return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)
    return get


def mix_training_set(previous_items: Sequence[Any], new_items: Sequence[Any], *,
                     max_items: int | None = None, seed: int = 0) -> list[Any]:
    """Training set of a round: the new (curated) items plus earlier rounds' items.

    Items are mappings or objects with ``item_id`` and ``image_id``. Every new item is kept
    (first occurrence of an item id / image id wins); an earlier item whose item id or image id
    reappears among the new ones is dropped (the newer label supersedes it). With `max_items`,
    earlier items fill the remaining room as a seeded random sample (replay), keeping their
    original order; new items beyond `max_items` are cut in their given order. Returns new
    items first, then earlier ones."""
    if max_items is not None and max_items < 0:
        raise CurationError(f"mix_training_set: max_items must be >= 0, got {max_items}")
    iid, img = _getter("item_id"), _getter("image_id")
    seen_items: set = set()
    seen_images: set = set()
    fresh: list[Any] = []
    for item in new_items:
        if iid(item) in seen_items or (img(item) is not None and img(item) in seen_images):
            continue
        seen_items.add(iid(item))
        if img(item) is not None:
            seen_images.add(img(item))
        fresh.append(item)
    old: list[Any] = []
    for item in previous_items:
        if iid(item) in seen_items or (img(item) is not None and img(item) in seen_images):
            continue
        seen_items.add(iid(item))
        if img(item) is not None:
            seen_images.add(img(item))
        old.append(item)
    if max_items is None:
        return fresh + old
    fresh = fresh[:max_items]
    room = max_items - len(fresh)
    if room < len(old):
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(old), size=room, replace=False))
        old = [old[i] for i in keep]
    return fresh + old
