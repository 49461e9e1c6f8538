"""Label Studio lanes against a real server (session fixture `labelstudio_server`)."""
from __future__ import annotations

import io
import json
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from medq.settings import load_settings
from medq.storage.annotation.base import AnnotationRequest
from medq.storage.annotation.ls_simulated import SimulatedTeam, ensure_user
from medq.storage.labelstudio import (
    CURSOR_MARGIN,
    UNCERTAIN_VIEW,
    LabelStudioAuthError,
    LabelStudioBackend,
    LabelStudioError,
    pull_into_catalog,
    wait_for_batch,
)
from medq.storage.labelstudio.client import LabelStudioClient
from medq.storage.labelstudio.label_configs import labels_to_result
from medq.storage.objects import content_key
from medq.storage.workspace import Workspace

pytestmark = pytest.mark.services

VERDICT = ["good", "usable", "reject"]


def _png(rng: np.random.Generator) -> bytes:
    yy, xx = np.mgrid[0:96, 0:96]
    img = (xx + yy) / 190.0 + rng.normal(0, 0.05, (96, 96))
    buf = io.BytesIO()
    Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def ls(labelstudio_server, tmp_path_factory):
    """A workspace with 12 images and ground truth, wired to the session's server."""
    root = tmp_path_factory.mktemp("ls-ws")
    settings = load_settings(workspace=root / "ws",
                             labelstudio=labelstudio_server.settings_overrides(f"T{root.name}"))
    ws = Workspace.init(settings)
    rng = np.random.default_rng(0)
    rows, truth = [], {}
    for i in range(12):
        data = _png(rng)
        key = ws.objects.put_bytes(content_key(data), data)
        iid = f"img{i:02d}"
        rows.append({"image_id": iid, "object_key": key, "modality": "CT"})
        v = VERDICT[i % 3]
        truth[iid] = {"verdict": v, "degradations": [] if v == "good" else
                      [{"type": "low_dose", "level": i % 3}],
                      "description": f"Noise. Overall, the quality of this image is {v}."}
    ws.catalog.upsert("images", rows)
    backend = LabelStudioBackend(ws)

    def requests(round_id, images, lane, uncertainties=None):
        out = []
        for j, iid in enumerate(images):
            u = uncertainties[j] if uncertainties else 0.1 + 0.05 * j
            pred = ({"verdict": truth[iid]["verdict"] if j % 2 == 0 else "good", "score": 0.8,
                     "model_version": "lite-r0"} if lane == "verify" else None)
            out.append(AnnotationRequest(task_id=f"{round_id}:{iid}", round_id=round_id,
                                         image_id=iid, lane=lane, uncertainty=u,
                                         modality="CT", prediction=pred))
        return out

    yield SimpleNamespace(server=labelstudio_server, ws=ws, backend=backend, truth=truth,
                          requests=requests)
    backend.close()


def _ls_tasks(backend, kind):
    pid = backend.ensure_project(kind)
    return list(backend.client.list_tasks("test", pid, include="id,data", fields="task_only"))


def test_project_creation_is_idempotent(ls):
    b = ls.backend
    first = {k: b.ensure_project(k) for k in ("expert", "verify", "paired")}
    fresh = LabelStudioBackend(ls.ws)  # no cached ids: must find the projects by title
    again = {k: fresh.ensure_project(k) for k in ("expert", "verify", "paired")}
    assert first == again and len(set(first.values())) == 3
    sdk = b.client.sdk
    for kind, pid in first.items():
        project = sdk.projects.get(pid)
        same_title = [p for p in sdk.projects.list(title=project.title) if p.title == project.title]
        assert len(same_title) == 1
        views = [v.data.get("title") for v in sdk.views.list(project=pid)]
        assert views.count(UNCERTAIN_VIEW) == 1
        assert ('name="better"' if kind == "paired" else 'name="verdict"') in project.label_config
    assert sdk.projects.get(first["verify"]).show_collab_predictions is True
    assert sdk.projects.get(first["expert"]).show_collab_predictions is False
    fresh.close()


def test_other_workspace_cannot_take_over_projects(ls, tmp_path):
    other = Workspace.init(load_settings(workspace=tmp_path / "other",
                                         labelstudio={**ls.server.settings_overrides(
                                             ls.ws.settings.labelstudio.project_title)}))
    with pytest.raises(LabelStudioError, match="belongs to workspace"):
        LabelStudioBackend(other).ensure_project("expert")


def test_tasks_arrive_with_predictions_uncertainty_and_order(ls):
    b = ls.backend
    imgs = sorted(ls.truth)
    low = ls.requests("r1", imgs[:4], "verify", [0.10, 0.30, 0.20, 0.40])
    ids = b.submit(low)
    assert set(ids) == {r.task_id for r in low}
    high = ls.requests("r1b", imgs[4:6], "verify", [0.95, 0.55])
    ids.update(b.submit(high))
    # Resubmitting changes nothing, also when the catalog forgot the external ids (crash window).
    assert b.submit(low + high) == ids
    ls.ws.catalog.execute("UPDATE annotation_tasks SET external_id = NULL WHERE round_id = 'r1'")
    assert b.submit(low) == {t: ids[t] for t in (r.task_id for r in low)}
    tasks = [t for t in _ls_tasks(b, "verify") if t["data"]["round"] in ("r1", "r1b")]
    assert len(tasks) == 6
    sdk = b.client.sdk
    task = sdk.tasks.get(ids["r1:" + imgs[3]])
    assert task.data["uncertainty"] == pytest.approx(0.40)
    assert task.data["image"].startswith("/data/local-files/?d=")
    pred = task.predictions[0]
    assert pred.model_version == "lite-r0" and pred.score == pytest.approx(0.8)
    assert {r["from_name"] for r in pred.result} == {"verdict"}
    # The image is served to the browser by Label Studio itself.
    resp = b.client.http.get(task.data["image"])
    assert resp.status_code == 200 and resp.content[:4] == b"\x89PNG"
    # "Most uncertain first" view: descending uncertainty across both imports.
    pid = b.ensure_project("verify")
    view = next(v for v in sdk.views.list(project=pid) if v.data.get("title") == UNCERTAIN_VIEW)
    page = b.client.get_json("list", "/api/tasks", {"view": view.id, "project": pid,
                                                    "page_size": 100, "include": "id,data"})
    order = [t["data"]["uncertainty"] for t in page["tasks"]
             if t["data"]["round"] in ("r1", "r1b")]
    assert order == sorted(order, reverse=True) and order[0] == pytest.approx(0.95)


def test_simulated_annotators_pull_edit_delete_quarantine(ls):
    b, ws = ls.backend, ls.ws
    imgs = sorted(ls.truth)
    reqs = ls.requests("r2", imgs[:4], "expert") + ls.requests("r2", imgs[4:8], "verify")
    ids = b.submit(reqs)
    task_ids = list(ids)
    assert b.status(task_ids).pending == 8
    waited = wait_for_batch(b, task_ids, timeout_s=0.5, poll_interval_s=0.2)
    assert waited.state == "timeout" and "8 pending" in waited.message

    team = SimulatedTeam.create(b.client, n=2, error_rate=0.0, truth=ls.truth)
    made = team.run([b.ensure_project("expert"), b.ensure_project("verify")])
    team.stop()
    assert made >= 8
    done = wait_for_batch(b, task_ids, timeout_s=30, poll_interval_s=0.5, workspace=ws)
    assert done.state == "done" and done.status.done == 8

    first = pull_into_catalog(ws, b, task_ids)
    ls_count = sum(len(b.client.sdk.annotations.list(int(ids[t]))) for t in task_ids)
    rows = ws.catalog.query("SELECT * FROM annotations WHERE round_id = 'r2'")
    assert len(rows) == ls_count == first["annotations"]  # exactly one row per annotation
    assert {r["annotator"] for r in rows} <= {"medq-annotator-0@medq.local",
                                               "medq-annotator-1@medq.local"}
    for r in rows:  # error_rate 0: the annotators give the truth
        assert r["verdict"] == ls.truth[r["image_id"]]["verdict"]
        assert json.loads(r["degradations"]) == ls.truth[r["image_id"]]["degradations"]
    verify = {r["image_id"]: r["accepted_prediction"] for r in rows if r["lane"] == "verify"}
    assert verify == {iid: j % 2 == 0 or ls.truth[iid]["verdict"] == "good"
                      for j, iid in enumerate(imgs[4:8])}

    before = ws.catalog.query_df("SELECT * FROM annotations ORDER BY annotation_id")
    second = pull_into_catalog(ws, b, task_ids)
    assert second["inserted"] == second["updated"] == 0 and second["unchanged"] == ls_count
    assert ws.catalog.query_df("SELECT * FROM annotations ORDER BY annotation_id").equals(before)

    # An annotator edits an annotation in Label Studio: the row updates, history keeps the old one.
    target = rows[0]
    ann_id = int(target["annotation_id"].split(":")[1])
    new_verdict = "reject" if target["verdict"] != "reject" else "good"
    time.sleep(1.0)
    b.client.sdk.annotations.update(ann_id, result=labels_to_result(
        {"verdict": new_verdict, "degradations": [], "description": "Edited."}))
    third = pull_into_catalog(ws, b, task_ids)
    assert third["updated"] == 1 and third["inserted"] == 0
    row = ws.catalog.query("SELECT verdict, version, description FROM annotations WHERE "
                           "annotation_id = ?", [target["annotation_id"]])[0]
    assert row == {"verdict": new_verdict, "version": 2, "description": "Edited."}
    hist = ws.catalog.query("SELECT version, payload FROM annotation_history WHERE "
                            "annotation_id = ?", [target["annotation_id"]])
    assert len(hist) == 1 and json.loads(hist[0]["payload"])["verdict"] == target["verdict"]

    # An annotation with a degradation but no level, and one without verdict: quarantined.
    bad_task = int(ids[f"r2:{imgs[0]}"])
    no_level = [r for r in labels_to_result({"verdict": "usable", "degradations": [
        {"type": "motion", "level": 1}]}) if r["from_name"] != "level_motion"]
    a1 = b.client.sdk.annotations.create(bad_task, result=no_level)
    a2 = b.client.sdk.annotations.create(bad_task, result=labels_to_result({"description": "?"}))
    fourth = pull_into_catalog(ws, b, task_ids)
    assert fourth["quarantined"] == 2
    q = {r["ref"]: r["reason"] for r in ws.catalog.query(
        "SELECT ref, reason FROM quarantine WHERE stage = 'annotation'")}
    assert "'motion' has no level" in q[f"ls:{a1.id}"] and "missing verdict" in q[f"ls:{a2.id}"]
    assert ws.catalog.scalar("SELECT count(*) FROM annotations WHERE annotation_id IN (?, ?)",
                             [f"ls:{a1.id}", f"ls:{a2.id}"]) == 0
    # The annotator fixes the first and deletes the second: both leave the quarantine, the fixed
    # one is stored.
    time.sleep(1.0)
    b.client.sdk.annotations.update(a1.id, result=labels_to_result(
        {"verdict": "usable", "degradations": [{"type": "motion", "level": 1}]}))
    b.client.sdk.annotations.delete(a2.id)
    fixed = pull_into_catalog(ws, b, task_ids)
    assert fixed["resolved"] == 2 and fixed["inserted"] == 1 and fixed["quarantined"] == 0
    assert ws.catalog.scalar("SELECT count(*) FROM quarantine WHERE ref IN (?, ?)",
                             [f"ls:{a1.id}", f"ls:{a2.id}"]) == 0
    assert ws.catalog.scalar("SELECT verdict FROM annotations WHERE annotation_id = ?",
                             [f"ls:{a1.id}"]) == "usable"

    # A task deleted in Label Studio is detected and recorded; its annotations stay.
    gone = f"r2:{imgs[5]}"
    b.client.sdk.tasks.delete(ids[gone])
    fifth = pull_into_catalog(ws, b, task_ids)
    assert fifth["deleted_tasks"] == [gone]
    assert ws.catalog.scalar("SELECT status FROM annotation_tasks WHERE task_id = ?", [gone]) == "deleted"
    assert b.status(task_ids).deleted == 1
    assert ws.catalog.scalar("SELECT count(*) FROM annotations WHERE task_id = ?", [gone]) >= 1
    assert gone not in b.submit(reqs)  # not re-created behind the annotators' back


def test_server_down_is_a_clear_error_quickly(ls, tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = load_settings(workspace=tmp_path / "ws", labelstudio={
        "url": f"http://127.0.0.1:{port}", "retries": 2, "backoff_s": 0.05, "timeout_s": 2})
    ws = Workspace.init(settings)
    before = ws.catalog.tables()
    t0 = time.monotonic()
    with pytest.raises(LabelStudioError, match=f"127.0.0.1:{port} is not reachable.*3 tries"):
        LabelStudioBackend(ws).submit(ls.requests("r9", ["img00"], "expert"))
    assert time.monotonic() - t0 < 5
    assert ws.catalog.tables() == before  # nothing half-written


def test_wrong_token_is_a_clear_error(ls, tmp_path):
    settings = load_settings(workspace=tmp_path / "ws", labelstudio={
        **ls.server.settings_overrides("wrong"), "token": "not-a-valid-token"})
    ws = Workspace.init(settings)
    with pytest.raises(LabelStudioAuthError, match="refused the API token.*labelstudio.token"):
        LabelStudioBackend(ws).submit(ls.requests("r9", ["img00"], "expert"))
    assert ws.catalog.scalar("SELECT count(*) FROM annotation_tasks") == 0


@pytest.mark.slow
def test_a_person_can_open_the_task_page(ls, tmp_path):
    """Headless Chromium logs in as the admin and renders a verify task with the interface."""
    import importlib.util
    import shutil
    from pathlib import Path
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    path = Path(__file__).resolve().parents[2] / "scripts" / "ls_screenshot.py"
    spec = importlib.util.spec_from_file_location("ls_screenshot", path)
    shot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shot)
    b = ls.backend
    ids = b.submit(ls.requests("r7", sorted(ls.truth)[:1], "verify"))
    cookies = shot.login_cookies(ls.server.url, ls.server.admin, ls.server.password)
    out = tmp_path / "task.png"
    ready = shot.screenshot(ls.server.url, cookies,
                            f"/projects/{b.project_id('verify')}/data?task={next(iter(ids.values()))}",
                            out, width=1280, height=800)
    assert ready, "the labeling interface did not render"
    img = np.asarray(Image.open(out).convert("L"), dtype=np.float32)
    assert img.shape == (800, 1280) and img.std() > 10  # not a blank page


def test_paired_comparisons_are_stored(ls):
    """A person compares two images in the paired project: the catalog row says which one is
    better, names the second image, has no verdict; a comparison without a choice is quarantined."""
    b, ws = ls.backend, ls.ws
    imgs = sorted(ls.truth)
    reqs = [AnnotationRequest(task_id=f"rp:{imgs[i]}", round_id="rp", image_id=imgs[i],
                              lane="paired", uncertainty=0.5, modality="CT",
                              prediction={"image_b_id": imgs[i + 1]}) for i in (0, 2)]
    ids = b.submit(reqs)
    task_ids = list(ids)
    task = b.client.sdk.tasks.get(ids[f"rp:{imgs[0]}"])
    assert task.data["image_b_id"] == imgs[1] and task.data["image_b"].startswith("/data/")

    email = "medq-paired-reviewer@medq.local"
    person = LabelStudioClient(b.url, ensure_user(b.client, email))
    try:
        chosen = person.sdk.annotations.create(int(ids[f"rp:{imgs[0]}"]), result=labels_to_result(
            {"better": "B", "description": "B is sharper."}))
        undecided = person.sdk.annotations.create(int(ids[f"rp:{imgs[2]}"]),
                                                  result=labels_to_result({"description": "?"}))
    finally:
        person.close()
    first = pull_into_catalog(ws, b, task_ids)
    assert (first["inserted"], first["paired"], first["quarantined"]) == (1, 1, 1)
    row = ws.catalog.query("SELECT * FROM annotations WHERE annotation_id = ?",
                           [f"ls:{chosen.id}"])[0]
    assert (row["lane"], row["better"], row["image_b_id"], row["verdict"], row["annotator"],
            row["description"], row["image_id"]) == ("paired", "B", imgs[1], None, email,
                                                     "B is sharper.", imgs[0])
    q = {r["ref"]: r["reason"] for r in ws.catalog.query(
        "SELECT ref, reason FROM quarantine WHERE stage = 'annotation' AND round_id = 'rp'")}
    assert set(q) == {f"ls:{undecided.id}"}
    assert "missing comparison (better: A or B)" in q[f"ls:{undecided.id}"]
    assert f"task rp:{imgs[2]}" in q[f"ls:{undecided.id}"] and email in q[f"ls:{undecided.id}"]

    # Re-pulling (incrementally, then in full) is a no-op.
    before = ws.catalog.query_df("SELECT * FROM annotations ORDER BY annotation_id")
    hist = ws.catalog.scalar("SELECT count(*) FROM annotation_history")
    for full in (False, True):
        again = pull_into_catalog(ws, b, task_ids, full=full)
        assert (again["inserted"], again["updated"], again["removed"]) == (0, 0, 0)
        assert again["unchanged"] == 1 and again["paired"] == 1
    assert ws.catalog.query_df("SELECT * FROM annotations ORDER BY annotation_id").equals(before)
    assert ws.catalog.scalar("SELECT count(*) FROM annotation_history") == hist

    # A catalog row that does not name the second image: it is read from the Label Studio task.
    ws.catalog.execute("UPDATE annotation_tasks SET prediction = NULL WHERE round_id = 'rp'")
    fresh = LabelStudioBackend(ws)
    try:
        recs, refreshed = fresh.pull_refreshed(task_ids)
    finally:
        fresh.close()
    assert {r.annotation_id: r.image_b_id for r in recs} == {f"ls:{chosen.id}": imgs[1],
                                                             f"ls:{undecided.id}": imgs[3]}
    assert refreshed == {f"rp:{imgs[0]}": {f"ls:{chosen.id}"},
                         f"rp:{imgs[2]}": {f"ls:{undecided.id}"}}


def test_annotations_deleted_in_label_studio_leave_the_catalog(ls):
    b, ws = ls.backend, ls.ws
    imgs = sorted(ls.truth)
    reqs = ls.requests("rd", imgs[8:11], "expert")
    ids = b.submit(reqs)
    task_ids = list(ids)
    t1, t2, t3 = (int(ids[f"rd:{i}"]) for i in imgs[8:11])
    sdk = b.client.sdk

    def annotate(task, iid):
        return sdk.annotations.create(task, result=labels_to_result(ls.truth[iid]))

    def rows():
        return {r["annotation_id"] for r in ws.catalog.query(
            "SELECT annotation_id FROM annotations WHERE round_id = 'rd'")}

    def updated_at(task):
        value = b.client.get_json("read a task", f"/api/tasks/{task}")["updated_at"]
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    a1, a2, a3 = annotate(t1, imgs[8]), annotate(t1, imgs[8]), annotate(t2, imgs[9])
    assert pull_into_catalog(ws, b, task_ids)["inserted"] == 3
    # Move the pull cursor well past t1 and t2 (beyond its safety margin), so that an incremental
    # pull re-reads them only if their updated_at moves.
    time.sleep(CURSOR_MARGIN.total_seconds() + 1.0)
    a4 = annotate(t3, imgs[10])
    assert pull_into_catalog(ws, b, task_ids)["inserted"] == 1

    # Incremental pull. Observed with Label Studio 1.23.2: deleting an annotation moves the task's
    # updated_at, so the next incremental pull reads the task again and sees the deletion.
    before = updated_at(t1)
    sdk.annotations.delete(a1.id)
    assert updated_at(t1) > before
    inc = pull_into_catalog(ws, b, task_ids)
    assert inc["removed_annotations"] == [f"ls:{a1.id}"] and inc["removed"] == 1
    assert rows() == {f"ls:{a2.id}", f"ls:{a3.id}", f"ls:{a4.id}"}
    # A server that does not move updated_at on a deletion (older or other versions) is mimicked
    # by moving the pull cursor past it: the incremental pull then misses the deletion, and a
    # full pull catches it, also when it was the task's only annotation (the task is no longer in
    # the listing of annotated tasks, so it is read one by one).
    def status(iid):
        return ws.catalog.scalar("SELECT status FROM annotation_tasks WHERE task_id = ?",
                                 [f"rd:{iid}"])
    assert status(imgs[9]) == "done"
    sdk.annotations.delete(a3.id)
    saved = dict(b._cursor)
    b._cursor = {k: datetime.now(timezone.utc) + timedelta(hours=1) for k in saved}
    try:
        missed = pull_into_catalog(ws, b, task_ids)
    finally:
        b._cursor = saved
    assert missed["removed"] == 0 and f"ls:{a3.id}" in rows()
    full = pull_into_catalog(ws, b, task_ids, full=True)
    assert full["removed_annotations"] == [f"ls:{a3.id}"]
    assert rows() == {f"ls:{a2.id}", f"ls:{a4.id}"}
    # its task is waiting for an annotation again: back from done to sent
    assert status(imgs[9]) == "sent" and status(imgs[8]) == "done"
    assert full["inserted"] == full["updated"] == 0 and full["unchanged"] == 2
    for ann, iid in ((a1, imgs[8]), (a3, imgs[9])):
        hist = ws.catalog.query("SELECT version, payload FROM annotation_history WHERE "
                                "annotation_id = ?", [f"ls:{ann.id}"])
        assert len(hist) == 1 and hist[0]["version"] == 2
        payload = json.loads(hist[0]["payload"])
        assert payload["deleted"] is True and payload["verdict"] == ls.truth[iid]["verdict"]
        assert payload["task_id"] == f"rd:{iid}" and payload["version"] == 1
        assert payload["reason"] == "deleted in Label Studio"
    # Again: nothing to remove, nothing changes.
    before = ws.catalog.query_df("SELECT * FROM annotations ORDER BY annotation_id")
    again = pull_into_catalog(ws, b, task_ids, full=True)
    assert again["removed"] == 0 and again["inserted"] == again["updated"] == 0
    assert ws.catalog.query_df("SELECT * FROM annotations ORDER BY annotation_id").equals(before)
    # A task deleted from Label Studio keeps its annotations (only the task is marked deleted).
    sdk.tasks.delete(t3)
    gone = pull_into_catalog(ws, b, task_ids, full=True)
    assert gone["deleted_tasks"] == [f"rd:{imgs[10]}"] and gone["removed"] == 0
    assert f"ls:{a4.id}" in rows()


def test_cli_pairs_and_pull(labelstudio_server, tmp_path_factory, monkeypatch):
    """`medq annotate pairs` sends comparisons of catalog images to the paired project (twice:
    nothing new), a person answers one, `medq annotate pull --json` stores it; bad input fails
    with a clear message before anything is sent."""
    from typer.testing import CliRunner

    from medq.cli import app
    from medq.tasks._runtime import forget_workspaces
    from medq.tasks.annotate import _BACKENDS
    srv = labelstudio_server
    root = tmp_path_factory.mktemp("ls-cli") / "ws"
    env = {"MEDQ_LABELSTUDIO__URL": srv.url, "MEDQ_LABELSTUDIO__TOKEN": srv.token,
           "MEDQ_LABELSTUDIO__LOCAL_FILES_ROOT": str(srv.files_root),
           "MEDQ_LABELSTUDIO__PROJECT_TITLE": f"T{root.parent.name}"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    ws = Workspace.init(load_settings(workspace=root))
    rng = np.random.default_rng(3)
    rows = []
    for i in range(3):
        data = _png(rng)
        rows.append({"image_id": f"p{i}", "object_key": ws.objects.put_bytes(content_key(data), data),
                     "modality": "MRI"})
    ws.catalog.upsert("images", rows)
    pairs = root.parent / "pairs.csv"
    pairs.write_text("image_a,image_b\np0,p1\np0,p2\n")
    runner = CliRunner()
    try:
        first = runner.invoke(app, ["annotate", "pairs", str(pairs), "-w", str(root), "--json"])
        assert first.exit_code == 0, first.output
        out = json.loads(first.stdout)
        assert (out["pairs"], out["new"], out["sent"]) == (2, 2, 2)
        again = json.loads(runner.invoke(app, ["annotate", "pairs", str(pairs), "-w", str(root),
                                               "--json"]).stdout)
        assert again["new"] == 0 and again["pairs"] == 2

        bad = root.parent / "bad.csv"
        bad.write_text("image_a,image_b\np0,nope\n")
        res = runner.invoke(app, ["annotate", "pairs", str(bad), "-w", str(root)])
        said = " ".join(res.output.split())  # the error console wraps long lines
        assert res.exit_code == 1 and "not in the catalog" in said and "nope" in said
        bad.write_text("a,b\np0,p1\n")
        res = runner.invoke(app, ["annotate", "pairs", str(bad), "-w", str(root)])
        said = " ".join(res.output.split())
        assert res.exit_code == 1 and "missing column(s) ['image_a', 'image_b']" in said

        from medq.tasks._runtime import open_workspace
        cat = open_workspace(str(root)).catalog
        tasks = {r["task_id"]: r for r in cat.query(
            "SELECT task_id, external_id, lane, status FROM annotation_tasks ORDER BY task_id")}
        assert set(tasks) == {"pairs:pair:p0:p1", "pairs:pair:p0:p2"}
        assert all(t["lane"] == "paired" and t["status"] == "sent" and t["external_id"]
                   for t in tasks.values())
        client = LabelStudioClient(srv.url, srv.token)
        try:
            client.sdk.annotations.create(int(tasks["pairs:pair:p0:p2"]["external_id"]),
                                          result=labels_to_result({"better": "A"}))
        finally:
            client.close()
        pulled = runner.invoke(app, ["annotate", "pull", "-w", str(root), "--json"])
        assert pulled.exit_code == 0, pulled.output
        counts = json.loads(pulled.stdout)
        assert counts["inserted"] == 1 and counts["paired"] == 1
        row = cat.query("SELECT image_id, image_b_id, better, verdict FROM annotations")
        assert row == [{"image_id": "p0", "image_b_id": "p2", "better": "A", "verdict": None}]
    finally:
        for key in [k for k in _BACKENDS if k[0] == str(root)]:
            _BACKENDS.pop(key).close()
        forget_workspaces()
