"""Local services (S3 endpoint, Label Studio, Prefect server) and the workspace's health.

The services are started by the scripts in ``infra/`` (one per service, same contract:
``start|stop|status``, see ``infra/_lib.sh``); this module runs them with the ports and
credentials from the settings and checks health over HTTP:

- ``s3``: moto's S3 server standing in for MinIO; healthy when the port answers HTTP,
- ``labelstudio``: healthy when ``GET /health`` answers ``{"status": "UP"}``,
- ``prefect``: healthy when ``GET /api/health`` answers ``true``.

Everything listens on 127.0.0.1. State (pid files, logs, data) lives in the services folder:
``services.dir`` in the settings, else ``$MEDQ_SERVICES_DIR``, else ``<repo>/.services``.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medq.errors import MedQError
from medq.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


class ServiceError(MedQError):
    """A service could not be started, stopped or found; the message names it and its log."""


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    script: str
    port_setting: str          # field of settings.services
    health_path: str
    is_healthy: Callable[[int, bytes], bool]   # (HTTP status, body) -> healthy
    start_timeout_s: float     # default wait for health, seconds
    timeout_env: str           # variable the script reads its own start timeout from
    description: str


def _ls_up(status: int, body: bytes) -> bool:
    try:
        return status == 200 and json.loads(body).get("status") == "UP"
    except (ValueError, AttributeError):
        return False


SERVICES: dict[str, ServiceSpec] = {
    "s3": ServiceSpec("s3", "s3.sh", "s3_port", "/", lambda status, body: status > 0, 30,
                      "MEDQ_S3_START_TIMEOUT", "S3 endpoint (moto; MinIO in production)"),
    "labelstudio": ServiceSpec("labelstudio", "labelstudio.sh", "labelstudio_port", "/health",
                               _ls_up, 180, "MEDQ_LS_START_TIMEOUT", "Label Studio annotation server"),
    "prefect": ServiceSpec("prefect", "prefect.sh", "prefect_port", "/api/health",
                           lambda status, body: status == 200 and body.strip() == b"true", 120,
                           "MEDQ_PREFECT_START_TIMEOUT", "Prefect server (optional)"),
}


@dataclass
class ServiceStatus:
    """State of one service. `state`: running | stopped | unhealthy | not-installed."""

    name: str
    state: str
    healthy: bool
    url: str
    pid: int | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- locations ---------------------------------------------------------------------------------

def infra_dir() -> Path:
    """Folder of the service scripts (``$MEDQ_INFRA_DIR`` or ``<repo>/infra``)."""
    path = Path(os.environ.get("MEDQ_INFRA_DIR") or REPO_ROOT / "infra")
    if not (path / "_lib.sh").is_file():
        raise ServiceError(f"service scripts not found in {path}; run MedQ from a source checkout "
                           "or set MEDQ_INFRA_DIR")
    return path


def services_dir(settings: Settings) -> Path:
    if settings.services.dir is not None:
        path = settings.resolve(settings.services.dir)
        assert path is not None  # resolve() returns None only for a None path
        return path
    return Path(os.environ.get("MEDQ_SERVICES_DIR") or REPO_ROOT / ".services").resolve()


def service_url(name: str, settings: Settings) -> str:
    return f"http://{HOST}:{getattr(settings.services, _spec(name).port_setting)}"


def _spec(name: str) -> ServiceSpec:
    spec = SERVICES.get(name)
    if spec is None:
        raise ServiceError(f"unknown service {name!r}; services: {', '.join(SERVICES)}")
    return spec


def _names(names: Iterable[str] | None) -> list[str]:
    chosen = list(dict.fromkeys(names or SERVICES))  # keep order, drop repeats
    for name in chosen:
        _spec(name)
    return chosen


def _script_env(settings: Settings) -> dict[str, str]:
    """Environment of a service script: ports, folders and the Label Studio admin account.
    Secrets travel only in the environment of the child process, never on a command line."""
    svc = settings.services
    env = dict(os.environ)
    env.update({
        "MEDQ_SERVICES_DIR": str(services_dir(settings)),
        "MEDQ_PYTHON": sys.executable,
        "MEDQ_S3_PORT": str(svc.s3_port),
        "MEDQ_PREFECT_PORT": str(svc.prefect_port),
        "MEDQ_LS_PORT": str(svc.labelstudio_port),
        "MEDQ_LS_USERNAME": svc.labelstudio_admin,
        "MEDQ_LS_PASSWORD": svc.labelstudio_password.get_secret_value(),
    })
    token = settings.labelstudio.token.get_secret_value()
    if token:
        env["MEDQ_LS_TOKEN"] = token
    if "labelstudio_venv" in svc.model_fields_set:  # only an explicit choice overrides the script
        env["MEDQ_LS_VENV"] = str(settings.resolve(svc.labelstudio_venv))
    return env


def _script(name: str) -> Path | None:
    path = infra_dir() / _spec(name).script
    return path if path.is_file() else None


# -- health ------------------------------------------------------------------------------------

def probe(name: str, settings: Settings, timeout_s: float = 3.0) -> tuple[bool, str]:
    """(healthy, detail) from one HTTP request to the service's health URL."""
    spec = _spec(name)
    url = service_url(name, settings) + spec.health_path
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            status, body = resp.status, resp.read(4096)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(4096) if exc.fp else b""
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{url}: {reason}"
    ok = spec.is_healthy(status, body)
    return ok, f"{url}: HTTP {status}" + ("" if ok else f" {body[:120]!r}")


def wait_healthy(name: str, settings: Settings, timeout_s: float) -> tuple[bool, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        ok, detail = probe(name, settings)
        if ok or time.monotonic() >= deadline:
            return ok, detail
        time.sleep(0.5)


# -- up / down / status ------------------------------------------------------------------------

def _run(name: str, action: str, settings: Settings, timeout_s: float
         ) -> subprocess.CompletedProcess:
    script = _script(name)
    if script is None:
        raise ServiceError(f"{name}: {infra_dir() / _spec(name).script} is not installed")
    try:
        return subprocess.run(["bash", str(script), action], env=_script_env(settings),
                              capture_output=True, text=True, timeout=timeout_s, cwd=REPO_ROOT,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"{name}: `{script.name} {action}` did not finish in {timeout_s:.0f}s "
                           f"(logs under {services_dir(settings)})") from exc


def _parse(name: str, proc: subprocess.CompletedProcess, settings: Settings) -> ServiceStatus:
    line = (proc.stdout.strip().splitlines() or [""])[-1]
    words = line.split()
    pid = int(words[-1]) if len(words) >= 4 and words[-2] == "pid" and words[-1].isdigit() else None
    state = {0: "running", 1: "unhealthy", 3: "stopped"}.get(proc.returncode, "unhealthy")
    healthy = False
    detail = line or proc.stderr.strip()[-300:]
    if state == "running":
        healthy, detail = probe(name, settings)
        state = "running" if healthy else "unhealthy"
    return ServiceStatus(name, state, healthy, service_url(name, settings), pid, detail)


def services_status(names: Iterable[str] | None = None, settings: Settings | None = None
                    ) -> list[ServiceStatus]:
    """Status of the named services (all when None), in order. Starts and changes nothing."""
    settings = settings or load_settings()
    out = []
    for name in _names(names):
        if _script(name) is None:
            out.append(ServiceStatus(name, "not-installed", False, service_url(name, settings),
                                     detail=f"infra/{_spec(name).script} is missing"))
            continue
        out.append(_parse(name, _run(name, "status", settings, 60), settings))
    return out


def services_up(names: Iterable[str] | None = None, settings: Settings | None = None,
                timeout_s: float | None = None) -> list[ServiceStatus]:
    """Start the named services (all installed ones when None) and wait until each is healthy
    (at most `timeout_s` each; default per service: s3 30 s, labelstudio 180 s, prefect 120 s).

    The scripts run concurrently. A service that does not come up is stopped again, and one
    :class:`ServiceError` names every such service with the end of its script's output and the
    folder of the logs."""
    settings = settings or load_settings()
    chosen = _names(names)
    if names is None:
        chosen = [n for n in chosen if _script(n) is not None]
    missing = [n for n in chosen if _script(n) is None]
    if missing:
        raise ServiceError(f"cannot start {', '.join(missing)}: script(s) missing in {infra_dir()}")
    env = _script_env(settings)
    waits = {n: float(timeout_s or _spec(n).start_timeout_s) for n in chosen}
    for name in chosen:  # each script enforces its own wait; the limit below is a backstop
        env[_spec(name).timeout_env] = str(max(1, int(waits[name])))
    procs = {name: subprocess.Popen(["bash", str(_script(name)), "start"], env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT)
             for name in chosen}
    statuses, failures = [], []
    for name, proc in procs.items():
        limit = 2 * waits[name] + 60  # install checks, slow machines
        try:
            stdout, stderr = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            stderr += f"\n(start script still running after {limit:.0f}s; stopped it)"
        status = _parse(name, subprocess.CompletedProcess(proc.args, proc.returncode, stdout,
                                                          stderr), settings)
        if proc.returncode == 0 and not status.healthy:
            ok, detail = wait_healthy(name, settings, waits[name])
            status.healthy, status.detail = ok, detail
            status.state = "running" if ok else "unhealthy"
        if not status.healthy:
            tail = "\n".join((stderr or stdout).strip().splitlines()[-8:])
            failures.append(f"{name}: {tail or status.detail}")
            with contextlib.suppress(ServiceError):  # leave nothing half-started behind
                _run(name, "stop", settings, 60)
        statuses.append(status)
    if failures:
        raise ServiceError("service(s) did not come up (logs under "
                           f"{services_dir(settings)}):\n" + "\n".join(failures))
    return statuses


def services_down(names: Iterable[str] | None = None, settings: Settings | None = None
                  ) -> list[ServiceStatus]:
    """Stop the named services (all installed ones when None). Stopping a stopped one is fine."""
    settings = settings or load_settings()
    out = []
    for name in _names(names):
        if _script(name) is None:
            if names is not None:
                raise ServiceError(f"cannot stop {name}: infra/{_spec(name).script} is missing")
            continue
        proc = _run(name, "stop", settings, 60)
        if proc.returncode != 0:
            raise ServiceError(f"{name}: stop failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
        out.append(ServiceStatus(name, "stopped", False, service_url(name, settings)))
    return out


# -- workspace health (medq status) ------------------------------------------------------------

def workspace_status(settings: Settings, *, check_objects: bool = True) -> dict[str, Any]:
    """Everything `medq status` shows, as JSON-safe data with secrets masked. Opens the catalog
    read-only and creates nothing. ``ok`` is true when the catalog is at the latest schema and
    the object store is reachable."""
    from medq.storage.catalog import LATEST_VERSION, Catalog, CatalogError
    from medq.storage.objects import ObjectStoreError, create_object_store

    root = settings.workspace
    report: dict[str, Any] = {
        "workspace": str(root),
        "initialized": settings.catalog_path.is_file(),
        "settings": settings.public_dict(),
    }
    cat: dict[str, Any] = {"path": str(settings.catalog_path), "latest_version": LATEST_VERSION}
    if report["initialized"]:
        try:
            catalog = Catalog(settings.catalog_path, read_only=True)
            with catalog.connect():  # one connection for all the reads below
                cat["schema_version"] = catalog.schema_version()
                cat["tables"] = catalog.tables()
        except CatalogError as exc:
            cat["error"] = str(exc)
    else:
        cat["error"] = f"no catalog at {settings.catalog_path} (run `medq init`)"
    report["catalog"] = cat
    objects: dict[str, Any] = {"backend": settings.objects.backend}
    if check_objects:
        try:
            store = create_object_store(settings, create=False)  # looking creates nothing
            objects["location"] = store.location
            store.check()
            objects["reachable"] = True
        except ObjectStoreError as exc:
            objects["reachable"] = False
            objects["error"] = str(exc)
    report["objects"] = objects
    report["ok"] = bool(report["initialized"] and "error" not in cat
                        and cat.get("schema_version") == LATEST_VERSION
                        and objects.get("reachable", True))
    return report
