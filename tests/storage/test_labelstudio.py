"""Label Studio lanes against a real server (session fixture `labelstudio_server`)."""
from __future__ import annotations

import io
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
from medq.storage.annotation.base import AnnotationRequest
from medq.storage.annotation.ls_simulated import SimulatedTeam
from medq.storage.labelstudio import (
    UNCERTAIN_VIEW,
    LabelStudioAuthError,
    LabelStudioBackend,
    LabelStudioError,
    pull_into_catalog,
    wait_for_batch,
)
from medq.storage.labelstudio_config import labels_to_result
from medq.storage.objects import content_key
from medq.storage.workspace import Workspace
from PIL import Image

from medq.settings import load_settings

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
