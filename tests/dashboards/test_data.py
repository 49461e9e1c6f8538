"""Dashboard data access: every number checked against the catalog with independent SQL/Python,
lock handling while another process writes, and the pure helpers on hand-made inputs."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import pytest

from medq.dashboards import charts
from medq.storage import dashboard_queries as data
from medq.storage.catalog import loads


@pytest.fixture(scope="module")
def db(dashboard_workspace) -> str:
    return str(dashboard_workspace.settings.catalog_path)


@pytest.fixture(scope="module")
def cat(dashboard_workspace):
    return dashboard_workspace.catalog


def test_headline_matches_catalog(db, cat):
    h = data.headline(db)
    done = cat.query("SELECT * FROM rounds WHERE status = 'done' ORDER BY round_index")
    last = loads(done[-1]["report"])
    assert h["rounds_done"] == len(done) == 4
    assert h["rounds_running"] == 1 and h["latest_round"] == "r005"
    assert h["promoted"] == sum(bool(r["promoted"]) for r in done) == 3
    assert h["total_spend"] == pytest.approx(sum(r["spend"] for r in done))
    assert h["champion_accuracy"] == (last["accuracy_out"] if last["promoted"] else last["accuracy_in"])
    assert h["champion_model"] == "m-r004"
    assert h["start_accuracy"] == loads(done[0]["report"])["accuracy_in"]
    assert h["annotations"] == cat.scalar("SELECT count(*) FROM annotations")
    assert h["pool_size"] == cat.scalar("SELECT count(*) FROM items WHERE split = 'pool'")


def test_rounds_champion_and_decisions(db):
    r = data.rounds(db)
    assert list(r["round_id"]) == ["r001", "r002", "r003", "r004", "r005"]
    assert list(r["decision"]) == ["promoted", "promoted", "rejected", "promoted", "running"]
    rej = r.iloc[2]  # the rejected round keeps the incoming champion's score
    assert rej["champion_accuracy"] == rej["accuracy_in"] > rej["accuracy_out"]
    assert rej["spend_expert"] + rej["spend_verify"] + rej["spend_auto"] == pytest.approx(rej["spend"])
    assert r["cumulative_spend"].iloc[-1] == pytest.approx(r["spend"].sum())


def test_timeline_follows_promotions(db):
    tl = data.champion_timeline(db)
    assert list(tl["position"]) == [0, 1, 2, 3, 4]
    assert list(tl["model_version"]) == ["m-start", "m-r001", "m-r002", "m-r002", "m-r004"]
    assert tl["eval_id"].notna().all()


def test_breakdown_matches_metrics_and_predictions(db, cat):
    b = data.breakdown(db)
    tl = data.champion_timeline(db)
    latest = tl.iloc[-1]
    metrics = loads(cat.scalar("SELECT metrics FROM eval_runs WHERE eval_id = ?", [latest["eval_id"]]))
    mod = b[(b["position"] == 4) & (b["dimension"] == "modality")].set_index("group")
    for m, g in metrics["mcq"]["per_modality"].items():
        assert mod.loc[m, "accuracy"] == pytest.approx(g["accuracy"])
    assert set(b["dimension"]) == {"modality", "question type", "level", "degradation"}
    # degradation groups recomputed here from the raw rows
    rows = cat.query("SELECT p.correct, i.degradations FROM predictions p JOIN items i "
                     "USING (item_id) WHERE p.eval_id = ? AND p.kind = 'mcq'", [latest["eval_id"]])
    expect: dict[str, list[bool]] = {}
    for r in rows:
        types = {d["type"] for d in loads(r["degradations"]) or []} or {"none"}
        for t in types:
            expect.setdefault(t, []).append(bool(r["correct"]))
    deg = b[(b["position"] == 4) & (b["dimension"] == "degradation")].set_index("group")
    assert set(deg.index) == set(expect)
    for t, vals in expect.items():
        assert deg.loc[t, "accuracy"] == pytest.approx(sum(vals) / len(vals))
        assert deg.loc[t, "n"] == len(vals)
    desc = data.description_breakdown(db)
    assert desc["overall"].between(0, 8).all() and set(desc["position"]) == {0, 1, 2, 3, 4}


def test_lift_attribution_against_raw_predictions(db, cat):
    lift = data.prototype_lift(db)
    summary = data.lift_summary(lift).set_index("prototype_id")
    tl = data.champion_timeline(db).set_index("position")
    for pid in ("r001-p00", "r002-p01"):
        members = [r["item_id"] for r in cat.query(
            "SELECT item_id FROM failures WHERE prototype_id = ?", [pid])]
        found = int(pid[1:4])

        def err(position, members=members):
            rows = cat.query("SELECT correct FROM predictions WHERE eval_id = ? AND item_id IN "
                             "(SELECT unnest(?::VARCHAR[]))", [tl.loc[position, "eval_id"], members])
            return 1 - sum(bool(r["correct"]) for r in rows) / len(rows)

        s = summary.loc[pid]
        assert s["before"] == pytest.approx(err(found - 1)) == pytest.approx(1.0)  # all failed
        assert s["after_round"] == pytest.approx(err(found))
        assert s["latest"] == pytest.approx(err(4))
        assert s["lift"] == pytest.approx(s["before"] - s["latest"])
    # the fine-tune of r001 targeted its two heaviest clusters: both improved
    r1 = summary[summary["found_in"] == "r001"].sort_values("error_mass", ascending=False)
    assert (r1["after_round"].iloc[:2] < r1["before"].iloc[:2]).all()
    only = data.prototype_lift(db, ["r002"])
    assert set(only["found_in"]) == {"r002"}


def test_gallery_members_unique_images_without_medoid(db, cat):
    protos = data.prototype_gallery(db, "r001", limit=3, members=3)
    assert len(protos) == 3
    masses = [p["error_mass"] for p in protos]
    assert masses == sorted(masses, reverse=True)
    for p in protos:
        imgs = [m["image_id"] for m in p["members"]]
        assert len(imgs) == len(set(imgs)) <= 3 and p["medoid_image_id"] not in imgs
        in_proto = set(loads(cat.scalar("SELECT members FROM prototypes WHERE prototype_id = ?",
                                        [p["prototype_id"]])))
        assert {m["item_id"] for m in p["members"]} <= in_proto
    assert data.prototype_gallery(db, "r999") == []


def test_queue_status_counts(db, cat):
    q = data.queue_status(db)
    total = q["totals"]
    assert total["n"].sum() == cat.scalar("SELECT count(*) FROM annotation_tasks")
    by = {(r.lane, r.status): r.n for r in total.itertuples()}
    assert by[("expert", "queued")] == cat.scalar(
        "SELECT count(*) FROM annotation_tasks WHERE lane = 'expert' AND status = 'queued'")
    assert q["oldest_open"] is not None
    assert set(q["by_round"]["round_id"]) <= {"r001", "r002", "r003", "r004", "r005"}
    assert set(data.queue_status(db, last_rounds=1)["by_round"]["round_id"]) == {"r005"}


def test_cost_per_point():
    rounds = pd.DataFrame({"status": ["done", "done", "running"], "spend": [10.0, 30.0, None],
                           "accuracy_in": [0.50, 0.55, None],
                           "champion_accuracy": [0.55, 0.60, None]})
    assert data.cost_per_point(rounds) == {"spend": 40.0, "gain_points": pytest.approx(10.0),
                                           "per_point": pytest.approx(4.0)}
    flat = rounds.assign(champion_accuracy=[0.5, 0.5, None])
    assert data.cost_per_point(flat)["per_point"] is None


def test_sample_efficiency(tmp_path):
    assert data.sample_efficiency(tmp_path / "missing.json") is None
    curves = {"random": [{"annotations": n, "accuracy": a, "seed": s} for s in (0, 1)
                         for n, a in ((500, 0.50), (1000, 0.55), (2000, 0.60))],
              "medq": [{"annotations": n, "accuracy": a, "seed": 0}
                       for n, a in ((250, 0.52), (500, 0.62), (1000, 0.70))]}
    path = tmp_path / "se.json"
    path.write_text(json.dumps({"curves": curves}))
    df = data.sample_efficiency(path)
    assert len(df) == 9 and set(df["strategy"]) == {"random", "medq"}
    # random reaches 0.60 with 2000; medq crosses 0.60 at 250 + (0.08/0.10) * 250 = 450
    assert data.sample_efficiency_ratio(df) == {"medq": pytest.approx(2000 / 450)}
    charts.efficiency_chart(df).to_dict()  # a valid Vega-Lite spec
    path.write_text(json.dumps({"curves": {"random": [{"accuracy": 0.5}]}}))
    with pytest.raises(data.DashboardDataError, match="se.json"):
        data.sample_efficiency(path)


def test_missing_catalog_is_a_clear_error(tmp_path):
    with pytest.raises(data.DashboardDataError, match="no catalog"):
        data.headline(tmp_path / "nope.duckdb")


_HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("BEGIN TRANSACTION")
con.execute("UPDATE rounds SET stop_reason = stop_reason WHERE round_id = 'r001'")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("COMMIT")
con.close()
"""


def _hold_write_lock(path: str, seconds: float) -> subprocess.Popen:
    """Another process (like the loop) holding the catalog open for writing."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, path, str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_reads_wait_for_a_brief_write_lock(dashboard_workspace, tmp_path):
    import shutil
    path = str(tmp_path / "copy.duckdb")  # never lock the shared fixture catalog
    shutil.copy(dashboard_workspace.settings.catalog_path, path)
    proc = _hold_write_lock(path, 0.8)
    try:
        t0 = time.monotonic()
        assert data.headline(path)["rounds_done"] == 4
        assert time.monotonic() - t0 >= 0.2  # it really waited for the writer
    finally:
        proc.wait(timeout=30)
    proc = _hold_write_lock(path, 30)
    try:
        with pytest.raises(data.CatalogBusyError, match="locked"), \
                data.read_connection(path, retry_s=0.5):
            pass
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_every_chart_is_valid_vega_lite(db):
    rounds = data.rounds(db)
    b = data.breakdown(db)
    lift = data.prototype_lift(db)
    summary = data.lift_summary(lift).assign(status="open")
    q = data.queue_status(db)
    built = [charts.progress_chart(rounds, "accuracy"), charts.progress_chart(rounds, "description"),
             charts.breakdown_lines(b, "modality", 1), charts.lift_heatmap(lift, 1),
             charts.lift_status_bars(summary), charts.lane_bars(rounds, "spend"),
             charts.lane_bars(rounds, "items"), charts.spend_vs_accuracy(rounds),
             charts.yield_chart(rounds), charts.queue_bars(q["totals"]),
             charts.queue_round_bars(q["by_round"]),
             charts.description_lines(data.description_breakdown(db), 1)]
    built += [charts.breakdown_bars(b, d, 0, 4) for d in ("modality", "question type", "level",
                                                           "degradation")]
    for chart in built:
        spec = chart.to_dict()  # validates against the Vega-Lite schema
        assert spec.get("layer") or spec.get("mark")
    # consistent colours: a modality has the same colour in every chart that shows modalities
    from medq.dashboards import palette
    spec = charts.breakdown_lines(b, "modality", 1).to_dict()
    scale = spec["encoding"]["color"]["scale"]
    assert dict(zip(scale["domain"], scale["range"]))["MRI"] == palette.MODALITY["MRI"]
