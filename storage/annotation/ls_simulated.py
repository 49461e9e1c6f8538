"""Simulated annotators that work through a real Label Studio server, exactly like people do.

Each annotator is a Label Studio user with its own account and API token (created through the
organization's invite link and the sign-up form, or logged in when the account exists, so it
works against any server, local or remote). It takes tasks from the label stream
(``GET /api/projects/<id>/next``: the server's queue, locks and overlap rules decide which task
comes next) and submits annotations with ``annotations.create``: the same path as the web UI.

Answers come from ground truth (``{image_id: {"verdict", "degradations", "description"}}``, e.g.
the catalog's ``oracle_labels`` or a labels JSONL through
:mod:`medq.storage.annotation.simulated`) with configurable slips:

- ``error_rate``: an adjacent verdict and misjudged severities (the description's verdict
  sentence follows the verdict),
- ``incomplete_rate``: a degradation ticked without its mild / severe level (the catalog must
  quarantine these),
- ``delay_s``: mean seconds spent per task (exponential), also reported as ``lead_time``.

In the verify lane the annotator sees the model's prediction: it submits the prediction unchanged
(accept, ``parent_prediction`` set) when it equals its own answer, else its corrected answer.
Every choice is a pure function of (seed, annotator, task id): reruns give the same answers.
"""
from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from medq.engine.taxonomy import VERDICTS, verdict_sentence
from medq.storage.labelstudio.client import LabelStudioClient, LabelStudioError
from medq.storage.labelstudio.label_configs import LEVEL_PREFIX, labels_to_result, result_to_labels

EMAIL = "medq-annotator-{k}@medq.local"


def _password(email: str) -> str:
    # Deterministic so a rerun can log in again; these accounts only exist for simulations.
    return "medq-sim-" + hashlib.sha256(email.encode()).hexdigest()[:16]


def _form_login(session: httpx.Client, email: str, password: str) -> bool:
    session.get("/user/login/")
    csrf = session.cookies.get("csrftoken", "")
    session.post("/user/login/", data={"email": email, "password": password,
                                       "csrfmiddlewaretoken": csrf},
                 headers={"Referer": str(session.base_url) + "/user/login/"})
    return session.get("/api/current-user/whoami").status_code == 200


def ensure_user(admin: LabelStudioClient, email: str, password: str | None = None) -> str:
    """Log in as `email` (signing up through the admin's organization invite link when the
    account does not exist yet) and return that user's API token."""
    password = password or _password(email)
    with httpx.Client(base_url=admin.url, follow_redirects=True, timeout=30.0) as session:
        def go() -> str:
            if not _form_login(session, email, password):
                invite = admin.get_json("get the organization invite link", "/api/invite")
                url = invite.get("invite_url") or ""
                session.get(url)
                csrf = session.cookies.get("csrftoken", "")
                resp = session.post(url, data={"email": email, "password": password,
                                               "csrfmiddlewaretoken": csrf, "allow_newsletters": ""},
                                    headers={"Referer": admin.url + url})
                if session.get("/api/current-user/whoami").status_code != 200:
                    errors = re.findall(r'class="[^"]*error[^"]*"[^>]*>\s*([^<]+)', resp.text)
                    raise LabelStudioError(
                        f"could not sign up or log in annotator {email} at {admin.url}: "
                        f"{'; '.join(e.strip() for e in errors) or 'HTTP ' + str(resp.status_code)}")
            resp = session.get("/api/current-user/token")
            resp.raise_for_status()
            return resp.json()["token"]
        return admin.call(f"set up annotator account {email}", go)


def _rng(*parts: Any) -> np.random.Generator:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass
class SimulatedLSAnnotator:
    """One simulated person: a Label Studio user answering from `truth`."""

    email: str
    client: LabelStudioClient
    truth: dict[str, dict] = field(default_factory=dict)
    error_rate: float = 0.05
    incomplete_rate: float = 0.0
    delay_s: float = 0.0
    seed: int = 0
    done: int = 0
    _user_id: int | None = None

    def answer(self, task: Mapping[str, Any]) -> tuple[list[dict], float, int | None]:
        """(result, lead_time, parent_prediction id) for `task` (data + predictions)."""
        data = task.get("data") or {}
        image_id = data.get("image_id")
        labels = self.truth.get(image_id) if image_id is not None else None
        if labels is None:
            raise LabelStudioError(f"annotator {self.email}: no ground truth for image "
                                   f"{data.get('image_id')} (task {data.get('task_id')})")
        rng = _rng(self.seed, self.email, data.get("task_id"))
        verdict = labels["verdict"]
        degs = [{"type": d["type"], "level": int(d["level"])} for d in labels.get("degradations") or []]
        description = labels.get("description") or verdict_sentence(verdict)
        if rng.random() < self.error_rate:
            i = VERDICTS.index(verdict)
            verdict = VERDICTS[i + 1] if i == 0 else VERDICTS[i - 1]
            degs = [{"type": d["type"], "level": 3 - d["level"]} for d in degs]
            body = description.rsplit("Overall,", 1)[0].strip()
            description = f"{body} {verdict_sentence(verdict)}".strip()
        mine = {"verdict": verdict, "degradations": degs, "description": description}
        lead = float(rng.exponential(self.delay_s)) if self.delay_s > 0 else float(rng.uniform(5, 40))
        for pred in task.get("predictions") or []:
            theirs = result_to_labels(pred.get("result"))
            same = (theirs.verdict == verdict and
                    sorted((d["type"], d["level"]) for d in theirs.degradations) ==
                    sorted((d["type"], d["level"]) for d in degs))
            if same and not theirs.problems:
                return list(pred.get("result") or []), lead, pred.get("id")
        result = labels_to_result(mine)
        if degs and rng.random() < self.incomplete_rate:
            dropped = f"{LEVEL_PREFIX}{degs[0]['type']}"
            result = [r for r in result if r["from_name"] != dropped]
        return result, lead, None

    def annotate(self, task: Mapping[str, Any]) -> int:
        result, lead, parent = self.answer(task)
        if self.delay_s > 0:
            time.sleep(min(lead, 10 * self.delay_s))
        kwargs: dict[str, Any] = {"result": result, "lead_time": round(lead, 2)}
        if parent is not None:
            kwargs["parent_prediction"] = int(parent)
        ann = self.client.call(f"submit an annotation of task {task['id']} as {self.email}",
                               self.client.sdk.annotations.create, int(task["id"]), retry=False,
                               **kwargs)
        self.done += 1
        return int(ann.id)

    def next_task(self, project: int) -> dict | None:
        """The label stream's next task for this user in `project` (None: nothing left)."""
        return self.client.get_json(f"get the next task of project {project} for {self.email}",
                                    f"/api/projects/{project}/next", allow_404=True)

    def _already_full(self, task_id: int) -> bool:
        """The label stream's lock is not atomic on SQLite: two annotators asking at the same
        moment can get the same task. Look again just before answering."""
        t = self.client.get_json(f"re-read task {task_id}", f"/api/tasks/{task_id}",
                                 allow_404=True)
        if t is None:
            return True
        mine = any(a.get("completed_by") in (self._me(), {"id": self._me()})
                   for a in t.get("annotations") or [])
        return mine or int(t.get("total_annotations") or 0) >= max(1, int(t.get("overlap") or 1))

    def _me(self) -> int:
        if self._user_id is None:
            self._user_id = int(self.client.check()["id"])
        return self._user_id

    def work(self, projects: Iterable[int], *, max_tasks: int | None = None,
             stop: threading.Event | None = None) -> int:
        """Annotate from the label streams of `projects` until they are empty for this user."""
        count = 0
        for project in projects:
            seen: set[int] = set()
            while (max_tasks is None or count < max_tasks) and not (stop and stop.is_set()):
                task = self.next_task(project)
                if not task or int(task["id"]) in seen:
                    break  # empty queue, or a task this annotator cannot answer keeps coming
                seen.add(int(task["id"]))
                if (task.get("data") or {}).get("image_id") not in self.truth:
                    continue
                if self._already_full(int(task["id"])):
                    continue  # another annotator took the same task at the same moment
                self.annotate(task)
                count += 1
        return count


class SimulatedTeam:
    """N simulated annotators working in background threads until their queues are empty."""

    def __init__(self, annotators: list[SimulatedLSAnnotator]):
        self.annotators = annotators
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    @classmethod
    def create(cls, admin: LabelStudioClient, *, n: int, error_rate: float = 0.05,
               incomplete_rate: float = 0.0, delay_s: float = 0.0, seed: int = 0,
               truth: Mapping[str, dict] | None = None) -> SimulatedTeam:
        """Set up `n` annotator accounts (``medq-annotator-<k>@medq.local``) on `admin`'s server."""
        team = []
        for k in range(n):
            email = EMAIL.format(k=k)
            token = ensure_user(admin, email)
            client = LabelStudioClient(admin.url, token, timeout_s=admin.http.timeout.read or 30.0,
                                       retries=admin.retries, backoff_s=admin.backoff_s,
                                       backoff_max_s=admin.backoff_max_s)
            team.append(SimulatedLSAnnotator(email, client, dict(truth or {}), error_rate,
                                             incomplete_rate, delay_s, seed))
        return cls(team)

    def add_truth(self, truth: Mapping[str, dict]) -> None:
        for a in self.annotators:
            a.truth.update(truth)

    def _run(self, annotator: SimulatedLSAnnotator, projects: list[int]) -> None:
        try:
            annotator.work(projects, stop=self._stop)
        except BaseException as exc:  # noqa: BLE001 (reported through .errors, not lost)
            self.errors.append(exc)

    def start(self, projects: list[int]) -> None:
        """Start (or restart, when the previous run finished) one thread per annotator."""
        self._threads = [t for t in self._threads if t.is_alive()]
        if self._threads:
            return
        self._stop.clear()
        for a in self.annotators:
            t = threading.Thread(target=self._run, args=(a, list(projects)), daemon=True,
                                 name=f"ls-sim-{a.email}")
            t.start()
            self._threads.append(t)

    def run(self, projects: list[int]) -> int:
        """Work in the foreground (threads) until every queue is empty; returns annotations made."""
        before = sum(a.done for a in self.annotators)
        self.start(projects)
        self.join()
        if self.errors:
            raise self.errors[0]
        return sum(a.done for a in self.annotators) - before

    def join(self, timeout: float | None = None) -> None:
        for t in self._threads:
            t.join(timeout)

    def stop(self) -> None:
        self._stop.set()
        self.join(5.0)
        for a in self.annotators:
            a.client.close()
