"""The Prefect flow and a plain driver run the same round and write the same catalog.

`medq run` drives ``engine_loop`` (every step a Prefect sub-flow or task, against a real Prefect
server); the benchmark driver calls :func:`medq.tasks.one_round.run_round` as plain functions,
with no Prefect engine. Both run one round on copies of one tiny world; every table of the two
catalogs must match (ids, labels, answers and counts exactly; floats to 1e-5, as in the resume
test).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.e2e.loop_helpers import copy_workspace, run_medq
from tests.e2e.test_loop_resume import RUN, _differences, catalog_dump

pytestmark = [pytest.mark.services, pytest.mark.timeout(1200)]

# the same round as `medq run` with RUN, as plain calls (what benchmarks/_loop.py does)
DRIVER = """
import json, sys
from medq.tasks.one_round import run_round
from medq.tasks.rounds import current_champion, open_round, resolve_config
from medq.tasks.training import bootstrap
ws = sys.argv[1]
config = resolve_config(ws, {"budget_per_round": 12.0, "candidates_per_round": 60, "seed": 0})
bootstrap(ws, seed=config.seed)
opened = open_round(ws, config, current_champion(ws))
outcome = run_round(ws, opened, config)
print(json.dumps(outcome.summary, default=str))
"""


def test_flow_and_plain_driver_write_the_same_catalog(loaded_workspace, prefect_server):
    assert RUN == ["--rounds", "1", "--budget", "12", "--candidates", "60", "--seed", "0"]
    via_flow = copy_workspace(loaded_workspace, "via-flow")
    done = run_medq(via_flow, prefect_server, "run", *RUN, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    flow_rounds = json.loads(done.stdout)

    plain = copy_workspace(loaded_workspace, "via-plain-calls")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDQ_", "PREFECT_API"))}
    env["PREFECT_HOME"] = str(plain.parent / "prefect-plain")  # never used: no flow run
    out = subprocess.run([sys.executable, "-c", DRIVER, str(plain)], env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["round_id"] == flow_rounds[0]["round_id"] == "r001"
    assert summary["model_out"] == flow_rounds[0]["model_out"]

    want, got = catalog_dump(via_flow), catalog_dump(plain)
    assert set(want) == set(got)
    for table in want:
        diff = _differences(want[table], got[table])
        assert not diff, f"table {table}: the flow and the plain driver differ:\n" + "\n".join(diff)
