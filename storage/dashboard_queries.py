"""Read-only data access for the improvement dashboard: its read model, kept in storage/ with
the rest of the SQL (``dashboards/`` holds layout and charts only).

Every function takes the catalog path, opens ONE short-lived read-only DuckDB connection, runs
SQL aggregations (COUNT / GROUP BY / LIMIT: never a full-table load; the pool may hold millions
of items) and closes the connection before returning, so the engine loop can take its write lock
between two dashboard queries. While the loop is writing, opening fails with a lock error: we
retry briefly and then raise :class:`CatalogBusyError` (the app shows "busy, retry").

Units: accuracies and rates are fractions in [0, 1] (the app shows percent); description scores
are on MedQ-Bench's 0-8 scale (higher is better); spend is in lane cost units (settings.lanes).

The "champion timeline" is the spine of the per-round views: position ``p`` is the champion
model after round ``p`` finished (``model_out`` if that round promoted, else ``model_in``);
the position before the first round is the starting model. Each position is joined to the
latest ``eval`` split run of that model version.

This module has no Streamlit import (the benchmark times it raw); the app adds the caching.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from medq.engine.taxonomy import LEVELS, MODALITIES, QUESTION_TYPES
from medq.errors import MedQError

# Same connection config as medq.storage.catalog (no extension downloads; DuckDB also refuses two
# in-process connections to one file with different configs).
_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
LANES = ("expert", "verify", "auto")
OPEN_STATUSES = ("queued", "sent")

# rounds.report keys (written by the loop) -> column type
REPORT_NUMBERS = ("accuracy_in", "accuracy_out", "description_in", "description_out", "spend",
                  "n_failures", "n_prototypes", "n_candidates", "failure_yield",
                  "pool_base_rate", "annotations", "n_train", "quarantined", "auto_threshold")
REPORT_TEXT = ("promotion_reason", "dataset_id")


class DashboardDataError(MedQError):
    """The catalog cannot be read by the dashboard (missing, not a catalog, bad file)."""


class CatalogBusyError(DashboardDataError):
    """Another process held the catalog's lock for longer than the retry window."""


@contextlib.contextmanager
def read_connection(db: str | os.PathLike, *, retry_s: float = 3.0
                    ) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to catalog `db`, closed on exit. Lock conflicts (the loop writing)
    are retried with backoff for up to `retry_s` seconds."""
    path = Path(db)
    if not path.is_file():
        raise DashboardDataError(f"no catalog at {path} (run `medq init` and a loop first)")
    deadline = time.monotonic() + retry_s
    delay = 0.02
    while True:
        try:
            con = duckdb.connect(str(path), read_only=True, config=dict(_CONFIG))
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise DashboardDataError(f"catalog {path} cannot be opened: {exc}") from exc
            if time.monotonic() >= deadline:
                raise CatalogBusyError(f"catalog {path} is locked by a writer (the loop?) for more "
                                       f"than {retry_s:.0f} s; retry in a moment") from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
        except duckdb.Error as exc:
            raise DashboardDataError(f"catalog {path} cannot be opened read-only: {exc}") from exc
    try:
        yield con
    finally:
        con.close()


def _df(con, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
    return con.execute(sql, list(params or [])).df()


def _rows(con, sql: str, params: Sequence[Any] | None = None) -> list[dict]:
    cur = con.execute(sql, list(params or []))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _none(v):
    """NaN/NA -> None for scalar values that go into dicts."""
    try:
        return None if v is None or pd.isna(v) else v
    except (TypeError, ValueError):
        return v


def catalog_version(db: str | os.PathLike) -> tuple:
    """Cheap change marker (mtime and size of the catalog and its WAL) for cache keys: a round
    that writes shows on the next rerun instead of after the cache's ttl."""
    out = []
    for p in (Path(db), Path(f"{db}.wal")):
        try:
            st = p.stat()
            out += [st.st_mtime_ns, st.st_size]
        except FileNotFoundError:
            out += [0, 0]
    return tuple(out)


# -- rounds --------------------------------------------------------------------------------

def _rounds_sql() -> str:
    nums = ", ".join(f"TRY_CAST(report->>'$.{k}' AS DOUBLE) AS {k if k != 'spend' else 'report_spend'}"
                     for k in REPORT_NUMBERS)
    texts = ", ".join(f"report->>'$.{k}' AS {k}" for k in REPORT_TEXT)
    lanes = ", ".join(
        f"TRY_CAST(report->>'$.spend_by_lane.{lane}' AS DOUBLE) AS spend_{lane}, "
        f"TRY_CAST(report->>'$.items_by_lane.{lane}' AS DOUBLE) AS items_{lane}" for lane in LANES)
    return (f"SELECT round_id, round_index, status, model_in, model_out, promoted, spend, "
            f"stop_reason, started_at, finished_at, {nums}, {texts}, {lanes} "
            f"FROM rounds ORDER BY round_index")


def rounds(db: str | os.PathLike) -> pd.DataFrame:
    """One row per round (any status), report fields as columns.

    Adds ``champion_accuracy`` / ``champion_description`` (the champion after the round: the
    candidate's score if promoted, else the incoming model's), ``spend`` (the column, else the
    report's), ``cumulative_spend`` and ``decision`` (promoted / rejected / the status)."""
    with read_connection(db) as con:
        df = _df(con, _rounds_sql())
    if df.empty:
        return df
    df["spend"] = df["spend"].fillna(df["report_spend"])
    promoted = df["promoted"].fillna(False).astype(bool)
    df["champion_accuracy"] = df["accuracy_out"].where(promoted, df["accuracy_in"])
    df["champion_description"] = df["description_out"].where(promoted, df["description_in"])
    df["cumulative_spend"] = df["spend"].fillna(0.0).cumsum()
    df["decision"] = [("promoted" if p else "rejected") if s == "done" else s
                      for p, s in zip(promoted, df["status"])]
    return df


def headline(db: str | os.PathLike) -> dict:
    """The numbers at the top of every view.

    Keys: champion_accuracy (0-1) and champion_description (0-8) after the latest finished round,
    start_accuracy / start_description (before the first round), champion_model, rounds_done,
    rounds_running, promoted, total_spend (cost units, every round), annotations, pool_size,
    latest_round."""
    with read_connection(db) as con:
        r = _rows(con, """
            WITH d AS (SELECT * FROM rounds WHERE status = 'done')
            SELECT
              (SELECT count(*) FROM d) AS rounds_done,
              (SELECT count(*) FROM rounds WHERE status = 'running') AS rounds_running,
              (SELECT count(*) FROM d WHERE promoted) AS promoted,
              (SELECT sum(coalesce(spend, TRY_CAST(report->>'$.spend' AS DOUBLE))) FROM rounds)
                AS total_spend,
              (SELECT count(*) FROM annotations) AS annotations,
              (SELECT count(*) FROM items WHERE split = 'pool') AS pool_size,
              (SELECT round_id FROM rounds ORDER BY round_index DESC LIMIT 1) AS latest_round""")[0]
        last = _rows(con, """
            SELECT round_id, promoted, model_in, model_out,
                   TRY_CAST(report->>'$.accuracy_in' AS DOUBLE) AS acc_in,
                   TRY_CAST(report->>'$.accuracy_out' AS DOUBLE) AS acc_out,
                   TRY_CAST(report->>'$.description_in' AS DOUBLE) AS desc_in,
                   TRY_CAST(report->>'$.description_out' AS DOUBLE) AS desc_out
            FROM rounds WHERE status = 'done' ORDER BY round_index DESC LIMIT 1""")
        first = _rows(con, """
            SELECT TRY_CAST(report->>'$.accuracy_in' AS DOUBLE) AS acc_in,
                   TRY_CAST(report->>'$.description_in' AS DOUBLE) AS desc_in
            FROM rounds WHERE status = 'done' ORDER BY round_index LIMIT 1""")
    out = {k: _none(v) for k, v in r.items()}
    out["total_spend"] = float(out["total_spend"] or 0.0)
    if last:
        lr = last[0]
        out["champion_accuracy"] = lr["acc_out"] if lr["promoted"] else lr["acc_in"]
        out["champion_description"] = lr["desc_out"] if lr["promoted"] else lr["desc_in"]
        out["champion_model"] = lr["model_out"] if lr["promoted"] else lr["model_in"]
        out["start_accuracy"], out["start_description"] = first[0]["acc_in"], first[0]["desc_in"]
    else:
        out.update(champion_accuracy=None, champion_description=None, champion_model=None,
                   start_accuracy=None, start_description=None)
    return out


def champion_timeline(db: str | os.PathLike) -> pd.DataFrame:
    """Columns: position (round index; first round index - 1 = the starting model), round_id
    (None for the start), model_version, eval_id (latest eval-split run of that version, None if
    never evaluated)."""
    with read_connection(db) as con:
        return _timeline(con)


def _timeline(con) -> pd.DataFrame:
    return _df(con, """
        WITH r AS (SELECT round_id, round_index, model_in, model_out, promoted
                   FROM rounds WHERE status = 'done'),
        t AS (
          SELECT round_index - 1 AS position, NULL::VARCHAR AS round_id, model_in AS model_version
          FROM r WHERE round_index = (SELECT min(round_index) FROM r)
          UNION ALL
          SELECT round_index, round_id, CASE WHEN promoted THEN model_out ELSE model_in END FROM r),
        e AS (SELECT eval_id, model_version FROM eval_runs WHERE split = 'eval'
              QUALIFY row_number() OVER (PARTITION BY model_version
                                         ORDER BY created_at DESC, eval_id DESC) = 1)
        SELECT t.position, t.round_id, t.model_version, e.eval_id
        FROM t LEFT JOIN e USING (model_version) ORDER BY t.position""")


# -- breakdowns ----------------------------------------------------------------------------

_METRIC_KEYS = {"modality": ("per_modality",), "question type": ("per_type", "per_question_type"),
                "level": ("per_level",)}
_ORDERS = {"modality": MODALITIES, "question type": QUESTION_TYPES,
           "level": tuple(LEVELS.values())}


def breakdown(db: str | os.PathLike) -> pd.DataFrame:
    """MCQ accuracy of each champion on the eval set, long format: position, model_version,
    dimension (modality | question type | level | degradation), group, n, accuracy (0-1).

    Modality, question type and level come from the stored eval metrics (what `medq evaluate`
    reported); degradation type is aggregated in SQL from the predictions joined to the eval
    items' degradations (an item with two degradation types counts in both groups; a clean
    item is "none")."""
    with read_connection(db) as con:
        tl = _timeline(con).dropna(subset=["eval_id"])
        if tl.empty:
            return _empty_breakdown()
        ids = sorted(set(tl["eval_id"]))
        metrics = {r["eval_id"]: json.loads(r["metrics"] or "{}") for r in _rows(
            con, "SELECT eval_id, metrics FROM eval_runs WHERE eval_id IN "
                 "(SELECT unnest(?::VARCHAR[]))", [ids])}
        deg = _df(con, """
            WITH p AS (SELECT eval_id, item_id, correct FROM predictions
                       WHERE kind = 'mcq' AND eval_id IN (SELECT unnest(?::VARCHAR[]))),
            d AS (SELECT item_id, CASE WHEN coalesce(json_array_length(degradations), 0) = 0
                                       THEN ['none']
                                       ELSE list_distinct(json_extract_string(degradations, '$[*].type'))
                                  END AS types
                  FROM items WHERE split = 'eval' AND kind = 'mcq')
            SELECT p.eval_id, t.type AS "group", count(*) AS n,
                   avg(CASE WHEN p.correct THEN 1.0 ELSE 0.0 END) AS accuracy
            FROM p JOIN d USING (item_id), unnest(d.types) AS t(type)
            GROUP BY ALL""", [ids])
    rows = []
    for pos, model, eval_id in zip(tl["position"], tl["model_version"], tl["eval_id"]):
        mcq = (metrics.get(eval_id) or {}).get("mcq") or {}
        for dim, keys in _METRIC_KEYS.items():
            groups: dict[str, Any] = next(
                (mcq[k] for k in keys if isinstance(mcq.get(k), dict)), {})
            for group, g in groups.items():
                if isinstance(g, dict) and g.get("accuracy") is not None:
                    rows.append({"position": int(pos), "model_version": model, "dimension": dim,
                                 "group": str(group), "n": int(g.get("n") or 0),
                                 "accuracy": float(g["accuracy"])})
        for r in deg[deg["eval_id"] == eval_id].itertuples(index=False):
            rows.append({"position": int(pos), "model_version": model,
                         "dimension": "degradation", "group": str(r.group), "n": int(r.n),
                         "accuracy": float(r.accuracy)})
    return pd.DataFrame(rows) if rows else _empty_breakdown()


def _empty_breakdown() -> pd.DataFrame:
    return pd.DataFrame(columns=["position", "model_version", "dimension", "group", "n",
                                 "accuracy"])


def description_breakdown(db: str | os.PathLike) -> pd.DataFrame:
    """Description score (0-8) of each champion per modality: position, modality, n, overall."""
    with read_connection(db) as con:
        tl = _timeline(con).dropna(subset=["eval_id"])
        if tl.empty:
            return pd.DataFrame(columns=["position", "modality", "n", "overall"])
        metrics = {r["eval_id"]: json.loads(r["metrics"] or "{}") for r in _rows(
            con, "SELECT eval_id, metrics FROM eval_runs WHERE eval_id IN "
                 "(SELECT unnest(?::VARCHAR[]))", [sorted(set(tl["eval_id"]))])}
    rows = []
    for pos, eval_id in zip(tl["position"], tl["eval_id"]):
        desc = (metrics.get(eval_id) or {}).get("description") or {}
        for modality, g in (desc.get("per_modality") or {}).items():
            if isinstance(g, dict) and g.get("overall") is not None:
                rows.append({"position": int(pos), "modality": modality,
                             "n": int(g.get("n") or 0), "overall": float(g["overall"])})
    return pd.DataFrame(rows, columns=["position", "modality", "n", "overall"])


# -- lift attribution ----------------------------------------------------------------------

def prototype_lift(db: str | os.PathLike, round_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Error rate (0-1) of each prototype's member eval items under every champion.

    Long format: prototype_id, found_in (round id), found_index, summary, modality, degradation,
    question_type, n_members, error_mass, position, model_version, n (members scored), error_rate.
    Membership comes from the ``failures`` table; an item counts when its prediction has a
    ``correct`` value (MCQ right/wrong, description verdict match). `round_ids` restricts to
    prototypes found in those rounds (None = all)."""
    with read_connection(db) as con:
        tl = _timeline(con).dropna(subset=["eval_id"])
        if tl.empty:
            return _empty_lift()
        only = list(round_ids) if round_ids is not None else None
        df = _df(con, f"""
            WITH tl AS (SELECT unnest(?::VARCHAR[]) AS eval_id, unnest(?::INTEGER[]) AS position,
                               unnest(?::VARCHAR[]) AS model_version),
            pr AS (SELECT p.prototype_id, p.round_id AS found_in, r.round_index AS found_index,
                          p.summary, p.modality, p.degradation, p.question_type, p.n_members,
                          p.error_mass
                   FROM prototypes p JOIN rounds r USING (round_id)
                   WHERE NOT coalesce(p.is_noise, FALSE)
                   {"AND p.round_id IN (SELECT unnest(?::VARCHAR[]))" if only is not None else ""}),
            m AS (SELECT f.prototype_id, f.item_id FROM failures f
                  WHERE f.prototype_id IN (SELECT prototype_id FROM pr)),
            e AS (SELECT m.prototype_id, tl.position, tl.model_version,
                         count(*) AS n, 1.0 - avg(CASE WHEN pd.correct THEN 1.0 ELSE 0.0 END)
                           AS error_rate
                  FROM m JOIN predictions pd ON pd.item_id = m.item_id
                         JOIN tl ON tl.eval_id = pd.eval_id
                  WHERE pd.correct IS NOT NULL
                  GROUP BY ALL)
            SELECT pr.*, e.position, e.model_version, e.n, e.error_rate
            FROM pr JOIN e USING (prototype_id)
            ORDER BY pr.found_index, pr.error_mass DESC NULLS LAST, pr.prototype_id, e.position""",
                 [list(tl["eval_id"]), [int(p) for p in tl["position"]],
                  list(tl["model_version"])] + ([only] if only is not None else []))
    return df


def _empty_lift() -> pd.DataFrame:
    return pd.DataFrame(columns=["prototype_id", "found_in", "found_index", "summary", "modality",
                                 "degradation", "question_type", "n_members", "error_mass",
                                 "position", "model_version", "n", "error_rate"])


def lift_summary(lift: pd.DataFrame) -> pd.DataFrame:
    """One row per prototype from :func:`prototype_lift`: ``before`` = error rate under the
    model that round N evaluated (the champion at position N-1, i.e. when the cluster was
    found), ``after_round`` = under the champion right after round N, ``latest`` = under the
    latest champion, ``lift`` = before - latest (positive = fixed that much); NaN where the
    model was never evaluated."""
    cols = ["prototype_id", "found_in", "found_index", "summary", "modality", "degradation",
            "question_type", "n_members", "error_mass", "before", "after_round", "latest",
            "lift", "latest_position"]
    if lift.empty:
        return pd.DataFrame(columns=cols)
    # vectorized: one row per prototype even with thousands of prototypes x 50 positions
    lift = lift.sort_values(["prototype_id", "position"], kind="stable")
    by = lift.groupby("prototype_id", sort=False)
    out = by[cols[1:9]].first()
    prior = lift[lift["position"] < lift["found_index"]]
    out["before"] = prior.groupby("prototype_id")["error_rate"].last()
    at = lift[lift["position"] == lift["found_index"]]
    out["after_round"] = at.groupby("prototype_id")["error_rate"].first()
    last = by[["position", "error_rate"]].last()
    out["latest"] = last["error_rate"].where(last["position"] >= out["found_index"])
    out["lift"] = out["before"] - out["latest"]
    out["latest_position"] = last["position"].astype(int)
    out = out.reset_index()
    # original order: discovery round, then error mass (as prototype_lift returns them)
    order = {pid: i for i, pid in enumerate(dict.fromkeys(lift.sort_values(
        ["found_index", "error_mass", "prototype_id"], ascending=[True, False, True],
        kind="stable")["prototype_id"]))}
    out = out.sort_values("prototype_id", key=lambda c: c.map(order)).reset_index(drop=True)
    return out[cols]  # NaN where a value is unknown (no eval of that model)


# -- prototypes gallery --------------------------------------------------------------------

def prototype_gallery(db: str | os.PathLike, round_id: str, *, limit: int = 8,
                      members: int = 4) -> list[dict]:
    """The `limit` heaviest (by error mass) non-noise prototypes of `round_id`, each with up to
    `members` member items (image id, modality, question type, level, question), most severe
    failures first, the medoid left out."""
    with read_connection(db) as con:
        protos = _rows(con, """
            SELECT prototype_id, round_id, medoid_item_id, medoid_image_id, n_members, error_mass,
                   radius, modality, degradation, question_type, summary
            FROM prototypes WHERE round_id = ? AND NOT coalesce(is_noise, FALSE)
            ORDER BY error_mass DESC NULLS LAST, prototype_id LIMIT ?""", [round_id, int(limit)])
        if not protos:
            return []
        ids = [p["prototype_id"] for p in protos]
        mem = _rows(con, """
            WITH m AS (
              SELECT f.prototype_id, f.severity, i.item_id, i.image_id, i.modality,
                     i.question_type, i.level, i.question
              FROM failures f JOIN items i USING (item_id)
                              JOIN prototypes p ON p.prototype_id = f.prototype_id
              WHERE f.round_id = ? AND f.prototype_id IN (SELECT unnest(?::VARCHAR[]))
                AND i.image_id IS DISTINCT FROM p.medoid_image_id
              -- several questions may share an image: show each image once
              QUALIFY row_number() OVER (PARTITION BY f.prototype_id, i.image_id
                                         ORDER BY f.severity DESC NULLS LAST, i.item_id) = 1)
            SELECT * EXCLUDE (severity) FROM m
            QUALIFY row_number() OVER (PARTITION BY prototype_id
                                       ORDER BY severity DESC NULLS LAST, item_id) <= ?""",
                    [round_id, ids, int(members)])
        by_proto: dict[str, list[dict]] = {}
        for m in mem:
            by_proto.setdefault(m.pop("prototype_id"), []).append(m)
        lacking = [p for p in ids if p not in by_proto]
        if lacking:  # no failures rows: fall back to the members JSON (first few ids only)
            for m in _rows(con, """
                WITH x AS (SELECT prototype_id, medoid_item_id, unnest(list_slice(
                             json_extract_string(members, '$[*]'), 1, ?)) AS item_id
                           FROM prototypes WHERE prototype_id IN (SELECT unnest(?::VARCHAR[])))
                SELECT x.prototype_id, i.item_id, i.image_id, i.modality, i.question_type,
                       i.level, i.question
                FROM x JOIN items i USING (item_id)
                WHERE i.image_id IS DISTINCT FROM (SELECT medoid_image_id FROM prototypes p
                                                   WHERE p.prototype_id = x.prototype_id)""",
                              [4 * int(members), lacking]):
                lst = by_proto.setdefault(m.pop("prototype_id"), [])
                if len(lst) < members and all(o["image_id"] != m["image_id"] for o in lst):
                    lst.append(m)
    for p in protos:
        p["members"] = by_proto.get(p["prototype_id"], [])
    return protos


# -- annotation queue ----------------------------------------------------------------------

def queue_status(db: str | os.PathLike, *, last_rounds: int = 12) -> dict:
    """Label Studio (or other backend) queue: ``totals`` (lane, status, n) over every task,
    ``by_round`` (round_id, round_index, lane, status, n) for the `last_rounds` latest rounds,
    ``oldest_open`` (created_at of the oldest queued/sent task, None if none open)."""
    with read_connection(db) as con:
        totals = _df(con, "SELECT lane, status, count(*) AS n FROM annotation_tasks "
                          "GROUP BY ALL ORDER BY lane, status")
        by_round = _df(con, """
            WITH last AS (SELECT round_id, round_index FROM rounds
                          ORDER BY round_index DESC LIMIT ?)
            SELECT t.round_id, last.round_index, t.lane, t.status, count(*) AS n
            FROM annotation_tasks t JOIN last USING (round_id)
            GROUP BY ALL ORDER BY last.round_index, t.lane, t.status""", [int(last_rounds)])
        first = con.execute("SELECT min(created_at) FROM annotation_tasks WHERE status IN "
                            "(SELECT unnest(?::VARCHAR[]))", [list(OPEN_STATUSES)]).fetchone()
        oldest = first[0] if first else None  # an aggregate always returns one row
    return {"totals": totals, "by_round": by_round, "oldest_open": oldest}


# -- derived views (pure) ------------------------------------------------------------------

def cost_per_point(rounds_df: pd.DataFrame) -> dict:
    """Total spend over the champion's accuracy gain since the start, in cost units per
    accuracy point (1 point = 1 % MCQ accuracy). ``per_point`` is None without a gain."""
    done = rounds_df[rounds_df["status"] == "done"] if not rounds_df.empty else rounds_df
    if done.empty:
        return {"spend": 0.0, "gain_points": None, "per_point": None}
    spend = float(rounds_df["spend"].fillna(0.0).sum())
    start, end = done.iloc[0]["accuracy_in"], done.iloc[-1]["champion_accuracy"]
    if pd.isna(start) or pd.isna(end):
        return {"spend": spend, "gain_points": None, "per_point": None}
    gain = (float(end) - float(start)) * 100.0
    return {"spend": spend, "gain_points": gain, "per_point": spend / gain if gain > 0 else None}


def sample_efficiency(path: str | os.PathLike | None) -> pd.DataFrame | None:
    """Benchmark curves ``{strategy: [{annotations, accuracy, seed}, ...]}`` as a long frame
    (strategy, annotations, accuracy, seed), or None when the file is absent. A file that is
    present but malformed is a :class:`DashboardDataError` naming it."""
    if path is None or not Path(path).is_file():
        return None
    try:
        data = json.loads(Path(path).read_text())
        curves = data.get("curves", data) if isinstance(data, dict) else None
        if not isinstance(curves, dict):
            raise TypeError("not a JSON object of curves")
        rows = [{"strategy": str(s), "annotations": float(p["annotations"]),
                 "accuracy": float(p["accuracy"]), "seed": p.get("seed", 0)}
                for s, pts in curves.items() for p in pts]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise DashboardDataError(f"sample-efficiency file {path} is not "
                                 f"{{strategy: [{{annotations, accuracy, seed}}]}}: {exc}") from exc
    return pd.DataFrame(rows, columns=["strategy", "annotations", "accuracy", "seed"])


def round_ids_with_prototypes(db: str | os.PathLike) -> list[tuple[str, int, int]]:
    """(round_id, round_index, number of non-noise prototypes), latest round first."""
    with read_connection(db) as con:
        return [tuple(r) for r in con.execute("""
            SELECT p.round_id, r.round_index, count(*) FROM prototypes p JOIN rounds r USING (round_id)
            WHERE NOT coalesce(p.is_noise, FALSE) GROUP BY ALL ORDER BY r.round_index DESC""").fetchall()]


def efficiency_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean, min and max accuracy over seeds per (strategy, annotations)."""
    g = curves.groupby(["strategy", "annotations"], as_index=False)["accuracy"]
    return g.agg(mean="mean", low="min", high="max", seeds="count")


def sample_efficiency_ratio(curves: pd.DataFrame, baseline: str = "random") -> dict[str, float]:
    """Per strategy: how many times fewer annotations it needs than `baseline` to reach the
    baseline's final (largest-budget) mean accuracy, by linear interpolation on the mean curve.
    Strategies that never reach it (or a missing baseline) are left out."""
    mean = efficiency_curves(curves)
    base = mean[mean["strategy"].str.lower() == baseline.lower()].sort_values("annotations")
    if base.empty:
        return {}
    target, base_n = float(base["mean"].iloc[-1]), float(base["annotations"].iloc[-1])
    out = {}
    for strategy, g in mean.groupby("strategy"):
        if strategy.lower() == baseline.lower():
            continue
        g = g.sort_values("annotations")
        xs, ys = g["annotations"].to_numpy(float), g["mean"].to_numpy(float)
        hit = next((i for i, y in enumerate(ys) if y >= target), None)
        if hit is None:
            continue
        if hit == 0:
            needed = xs[0]
        else:  # interpolate between the last point below and the first at/above the target
            x0, x1, y0, y1 = xs[hit - 1], xs[hit], ys[hit - 1], ys[hit]
            needed = x0 + (target - y0) * (x1 - x0) / (y1 - y0) if y1 > y0 else x1
        if needed > 0:
            out[strategy] = base_n / needed
    return out
