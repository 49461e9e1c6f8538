"""A synthetic catalog in bulk, for load benchmarks: `rounds` rounds of records over a pool of
`pool` images (a million in seconds), written with DuckDB SQL (``INSERT ... SELECT ... FROM
range()``) instead of row by row.

The eval set, per-model predictions, failures, prototypes, candidates, routes, annotation tasks
and annotations are derived from one another with the same correctness rule, so every dashboard
view has consistent data. Used by ``benchmarks/dashboard_load.py``; nothing in the loop reads it.
"""
from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

MODALITIES = ("CT", "MRI", "X-ray", "fundus", "histopathology", "endoscopy", "ultrasound")
DEGS = {"CT": ("low_dose", "metal_streak"), "MRI": ("motion", "ghosting"),
        "X-ray": ("exposure", "scatter"), "fundus": ("uneven_illumination", "color_distortion"),
        "histopathology": ("stain_variation", "focus_blur"),
        "endoscopy": ("specular_reflection", "motion_blur"), "ultrasound": ("speckle", "shadowing")}
QTYPES = ("Yes-or-No", "What", "How")
LANE_COST = {"expert": 1.0, "verify": 0.3, "auto": 0.0}
T0 = datetime(2026, 1, 1)


def _sql_list(values) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def build_catalog(root: Path, *, pool: int, rounds: int, eval_mcq: int, eval_desc: int,
                  candidates: int, log=print) -> dict:
    """Create a workspace at `root` and fill its catalog in bulk. Returns sizes and timings."""
    from medq.settings import load_settings
    from medq.storage.workspace import Workspace
    t0 = time.perf_counter()
    ws = Workspace.init(load_settings(workspace=root))
    db = str(ws.settings.catalog_path)
    mods, qts = _sql_list(MODALITIES), _sql_list(QTYPES)
    deg_a = _sql_list(DEGS[m][0] for m in MODALITIES)
    deg_b = _sql_list(DEGS[m][1] for m in MODALITIES)
    con = duckdb.connect(db)
    # u(x): deterministic uniform in [0, 1) from a string
    con.execute("CREATE TEMP MACRO u(x) AS (hash(x) % 1000003) / 1000003.0")
    log(f"pool: {pool:,} images and items ...")
    con.execute(f"""
        INSERT INTO images (image_id, modality, source_format, manifest_row, width, height, channels)
        SELECT 'img-' || i, {mods}[1 + i % 7], 'manifest', i, 256, 256, 1 FROM range({pool}) t(i)""")
    con.execute(f"""
        INSERT INTO items (item_id, split, kind, image_id, modality, degradations, level, source)
        SELECT 'pool-' || i, 'pool', 'image', 'img-' || i, {mods}[1 + i % 7],
               CASE WHEN i % 3 = 0 THEN '[]' ELSE '[{{"type": "' ||
                 (CASE WHEN i % 2 = 0 THEN {deg_a} ELSE {deg_b} END)[1 + i % 7] ||
                 '", "level": ' || (i % 3) || '}}]' END, i % 3, 'manifest'
        FROM range({pool}) t(i)""")
    log(f"eval set: {eval_mcq} MCQ + {eval_desc} description items ...")
    n_eval = eval_mcq + eval_desc
    con.execute(f"""
        INSERT INTO images (image_id, modality, source_format, width, height, channels)
        SELECT 'eimg-' || i, {mods}[1 + i % 7], 'png', 256, 256, 1 FROM range({n_eval}) t(i)""")
    con.execute(f"""
        INSERT INTO items (item_id, split, kind, image_id, question, options, answer,
                           question_type, modality, verdict, degradations, level, source)
        SELECT 'e-' || i, 'eval', CASE WHEN i < {eval_mcq} THEN 'mcq' ELSE 'description' END,
               'eimg-' || i, CASE WHEN i < {eval_mcq} THEN 'Is the image degraded?' END,
               CASE WHEN i < {eval_mcq} THEN '{{"A": "yes", "B": "no"}}' END,
               CASE WHEN i < {eval_mcq} THEN 'A' END,
               CASE WHEN i < {eval_mcq} THEN {qts}[1 + (i // 7) % 3] END, {mods}[1 + i % 7],
               ['good', 'usable', 'reject'][1 + (i // 3) % 3],
               CASE WHEN (i // 3) % 3 = 0 THEN '[]' ELSE '[{{"type": "' ||
                 (CASE WHEN (i // 21) % 2 = 0 THEN {deg_a} ELSE {deg_b} END)[1 + i % 7] ||
                 '", "level": ' || ((i // 3) % 3) || '}}]' END,
               (i // 3) % 3, 'world'
        FROM range({n_eval}) t(i)""")

    # models: m-start, then one candidate per round; every 7th round's candidate regresses
    models: list[tuple[str, float, str | None]] = [("m-start", 0.0, None)]
    champion, skill = "m-start", 0.0
    plan: list[dict[str, Any]] = []
    for k in range(1, rounds + 1):
        cand_skill = skill + 1.0 if k % 7 != 3 else skill - 2.0
        promoted = cand_skill > skill
        plan.append({"k": k, "round_id": f"r{k:03d}", "model_in": champion,
                     "model_out": f"m-r{k:03d}", "promoted": promoted})
        models.append((f"m-r{k:03d}", cand_skill, f"r{k:03d}"))
        if promoted:
            champion, skill = f"m-r{k:03d}", cand_skill
    con.execute("CREATE TEMP TABLE models (version VARCHAR, skill DOUBLE, round_id VARCHAR, "
                "created_at TIMESTAMP)")
    con.executemany("INSERT INTO models VALUES (?, ?, ?, ?)",
                    [(v, s, r, T0 + timedelta(hours=i)) for i, (v, s, r) in enumerate(models)])
    log(f"predictions: {len(models)} models x {n_eval} items ...")
    con.execute("""
        INSERT INTO predictions (eval_id, item_id, kind, predicted, correct, entropy, score)
        WITH x AS (
          SELECT m.version, i.item_id, i.kind,
                 u(i.item_id) < least(0.95, 0.45 + 0.009 * m.skill - 0.05 * i.level
                                            + 0.03 * (hash(i.modality) % 3)) AS ok,
                 u(i.item_id || m.version) AS r
          FROM items i, models m WHERE i.split = 'eval')
        SELECT 'eval-' || version, item_id, kind, CASE WHEN ok THEN 'A' ELSE 'B' END, ok,
               CASE WHEN kind = 'mcq' THEN r END,
               CASE WHEN kind = 'mcq' THEN ok::INT::DOUBLE
                    ELSE least(8.0, (CASE WHEN ok THEN 5.5 ELSE 3.5 END) + 2 * r) END
        FROM x""")
    log("eval runs (metrics aggregated in SQL) ...")
    agg: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for dim, expr in (("per_modality", "i.modality"), ("per_type", "i.question_type"),
                      ("per_level", "['none', 'mild', 'severe'][1 + i.level]")):
        for eval_id, group, n, correct in con.execute(f"""
                SELECT p.eval_id, {expr}, count(*), sum(p.correct::INT) FROM predictions p
                JOIN items i USING (item_id) WHERE p.kind = 'mcq' GROUP BY ALL""").fetchall():
            agg.setdefault(eval_id, {}).setdefault(dim, {})[group] = {
                "n": n, "correct": int(correct), "accuracy": correct / n}
    overall = {e: (n, c) for e, n, c in con.execute(
        "SELECT eval_id, count(*), sum(correct::INT) FROM predictions WHERE kind = 'mcq' "
        "GROUP BY ALL").fetchall()}
    desc: dict[str, dict[str, Any]] = {}
    for eval_id, modality, n, mean in con.execute("""
            SELECT p.eval_id, i.modality, count(*), avg(p.score) FROM predictions p
            JOIN items i USING (item_id) WHERE p.kind = 'description' GROUP BY ALL""").fetchall():
        desc.setdefault(eval_id, {})[modality] = {"n": n, "overall": mean}
    runs = []
    for version, _skill, round_id in models:
        e = f"eval-{version}"
        n, c = overall[e]
        d_all = desc[e]
        d_overall = sum(v["overall"] * v["n"] for v in d_all.values()) / sum(v["n"] for v in d_all.values())
        metrics = {"accuracy": c / n, "judge": "rules", "n_items": n_eval,
                   "mcq": {"n": n, "correct": c, "accuracy": c / n, **agg[e]},
                   "description": {"n": eval_desc, "overall": d_overall, "per_modality": d_all},
                   "paired": None}
        runs.append((e, version, round_id, json.dumps(metrics)))
    con.executemany("INSERT INTO eval_runs (eval_id, model_version, round_id, split, judge, "
                    "metrics, created_at) SELECT ?, ?, ?, 'eval', 'rules', ?, created_at "
                    "FROM models WHERE version = ?", [(*r, r[1]) for r in runs])
    con.executemany("INSERT INTO model_versions (version, backend, promoted, metrics) "
                    "VALUES (?, 'lite', ?, ?)",
                    [(v, v == "m-start" or any(p["model_out"] == v and p["promoted"] for p in plan),
                      json.dumps({"accuracy": overall[f"eval-{v}"][1] / overall[f"eval-{v}"][0]}))
                     for v, _, _ in models])

    log(f"{rounds} rounds: failures, prototypes, candidates, routes, tasks, annotations ...")
    con.execute("CREATE TEMP TABLE plan (k INTEGER, round_id VARCHAR, model_in VARCHAR, "
                "model_out VARCHAR, promoted BOOLEAN)")
    con.executemany("INSERT INTO plan VALUES (?, ?, ?, ?, ?)",
                    [(p["k"], p["round_id"], p["model_in"], p["model_out"], p["promoted"])
                     for p in plan])
    con.execute("""
        INSERT INTO failures (round_id, item_id, kind, severity, prototype_id)
        SELECT pl.round_id, p.item_id,
               CASE WHEN p.kind = 'mcq' THEN 'wrong_mcq' ELSE 'low_description' END, 1.0,
               CASE WHEN u(p.item_id || pl.round_id) < 0.08 THEN NULL  -- HDBSCAN noise
                    ELSE pl.round_id || '-p' || lpad((hash(i.modality || i.level) % 21)::VARCHAR,
                                                     2, '0') END
        FROM plan pl JOIN predictions p ON p.eval_id = 'eval-' || pl.model_in
        JOIN items i USING (item_id) WHERE NOT p.correct""")
    con.execute("""
        INSERT INTO prototypes (prototype_id, round_id, medoid_item_id, medoid_image_id, members,
                                n_members, error_mass, radius, modality, degradation,
                                question_type, summary, is_noise)
        WITH f AS (SELECT f.*, i.image_id, i.modality, i.question_type,
                          coalesce(json_extract_string(i.degradations, '$[0].type'), 'none') AS deg
                   FROM failures f JOIN items i USING (item_id) WHERE f.prototype_id IS NOT NULL)
        SELECT prototype_id, any_value(round_id), min(item_id), arg_min(image_id, item_id),
               to_json(list(item_id ORDER BY item_id))::VARCHAR, count(*), sum(severity), 0.3,
               mode(modality), mode(deg), mode(question_type),
               mode(modality) || ' images with ' || replace(mode(deg), '_', ' ') ||
                 ': the model misses ' || count(*) || ' items', FALSE
        FROM f GROUP BY prototype_id""")
    con.execute(f"""
        INSERT INTO candidates (round_id, image_id, prototype_id, anchor, distance, rank, entropy,
                                predicted)
        SELECT pl.round_id, 'img-' || ((pl.k - 1) * {candidates} + c.i) % {pool},
               pl.round_id || '-p' || lpad((c.i % 21)::VARCHAR, 2, '0'), 0, u(c.i || pl.round_id),
               c.i, u(pl.round_id || c.i), 'usable'
        FROM plan pl, range({candidates}) c(i)""")
    con.execute("""
        INSERT INTO routes (round_id, image_id, lane, entropy, cost, spot_check, reason)
        SELECT round_id, image_id,
               CASE WHEN entropy >= 0.6 THEN 'expert' WHEN entropy < 0.25 THEN 'auto'
                    ELSE 'verify' END AS lane, entropy,
               CASE WHEN entropy >= 0.6 THEN 1.0 WHEN entropy < 0.25 THEN 0.0 ELSE 0.3 END,
               entropy < 0.25 AND u(image_id) < 0.1, 'entropy'
        FROM candidates""")
    last = f"r{rounds:03d}"
    con.execute(f"""
        INSERT INTO annotation_tasks (task_id, round_id, image_id, lane, backend, external_id,
                                      status, uncertainty, created_at, updated_at)
        SELECT round_id || ':' || image_id || ':' || lane, round_id, image_id, lane,
               'labelstudio', (row_number() OVER ())::VARCHAR,
               CASE WHEN round_id = '{last}' THEN ['queued', 'sent', 'done'][1 + (hash(image_id) % 3)::BIGINT]
                    WHEN u(image_id || 'f') < 0.02 THEN 'failed' ELSE 'done' END,
               entropy, TIMESTAMP '2026-01-01' + INTERVAL 1 HOUR * CAST(substr(round_id, 2) AS INT),
               TIMESTAMP '2026-01-01' + INTERVAL 1 HOUR * CAST(substr(round_id, 2) AS INT)
        FROM routes WHERE lane <> 'auto' OR spot_check""")
    con.execute("""
        INSERT INTO annotations (annotation_id, task_id, round_id, image_id, annotator, lane,
                                 verdict, accepted_prediction)
        SELECT 'ls:' || task_id, task_id, round_id, image_id, 'annotator-' || hash(task_id) % 5,
               lane, 'usable', lane = 'verify'
        FROM annotation_tasks WHERE status = 'done'""")
    # round reports: aggregated per round, the keys the loop promises
    lane_rows = con.execute("SELECT round_id, lane, sum(cost), count(*) FROM routes "
                            "GROUP BY ALL").fetchall()
    per_round = {r[0]: {"n_failures": r[1]} for r in con.execute(
        "SELECT round_id, count(*) FROM failures GROUP BY ALL").fetchall()}
    for rid, n in con.execute("SELECT round_id, count(*) FROM prototypes GROUP BY ALL").fetchall():
        per_round[rid]["n_prototypes"] = n
    for rid, n in con.execute("SELECT round_id, count(*) FROM annotations GROUP BY ALL").fetchall():
        per_round[rid]["annotations"] = n
    con.close()
    acc = {f"eval-{v}": overall[f"eval-{v}"][1] / overall[f"eval-{v}"][0] for v, _, _ in models}
    dsc = {r[0]: json.loads(r[3])["description"]["overall"] for r in runs}
    rows = []
    n_train = 0
    for p in plan:
        rid = p["round_id"]
        spend_by = {ln: 0.0 for ln in LANE_COST}
        items_by = {ln: 0 for ln in LANE_COST}
        for r, ln, cost, n in lane_rows:
            if r == rid:
                spend_by[ln], items_by[ln] = float(cost), int(n)
        spend = sum(spend_by.values())
        info = per_round.get(rid, {})
        n_train += info.get("annotations", 0) + items_by["auto"]
        a_in, a_out = acc[f"eval-{p['model_in']}"], acc[f"eval-{p['model_out']}"]
        report = {"round_id": rid, "round_index": p["k"], "model_in": p["model_in"],
                  "model_out": p["model_out"], "promoted": p["promoted"],
                  "promotion_reason": f"accuracy {a_out:.3f} vs {a_in:.3f}",
                  "accuracy_in": a_in, "accuracy_out": a_out,
                  "description_in": dsc[f"eval-{p['model_in']}"],
                  "description_out": dsc[f"eval-{p['model_out']}"], "spend": spend,
                  "spend_by_lane": spend_by, "items_by_lane": items_by,
                  "n_failures": info.get("n_failures", 0),
                  "n_prototypes": info.get("n_prototypes", 0), "n_candidates": candidates,
                  "failure_yield": max(0.05, 0.62 - 0.006 * p["k"]),
                  "pool_base_rate": max(0.03, 0.35 - 0.005 * p["k"]),
                  "annotations": info.get("annotations", 0), "dataset_id": f"ds-{rid}",
                  "n_train": n_train, "quarantined": 0, "auto_threshold": 0.25}
        rows.append({"round_id": rid, "round_index": p["k"], "status": "done",
                     "model_in": p["model_in"], "model_out": p["model_out"],
                     "promoted": p["promoted"], "spend": spend, "report": report,
                     "started_at": T0 + timedelta(hours=p["k"]),
                     "finished_at": T0 + timedelta(hours=p["k"], minutes=50)})
    ws.catalog.upsert("rounds", rows)  # 50 rows: through the catalog like the loop does
    sizes = ws.catalog.tables()
    return {"workspace": str(root), "catalog": db, "build_s": round(time.perf_counter() - t0, 1),
            "catalog_mb": round(os.path.getsize(db) / 2**20, 1), "rows": sizes}
