"""Helpers for end-to-end loop tests: `medq` in a subprocess and workspace copies."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path


def run_medq(workspace: Path, api_url: str, *args: str, kill_at: str | None = None,
          timeout: int = 600, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """`medq ARGS --workspace W` in its own session against the shared Prefect server. Output
    goes to files (a SIGKILLed parent must not leave pipes held open by its children) and the
    whole process group is killed afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDQ_")}
    env["PREFECT_HOME"] = str(workspace.parent / f"prefect-{workspace.name}")
    env["PREFECT_API_URL"] = api_url
    if kill_at:
        env["MEDQ_FAULT_KILL_AT"] = kill_at
    env.update(env_extra or {})
    out, err = workspace.parent / "stdout.txt", workspace.parent / "stderr.txt"
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "medq.cli", *args, "--workspace",
                                 str(workspace)], env=env, stdout=fo, stderr=fe,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, code, out.read_text(), err.read_text())




def copy_workspace(base: Path, name: str) -> Path:
    """A copy of a loaded workspace that counts as a distinct workspace (new id)."""
    target = base.parent / name
    shutil.copytree(base, target)
    (target / "workspace.id").unlink()
    return target
