"""End-to-end: one round of the loop with the `labelstudio` annotator against a real Label
Studio server, annotated by simulated annotators that work through its API (their own users
and tokens, the label stream, `annotations.create`), exactly the path human annotators take."""
from __future__ import annotations

import json

import pytest

from medq.storage.catalog import Catalog
from tests.e2e.loop_helpers import copy_workspace, run_medq

pytestmark = [pytest.mark.services, pytest.mark.timeout(900)]


def test_a_round_through_label_studio(loaded_workspace, prefect_server, labelstudio_server):
    ws = copy_workspace(loaded_workspace, "labelstudio")
    ls = labelstudio_server
    env = {"MEDQ_LABELSTUDIO__URL": ls.url, "MEDQ_LABELSTUDIO__TOKEN": ls.token,
           "MEDQ_LABELSTUDIO__LOCAL_FILES_ROOT": str(ls.files_root),
           "MEDQ_LABELSTUDIO__PROJECT_TITLE": "MedQ e2e", "MEDQ_LABELSTUDIO__SIMULATED_ANNOTATORS": "2",
           "MEDQ_ANNOTATION__WAIT_TIMEOUT_S": "300", "MEDQ_ANNOTATION__POLL_INTERVAL_S": "1"}
    done = run_medq(ws, prefect_server, "run", "--rounds", "1", "--budget", "8", "--candidates",
                    "40", "--annotator", "labelstudio", "--json", env_extra=env)
    assert done.returncode == 0, done.stderr[-4000:]
    [summary] = json.loads(done.stdout)
    cat = Catalog.open(ws / "catalog.duckdb", read_only=True)
    tasks = cat.query("SELECT task_id, external_id, status, backend FROM annotation_tasks")
    assert tasks and all(t["backend"] == "labelstudio" and t["external_id"] for t in tasks)
    # every task was answered through Label Studio, each annotation recorded exactly once
    anns = cat.query("SELECT annotation_id, task_id FROM annotations")
    assert {a["task_id"] for a in anns} == {t["task_id"] for t in tasks}
    assert len({a["annotation_id"] for a in anns}) == len(anns)
    assert summary["annotations"] == len(anns) and summary["model_out"]
    assert cat.scalar("SELECT count(*) FROM items WHERE source LIKE '%:r001'") > 0
