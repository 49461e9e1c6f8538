"""The Label Studio annotation backend: projects, views, storage, task import (idempotent),
progressive pull into :class:`~medq.storage.annotation.base.AnnotationRecord` s.

See :mod:`medq.storage.labelstudio` for the projects, the task data and the idempotency rules.
"""
from __future__ import annotations

import base64
import io
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from medq.storage.annotation.base import (
    AnnotationBackend,
    AnnotationRecord,
    AnnotationRequest,
    QueueStatus,
)
from medq.storage.catalog import loads
from medq.storage.labelstudio.client import (
    LabelStudioAuthError,
    LabelStudioClient,
    LabelStudioError,
    _transient,
)
from medq.storage.labelstudio.label_configs import (
    labels_to_result,
    paired_config,
    result_to_labels,
    single_image_config,
)

if TYPE_CHECKING:
    from label_studio_sdk.projects.client_ext import ProjectExt
    from label_studio_sdk.types.all_roles_project_list import AllRolesProjectList
    from label_studio_sdk.types.lse_project_create import LseProjectCreate

    from medq.storage.annotation.ls_simulated import SimulatedTeam

log = logging.getLogger(__name__)


BACKEND_NAME = "labelstudio"
UNCERTAIN_VIEW = "Most uncertain first"
SPOT_CHECK_VIEW = "Spot checks (auto lane)"
WORKSPACE_MARK = "medq-workspace:"
# Which project a lane's tasks go to.
LANE_PROJECT = {"expert": "expert", "verify": "verify", "auto": "verify", "paired": "paired"}
# Tasks updated this long before the last cursor are fetched again: commits that were in flight
# when the previous pull ran carry slightly older timestamps.
CURSOR_MARGIN = timedelta(seconds=5)
# The Data Manager applies `include` to the task and to its nested annotations alike: naming the
# annotation fields here returns just those (about 3x faster than every field of every task).
PULL_FIELDS = "id,updated_at,annotations,result,completed_by,was_cancelled,lead_time,parent_prediction"


@dataclass(frozen=True)
class ProjectSpec:
    """What one Label Studio project of a workspace looks like."""

    kind: str                   # expert | verify | paired
    title: str
    label_config: str
    show_predictions: bool
    maximum_annotations: int
    paired: bool = False


PROJECT_KINDS = ("expert", "verify", "paired")

INSTRUCTIONS = (
    "<p><b>MedQ image quality.</b> Judge the image as acquired, not the anatomy. Use zoom and the "
    "brightness / contrast sliders (window / level) before deciding.</p><ul>"
    "<li><b>Verdict</b>: good = no problem that matters for diagnosis; usable = mild degradation, "
    "still readable; reject = severe degradation.</li>"
    "<li><b>Degradations</b>: tick every type present, then choose mild or severe for each.</li>"
    "<li><b>Description</b>: what is wrong, where, how strong; end with 'Overall, the quality of "
    "this image is good/usable/reject.'</li>"
    "<li>Verify lane: the model's answer is pre-filled; submit it if right, correct it if not.</li>"
    "</ul>")


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LabelStudioBackend(AnnotationBackend):
    """Annotation backend on a real Label Studio server (see module docstring).

    `workspace` gives the catalog (external task ids), the object store (images) and the settings
    (``labelstudio``, ``annotation``). `client` is injectable for tests."""

    name = BACKEND_NAME

    def __init__(self, workspace, *, client: LabelStudioClient | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.workspace = workspace
        self.settings = workspace.settings
        ls = self.settings.labelstudio
        self.client = client or LabelStudioClient(
            ls.url, ls.token.get_secret_value(), timeout_s=ls.timeout_s, retries=ls.retries,
            backoff_s=ls.backoff_s, backoff_max_s=ls.backoff_max_s, sleep=sleep)
        self._projects: dict[str, int] = {}
        self._ensured: dict[str, ProjectSpec] = {}
        self._keys: dict[str, str] = {}                 # image_id -> object key (renders too)
        self._cursor: dict[tuple, datetime] = {}  # (project, round|None) -> newest updated_at seen
        self._annotations: dict[int, list[dict]] = {}   # LS task id -> its submitted annotations
        self._image_b: dict[int, str | None] = {}       # LS task id -> data.image_b_id (paired)
        # task_id -> ids ("ls:<id>") of its current annotations, for every task whose annotation
        # list the latest pull read from the server (see pull_refreshed).
        self.refreshed: dict[str, set[str]] = {}
        self._users: dict[int, str] = {}
        self._lock = threading.Lock()
        self._simulation: SimulatedTeam | None = None

    @classmethod
    def from_workspace(cls, workspace) -> LabelStudioBackend:
        return cls(workspace)

    @property
    def url(self) -> str:
        return self.client.url

    # -- projects -------------------------------------------------------------------------------
    def project_specs(self, consensus: int | None = None) -> dict[str, ProjectSpec]:
        title = self.settings.labelstudio.project_title
        n = max(1, consensus or self.settings.annotation.consensus)
        single = single_image_config()
        return {
            "expert": ProjectSpec("expert", f"{title} · expert", single, False, n),
            "verify": ProjectSpec("verify", f"{title} · verify", single, True, 1),
            "paired": ProjectSpec("paired", f"{title} · paired", paired_config(), False, 1, True),
        }

    def _description(self, spec: ProjectSpec) -> str:
        return (f"MedQ {spec.kind} lane. Created and updated by MedQ; tasks arrive most uncertain "
                f"first. {WORKSPACE_MARK} {self.workspace.root}")

    def ensure_project(self, kind: str, *, consensus: int | None = None) -> int:
        """Create or update (idempotently, looked up by title) the project of `kind`; returns its
        id. Refuses a project of the same title that belongs to another workspace."""
        spec = self.project_specs(consensus)[kind]
        if self._ensured.get(kind) == spec:
            return self._projects[kind]  # already checked by this backend instance
        sdk, call = self.client.sdk, self.client.call
        pid = self._projects.get(kind)
        project: ProjectExt | LseProjectCreate | None = None
        if pid is None:
            titled: list[AllRolesProjectList] = call(
                f"list projects titled {spec.title!r}",
                lambda: list(sdk.projects.list(title=spec.title, page_size=100)))
            for p in titled:
                if p.title == spec.title:
                    project = call(f"read project {p.id}", sdk.projects.get, p.id)
                    break
        else:
            project = call(f"read project {pid}", sdk.projects.get, pid)
        wanted: dict[str, Any] = {"label_config": spec.label_config,
                  "show_collab_predictions": spec.show_predictions,
                  "maximum_annotations": spec.maximum_annotations,
                  "overlap_cohort_percentage": 100, "sampling": "Sequential sampling",
                  "expert_instruction": INSTRUCTIONS, "show_instruction": False,
                  "show_skip_button": True, "description": self._description(spec)}
        if project is None:
            project = call(f"create project {spec.title!r}", sdk.projects.create,
                           title=spec.title, **wanted)
            log.info("created Label Studio project %s (%s)", project.id, spec.title)
        else:
            owner = (project.description or "").split(WORKSPACE_MARK)[-1].strip() \
                if WORKSPACE_MARK in (project.description or "") else None
            if owner and owner != str(self.workspace.root):
                raise LabelStudioError(
                    f"Label Studio project {spec.title!r} (id {project.id}) at {self.url} belongs "
                    f"to workspace {owner}, not {self.workspace.root}; set labelstudio.project_title "
                    "to a title of its own for this workspace")
            changed = {k: v for k, v in wanted.items() if getattr(project, k, None) != v}
            if changed:
                call(f"update project {project.id} ({', '.join(sorted(changed))})",
                     sdk.projects.update, project.id, **changed)
        if project.id is None:
            raise LabelStudioError(f"Label Studio at {self.url} returned project {spec.title!r} "
                                   "without an id")
        pid = int(project.id)
        self._ensure_views(pid, kind)
        if self._image_mode() == "local-files":
            self._ensure_local_storage(pid)
        self._projects[kind] = pid
        self._ensured[kind] = spec
        return pid

    def project_id(self, kind: str) -> int:
        """The id of the project of `kind` (created if missing; checked once per instance)."""
        if kind in self._ensured:
            return self._projects[kind]
        return self.ensure_project(kind)

    def _ensure_views(self, pid: int, kind: str) -> None:
        sdk, call = self.client.sdk, self.client.call
        views = call(f"list views of project {pid}", sdk.views.list, project=pid)
        titles = {(v.data or {}).get("title") for v in views}
        wanted: list[tuple[str, dict[str, Any]]] = [
            (UNCERTAIN_VIEW, {"title": UNCERTAIN_VIEW, "ordering": ["-tasks:data.uncertainty"]})]
        if kind == "verify":
            wanted.append((SPOT_CHECK_VIEW, {
                "title": SPOT_CHECK_VIEW, "ordering": ["-tasks:data.uncertainty"],
                "filters": {"conjunction": "and", "items": [
                    {"filter": "filter:tasks:data.lane", "operator": "equal", "type": "String",
                     "value": "auto"}]}}))
        for title, data in wanted:
            if title not in titles:
                call(f"create view {title!r} in project {pid}", sdk.views.create,
                     project=pid, data=data)

    def _ensure_local_storage(self, pid: int) -> None:
        root = self._objects_root()
        sdk, call = self.client.sdk, self.client.call
        existing = call(f"list local storages of project {pid}", sdk.import_storage.local.list,
                        project=pid)
        if any(Path(s.path or "") == root for s in existing):
            return
        try:
            call(f"connect local storage {root} to project {pid}", sdk.import_storage.local.create,
                 project=pid, path=str(root), title="MedQ objects", use_blob_urls=True,
                 regex_filter="(?!)")  # serving only: never import files as tasks on a sync
        except LabelStudioAuthError:
            raise
        except LabelStudioError as exc:
            raise LabelStudioError(
                f"{exc}. Local file serving needs the server started with "
                f"LOCAL_FILES_SERVING_ENABLED=true and LOCAL_FILES_DOCUMENT_ROOT at or above {root} "
                "(infra/labelstudio.sh does; MEDQ_LS_FILES_ROOT), or set "
                "labelstudio.image_access to presigned or data-uri") from exc

    # -- images ---------------------------------------------------------------------------------
    def _image_mode(self) -> str:
        mode = self.settings.labelstudio.image_access
        if mode == "auto":
            return "local-files" if self.settings.objects.backend == "local" else "presigned"
        if mode not in ("local-files", "presigned", "data-uri"):
            raise LabelStudioError(f"labelstudio.image_access {mode!r} is not one of auto, "
                                   "local-files, presigned, data-uri")
        return mode

    def _objects_root(self) -> Path:
        root = getattr(self.workspace.objects, "root", None)
        if root is None:
            raise LabelStudioError("labelstudio.image_access local-files needs the local object "
                                   f"store (objects.backend is {self.settings.objects.backend!r}); "
                                   "use presigned or data-uri")
        return Path(root).resolve()

    def _document_root(self) -> Path:
        return Path(self.settings.labelstudio.local_files_root or "/").expanduser().resolve()

    def _known_keys(self, image_ids: Iterable[str]) -> None:
        """Look up the object keys of many images at once (one query, not one per task)."""
        ids = [i for i in dict.fromkeys(image_ids) if i not in self._keys]
        for s in range(0, len(ids), 5000):
            for r in self.workspace.catalog.query(
                    "SELECT image_id, object_key FROM images WHERE image_id IN "
                    "(SELECT unnest(?::VARCHAR[])) AND object_key IS NOT NULL", [ids[s:s + 5000]]):
                self._keys[r["image_id"]] = r["object_key"]

    def _object_key(self, image_id: str, key: str | None) -> str:
        """The object key of the image's PNG; renders manifest images into the store once."""
        if key:
            return key
        self._known_keys([image_id])
        if image_id in self._keys:
            return self._keys[image_id]
        import numpy as np
        from PIL import Image

        from medq.storage.images import load_images
        key = f"labelstudio/renders/{image_id}.png"
        if not self.workspace.objects.exists(key):
            img = load_images(self.workspace, [image_id])[0]
            buf = io.BytesIO()
            Image.fromarray((np.clip(img, 0, 1) * 255).round().astype("uint8")).save(buf, "PNG")
            self.workspace.objects.put_bytes(key, buf.getvalue(), content_type="image/png")
        self._keys[image_id] = key
        return key

    def image_url(self, image_id: str, key: str | None = None) -> str:
        """A URL of the image that Label Studio (and the annotator's browser) can open."""
        key = self._object_key(image_id, key)
        mode = self._image_mode()
        if mode == "local-files":
            path = self._objects_root().joinpath(*key.split("/"))
            doc_root = self._document_root()
            try:
                rel = path.relative_to(doc_root)
            except ValueError:
                raise LabelStudioError(
                    f"image {key} lies at {path}, outside the server's local files root {doc_root} "
                    "(labelstudio.local_files_root / MEDQ_LS_FILES_ROOT)") from None
            return "/data/local-files/?d=" + quote(rel.as_posix())
        if mode == "presigned":
            return self.workspace.objects.url(key, self.settings.objects.presign_expiry_s)
        data = self.workspace.objects.get_bytes(key)
        mime = "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png"
        return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")

    # -- submit ---------------------------------------------------------------------------------
    def _task_payload(self, req: AnnotationRequest, kind: str) -> dict:
        u = round(float(req.uncertainty), 4)  # fixed precision: sorts right even as text
        modality = req.modality or "unknown modality"
        data = {"image": self.image_url(req.image_id, req.image_key),
                "header": f"{modality} · {req.lane} lane · round {req.round_id} · "
                          f"uncertainty {u:.3f}",
                "task_id": req.task_id, "image_id": req.image_id, "round": req.round_id,
                "lane": req.lane, "uncertainty": u, "modality": req.modality or ""}
        if kind == "paired":
            extra = req.prediction or {}
            image_b = getattr(req, "image_b_id", None) or extra.get("image_b_id")
            if not image_b:
                raise LabelStudioError(f"paired task {req.task_id} names no second image "
                                       "(image_b_id)")
            data["image_b"] = self.image_url(image_b, getattr(req, "image_b_key", None)
                                             or extra.get("image_b_key"))
            data["image_b_id"] = image_b
        payload: dict[str, Any] = {"data": data}
        spec_shows = self.project_specs()[kind].show_predictions
        pred = req.prediction or {}
        result = labels_to_result({k: pred.get(k) for k in ("verdict", "degradations",
                                                            "description")})
        if spec_shows and result:
            score = pred.get("score")
            payload["predictions"] = [{
                "model_version": str(req.model_version or pred.get("model_version") or "unknown"),
                "score": float(score) if score is not None else None, "result": result}]
        return payload

    def _catalog_tasks(self, task_ids: Sequence[str] | None) -> dict[str, dict]:
        cat = self.workspace.catalog
        sql = ("SELECT t.task_id, t.round_id, t.image_id, t.lane, t.external_id, t.status, "
               "t.prediction, i.modality FROM annotation_tasks t LEFT JOIN images i "
               "USING (image_id) WHERE t.backend = ?")
        if task_ids is None:
            rows = cat.query(sql, [BACKEND_NAME])
        else:
            rows = []
            ids = list(dict.fromkeys(task_ids))
            for s in range(0, len(ids), 5000):
                rows += cat.query(sql + " AND t.task_id IN (SELECT unnest(?::VARCHAR[]))",
                                  [BACKEND_NAME, ids[s:s + 5000]])
        return {r["task_id"]: r for r in rows}

    def _find_existing(self, pid: int, round_ids: Iterable[str], wanted: set[str]) -> dict[str, int]:
        """task_id -> LS task id for tasks of these rounds already in project `pid`."""
        found: dict[str, int] = {}
        for rnd in sorted(set(round_ids)):
            for t in self.client.list_tasks(
                    f"look up tasks of round {rnd} in project {pid}", pid,
                    filters=[{"filter": "filter:tasks:data.round", "operator": "equal",
                              "type": "String", "value": rnd}],
                    include="id,data", page_size=self.settings.labelstudio.page_size):
                tid = (t.get("data") or {}).get("task_id")
                if tid in wanted and tid not in found:
                    found[tid] = int(t["id"])
        return found

    def _import_chunk(self, pid: int, chunk: list[tuple[AnnotationRequest, dict]]) -> dict[str, int]:
        """Import one chunk; after a failed attempt, re-check what arrived before retrying."""
        ls = self.settings.labelstudio
        attempt = 0
        todo = chunk
        done: dict[str, int] = {}
        while True:
            try:
                resp = self.client.call(
                    f"import {len(todo)} tasks into project {pid}", self.client.sdk.projects.import_tasks,
                    pid, request=[p for _, p in todo], return_task_ids=True, retry=False)
                # task_ids: an extra field of the response when return_task_ids=True; the SDK's
                # ImportTasksProjectsResponse model does not declare it
                ids = list(resp.task_ids or [])  # type: ignore[attr-defined]
                if len(ids) != len(todo):
                    raise LabelStudioError(f"Label Studio at {self.url} returned {len(ids)} task ids "
                                           f"for {len(todo)} imported tasks (project {pid})")
                done.update({req.task_id: int(i) for (req, _), i in zip(todo, ids)})
                return done
            except LabelStudioAuthError:
                raise
            except LabelStudioError as exc:
                cause = exc.__cause__
                if cause is None or not _transient(cause) or attempt >= ls.retries:
                    raise
                self.client._sleep(min(ls.backoff_s * 2 ** attempt, ls.backoff_max_s))
                attempt += 1
                arrived = self._find_existing(pid, {r.round_id for r, _ in todo},
                                              {r.task_id for r, _ in todo})
                done.update(arrived)
                todo = [(r, p) for r, p in todo if r.task_id not in arrived]
                if not todo:
                    return done

    def submit(self, requests: Sequence[AnnotationRequest]) -> dict[str, str]:
        """Send tasks (idempotent by task_id); returns task_id -> Label Studio task id. Tasks
        marked deleted in the catalog are not sent again (someone removed them on purpose)."""
        requests = list({r.task_id: r for r in requests}.values())
        if not requests:
            return {}
        for r in requests:
            if r.lane not in LANE_PROJECT:
                raise LabelStudioError(f"task {r.task_id}: unknown lane {r.lane!r}; lanes: "
                                       f"{sorted(LANE_PROJECT)}")
        self.client.check()
        known = self._catalog_tasks([r.task_id for r in requests])
        out: dict[str, str] = {}
        by_kind: dict[str, list[AnnotationRequest]] = {}
        for r in requests:
            row = known.get(r.task_id)
            if row and row["status"] == "deleted":
                continue
            if row and row["external_id"]:
                out[r.task_id] = str(row["external_id"])
                continue
            by_kind.setdefault(LANE_PROJECT[r.lane], []).append(r)
        for kind, reqs in by_kind.items():
            consensus = max([self.settings.annotation.consensus] +
                            [r.n_annotators for r in reqs]) if kind == "expert" else None
            pid = self.ensure_project(kind, consensus=consensus)
            existing = self._find_existing(pid, {r.round_id for r in reqs}, {r.task_id for r in reqs})
            self._record(pid, [r for r in reqs if r.task_id in existing], existing)
            out.update({t: str(i) for t, i in existing.items()})
            fresh = sorted((r for r in reqs if r.task_id not in existing),
                           key=lambda r: (-float(r.uncertainty), r.task_id))
            self._known_keys([r.image_id for r in fresh if not r.image_key])
            chunk_size = self.settings.labelstudio.import_chunk
            for s in range(0, len(fresh), chunk_size):
                part = fresh[s:s + chunk_size]
                ids = self._import_chunk(pid, [(r, self._task_payload(r, kind)) for r in part])
                self._record(pid, part, ids)  # catalog follows every confirmed chunk
                out.update({t: str(i) for t, i in ids.items()})
            if fresh and self.project_specs()[kind].show_predictions:
                self._show_model_version(pid, fresh)
        if self.settings.labelstudio.simulated_annotators > 0:
            self._start_simulation(requests)
        return out

    def _show_model_version(self, pid: int, reqs: Sequence[AnnotationRequest]) -> None:
        """Make the project pre-fill the interface with the newest model's predictions. Label
        Studio accepts only a version that has predictions in the project, so this follows the
        import."""
        versions = [r.model_version or (r.prediction or {}).get("model_version") for r in reqs]
        version = next((str(v) for v in reversed(versions) if v), None)
        if version is None:
            return
        sdk, call = self.client.sdk, self.client.call
        project = call(f"read project {pid}", sdk.projects.get, pid)
        if project.model_version != version:
            try:
                call(f"show predictions of model {version} in project {pid}",
                     sdk.projects.update, pid, model_version=version)
            except LabelStudioAuthError:
                raise
            except LabelStudioError as exc:  # a display preference: the tasks are in already
                log.warning("%s", exc)

    def _record(self, pid: int, reqs: Sequence[AnnotationRequest], ids: dict[str, int]) -> None:
        if not reqs:
            return
        self.workspace.catalog.upsert("annotation_tasks", [
            {"task_id": r.task_id, "round_id": r.round_id, "image_id": r.image_id, "lane": r.lane,
             "backend": BACKEND_NAME, "external_id": str(ids[r.task_id]), "status": "sent",
             "uncertainty": float(r.uncertainty), "prediction": self._stored_prediction(r)}
            for r in reqs if r.task_id in ids])

    @staticmethod
    def _stored_prediction(req: AnnotationRequest) -> dict | None:
        """The request's prediction as kept in ``annotation_tasks``; for a paired task it always
        names the second image (``image_b_id``), which pulled annotations are stored with."""
        if LANE_PROJECT.get(req.lane) != "paired":
            return req.prediction
        image_b = getattr(req, "image_b_id", None) or (req.prediction or {}).get("image_b_id")
        return {**(req.prediction or {}), "image_b_id": image_b} if image_b else req.prediction

    # -- pull -----------------------------------------------------------------------------------
    def _user_email(self, uid: Any) -> str:
        if uid is None:
            return "unknown"
        if isinstance(uid, dict):
            return str(uid.get("email") or uid.get("id"))
        uid = int(uid)
        if uid not in self._users:
            users = self.client.call("list users", lambda: list(self.client.sdk.users.list()))
            self._users.update({int(u.id): (u.email or u.username or str(u.id)) for u in users})
        return self._users.get(uid, f"user-{uid}")

    def _fetch_updates(self, pid: int, round_id: str | None = None, *, full: bool = False
                       ) -> tuple[set[int], bool]:
        """Refresh the annotation cache from the tasks of project `pid` (of one round when
        `round_id` is given) updated since the previous fetch of that scope.

        Returns (the LS task ids whose annotation lists were replaced, complete): `complete` is
        True when every task of the scope with at least one submitted annotation was listed (a
        full or first fetch), so a task of the scope that is missing has none, or is deleted."""
        scope = (pid, round_id)
        cursor = None if full else self._cursor.get(scope)
        fetched: set[int] = set()
        if cursor is None:
            filters = [{"filter": "filter:tasks:total_annotations", "operator": "greater",
                        "type": "Number", "value": 0}]
        else:
            filters = [{"filter": "filter:tasks:updated_at", "operator": "greater",
                        "type": "Datetime", "value": _iso(cursor - CURSOR_MARGIN)}]
        if round_id is not None:
            filters.append({"filter": "filter:tasks:data.round", "operator": "equal",
                            "type": "String", "value": round_id})
        newest = cursor
        for t in self.client.list_tasks(f"pull annotations of project {pid}", pid, filters=filters,
                                        include=PULL_FIELDS, fields="all",
                                        page_size=self.settings.labelstudio.page_size):
            self._annotations[int(t["id"])] = [a for a in (t.get("annotations") or [])
                                              if not a.get("was_cancelled")]
            fetched.add(int(t["id"]))
            ts = _parse_time(t.get("updated_at"))
            if ts and (newest is None or ts > newest):
                newest = ts
        if newest is not None:
            self._cursor[scope] = newest
        return fetched, cursor is None

    def _read_tasks(self, rows: Iterable[dict]) -> set[int]:
        """Read the given tasks one by one (annotations and data): refreshes their annotation
        cache and second image. Returns the LS ids read; a task gone from the server is skipped
        (its cache is left alone: see pull_into_catalog on deleted tasks)."""
        read: set[int] = set()
        for r in rows:
            ext = int(r["external_id"])
            t = self.client.get_json(f"read Label Studio task {ext} (task {r['task_id']})",
                                     f"/api/tasks/{ext}", allow_404=True)
            if t is None:
                continue
            self._annotations[ext] = [a for a in (t.get("annotations") or [])
                                      if not a.get("was_cancelled")]
            self._image_b[ext] = (t.get("data") or {}).get("image_b_id")
            read.add(ext)
        return read

    def _with_ls_annotations(self, task_ids: Sequence[str]) -> set[str]:
        """Which of `task_ids` have Label Studio annotation rows in the catalog."""
        held: set[str] = set()
        ids = list(task_ids)
        for s in range(0, len(ids), 5000):
            held.update(r["task_id"] for r in self.workspace.catalog.query(
                "SELECT DISTINCT task_id FROM annotations WHERE annotation_id LIKE 'ls:%' AND "
                "task_id IN (SELECT unnest(?::VARCHAR[]))", [ids[s:s + 5000]]))
        return held

    def pull(self, task_ids: Sequence[str] | None = None, *, full: bool = False
             ) -> list[AnnotationRecord]:
        """Every submitted (not skipped) annotation of `task_ids` (all tasks of this workspace when
        None) as records. Only tasks updated since the previous pull are fetched unless `full`.
        Incomplete annotations come back too, with their problems in ``raw["problems"]``.
        :attr:`refreshed` then says which tasks were read from the server (see
        :meth:`pull_refreshed`)."""
        return self.pull_refreshed(task_ids, full=full)[0]

    def pull_refreshed(self, task_ids: Sequence[str] | None = None, *, full: bool = False
                       ) -> tuple[list[AnnotationRecord], dict[str, set[str]]]:
        """:meth:`pull`, plus task_id -> ids (``ls:<id>``) of the task's current annotations (valid
        or not) for every asked task whose annotation list this pull read from the server; an
        annotation of such a task that is not in its set is gone from Label Studio.

        Which tasks are read: the ones listed as updated since the previous pull (``updated_at``);
        in a full or first pull of a scope (project, or project and round), every task with an
        annotation, and also, one by one, the tasks of the scope that the listing left out although
        the catalog holds Label Studio annotations of theirs (their annotations were all deleted).
        Tasks gone from the server (or marked ``deleted`` in the catalog) are never counted as
        read, so their annotations are never taken for deleted."""
        rows = self._catalog_tasks(task_ids)
        rows = {t: r for t, r in rows.items() if r["external_id"]}
        scopes: dict[str, set[str]] = {}
        for r in rows.values():
            scopes.setdefault(LANE_PROJECT.get(r["lane"], "verify"), set()).add(r["round_id"])
        with self._lock:
            fetched: set[int] = set()
            unlisted: list[dict] = []  # tasks of a completely listed scope that were not listed
            for kind, rounds in sorted(scopes.items()):
                # One round asked (the usual case: a round waiting for its batch): fetch only it.
                only = next(iter(rounds)) if task_ids is not None and len(rounds) == 1 else None
                got, complete = self._fetch_updates(self.project_id(kind), only, full=full)
                fetched |= got
                if complete:
                    unlisted += [r for r in rows.values()
                                 if LANE_PROJECT.get(r["lane"], "verify") == kind
                                 and (only is None or r["round_id"] == only)
                                 and r["status"] != "deleted"  # known gone: no request
                                 and int(r["external_id"]) not in got]
            if unlisted:
                held = self._with_ls_annotations([r["task_id"] for r in unlisted])
                fetched |= self._read_tasks(r for r in unlisted if r["task_id"] in held)
            # Paired tasks whose catalog row does not name the second image: read it from LS.
            self._read_tasks([r for r in rows.values()
                              if LANE_PROJECT.get(r["lane"]) == "paired" and r["status"] != "deleted"
                              and self._annotations.get(int(r["external_id"]))
                              and not self._pred(r).get("image_b_id")
                              and int(r["external_id"]) not in self._image_b])
            records = []
            for row in rows.values():
                for ann in self._annotations.get(int(row["external_id"]), []):
                    records.append(self._to_record(row, ann))
            refreshed = {t: {f"ls:{a['id']}" for a in self._annotations.get(int(r["external_id"]), [])}
                         for t, r in rows.items() if int(r["external_id"]) in fetched}
            self.refreshed = refreshed
        return records, refreshed

    @staticmethod
    def _pred(row: dict) -> dict:
        pred = loads(row["prediction"]) if isinstance(row["prediction"], str) else row["prediction"]
        return pred if isinstance(pred, dict) else {}

    def _to_record(self, row: dict, ann: dict) -> AnnotationRecord:
        paired = LANE_PROJECT.get(row["lane"]) == "paired"
        parsed = result_to_labels(ann.get("result"), paired=paired)
        accepted = None
        pred = self._pred(row)
        if row["lane"] in ("verify", "auto") and pred and pred.get("verdict"):
            accepted = parsed.verdict == pred.get("verdict")
            if accepted and pred.get("degradations") is not None:
                accepted = sorted((d["type"], int(d["level"])) for d in pred["degradations"]) == \
                    sorted((d["type"], d["level"]) for d in parsed.degradations)
        raw = {"ls_annotation_id": ann.get("id"), "ls_task_id": int(row["external_id"]),
               "lead_time": ann.get("lead_time"), "result": ann.get("result") or [],
               "parent_prediction": ann.get("parent_prediction"),
               "problems": parsed.problems}
        image_b = (pred.get("image_b_id") or self._image_b.get(int(row["external_id"]))
                   if paired else None)
        return AnnotationRecord(
            annotation_id=f"ls:{ann['id']}", task_id=row["task_id"], round_id=row["round_id"],
            image_id=row["image_id"], annotator=self._user_email(ann.get("completed_by")),
            lane=row["lane"], verdict=parsed.verdict, degradations=parsed.degradations,
            description=parsed.description, modality=row.get("modality"),
            accepted_prediction=accepted, updated_at=ann.get("updated_at"), raw=raw,
            better=parsed.better if paired else None, image_b_id=image_b)

    # -- status ---------------------------------------------------------------------------------
    def task_states(self, task_ids: Sequence[str]) -> dict[str, str]:
        """task_id -> ``done`` (every requested annotation slot submitted or skipped),
        ``pending``, ``deleted`` (gone from Label Studio) or ``unsent`` (no external id)."""
        rows = self._catalog_tasks(task_ids)
        states = {t: "unsent" for t in task_ids}
        by_kind: dict[str, dict[int, str]] = {}
        for t, r in rows.items():
            if r["status"] == "deleted":
                states[t] = "deleted"
            elif r["external_id"]:
                by_kind.setdefault(LANE_PROJECT.get(r["lane"], "verify"), {})[int(r["external_id"])] = t
        for kind, ext in by_kind.items():
            pid = self.project_id(kind)
            seen: dict[int, dict] = {}
            lo, hi = min(ext), max(ext)
            for task in self.client.list_tasks(
                    f"read task states of project {pid}", pid,
                    filters=[{"filter": "filter:tasks:id", "operator": "in", "type": "Number",
                              "value": {"min": lo, "max": hi}}],
                    include="id,total_annotations,cancelled_annotations,overlap",
                    page_size=self.settings.labelstudio.page_size):
                if int(task["id"]) in ext:
                    seen[int(task["id"])] = task
            for ext_id, task_id in ext.items():
                got = seen.get(ext_id)
                if got is None:
                    states[task_id] = "deleted"
                else:
                    n = (int(got.get("total_annotations") or 0)
                         + int(got.get("cancelled_annotations") or 0))
                    overlap = max(1, int(got.get("overlap") or 1))
                    states[task_id] = "done" if n >= overlap else "pending"
        return states

    def status(self, task_ids: Sequence[str]) -> QueueStatus:
        states = self.task_states(list(task_ids))
        done = sum(s == "done" for s in states.values())
        deleted = sum(s == "deleted" for s in states.values())
        return QueueStatus(total=len(states), done=done, pending=len(states) - done - deleted,
                           deleted=deleted)

    # -- simulated annotators -------------------------------------------------------------------
    def _start_simulation(self, requests: Sequence[AnnotationRequest]) -> None:
        from medq.storage.annotation.ls_simulated import SimulatedTeam
        from medq.storage.annotation.simulated import catalog_truth
        truth = catalog_truth(self.workspace.catalog)([r.image_id for r in requests])
        if self._simulation is None:
            ls = self.settings.labelstudio
            self._simulation = SimulatedTeam.create(
                self.client, n=ls.simulated_annotators, error_rate=self.settings.annotation.error_rate,
                delay_s=ls.simulated_delay_s, seed=self.settings.model.seed)
        self._simulation.add_truth(truth)
        self._simulation.start([self._projects[k] for k in sorted(
            {LANE_PROJECT[r.lane] for r in requests})])

    def close(self) -> None:
        if self._simulation is not None:
            self._simulation.stop()
        self.client.close()
