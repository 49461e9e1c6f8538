"""A retrying connection to one Label Studio server (label-studio-sdk 2.x plus a few raw endpoints).

Every call goes through :meth:`LabelStudioClient.call`: transport failures (server down, slow,
connection reset) and HTTP 429 / 5xx are retried with exponential backoff
(``labelstudio.retries`` / ``backoff_s`` / ``backoff_max_s``), then end in one
:class:`LabelStudioError` naming the server URL and what was being done. A refused token is a
:class:`LabelStudioAuthError` at once (retrying cannot help). Other 4xx answers are not retried.

The SDK's own retries are switched off so that the policy above is the only one.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx

from medq.errors import MedQError, require_extra

require_extra("label_studio_sdk", "labelstudio", "the Label Studio annotation backend")
from label_studio_sdk import LabelStudio  # noqa: E402  (after the clear missing-extra error)
from label_studio_sdk.core.api_error import ApiError  # noqa: E402

T = TypeVar("T")


class LabelStudioError(MedQError):
    """Label Studio could not do what was asked; the message names the server and the step."""


class LabelStudioAuthError(LabelStudioError):
    """The server refused the API token."""


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("detail", "validation_errors", "message", "errors"):
            if body.get(key):
                return str(body[key])[:300]
    return str(body)[:300]


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, ApiError):
        return exc.status_code is not None and (exc.status_code == 429 or exc.status_code >= 500)
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        return code == 429 or code >= 500
    return False


def _status(exc: BaseException) -> int | None:
    if isinstance(exc, ApiError):
        return exc.status_code
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code
    return None


def _body(exc: BaseException) -> Any:
    if isinstance(exc, ApiError):
        return exc.body
    if isinstance(exc, httpx.HTTPStatusError):
        try:
            return exc.response.json()
        except ValueError:
            return exc.response.text[:300]
    return None


class LabelStudioClient:
    """SDK client + raw JSON requests against `url` with token `token` (a legacy API token)."""

    def __init__(self, url: str, token: str, *, timeout_s: float = 30.0, retries: int = 4,
                 backoff_s: float = 0.5, backoff_max_s: float = 8.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise LabelStudioError(f"labelstudio.url must start with http:// or https://, got {url!r}")
        if not token:
            raise LabelStudioAuthError(f"no API token for Label Studio at {self.url}: set "
                                       "labelstudio.token (MEDQ_LABELSTUDIO__TOKEN)")
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._sleep = sleep
        self.http = httpx.Client(base_url=self.url, timeout=timeout_s, follow_redirects=True,
                                 headers={"Authorization": f"Token {token}"})
        self.sdk = LabelStudio(base_url=self.url, api_key=token, timeout=timeout_s, max_retries=0,
                               httpx_client=httpx.Client(timeout=timeout_s, follow_redirects=True))

    # -- retry policy ---------------------------------------------------------------------------
    def call(self, what: str, fn: Callable[..., T], *args: Any, retry: bool = True,
             **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` under the retry policy; `what` names the step in errors."""
        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except (ApiError, httpx.HTTPError) as exc:
                status = _status(exc)
                if status in (401, 403):
                    raise self._auth_error(what, exc) from exc
                if not retry or not _transient(exc) or attempt >= self.retries:
                    raise self._error(what, exc, attempt + 1) from exc
                self._sleep(min(self.backoff_s * (2 ** attempt), self.backoff_max_s))
                attempt += 1

    def _auth_error(self, what: str, exc: BaseException) -> LabelStudioAuthError:
        detail = _detail(_body(exc))
        hint = ("enable legacy tokens in the organization (Organization > API Tokens Settings) or "
                "restart infra/labelstudio.sh, which enables them"
                if "legacy" in detail.lower() else
                "set labelstudio.token (MEDQ_LABELSTUDIO__TOKEN) to the Access Token shown under "
                "Account & Settings")
        return LabelStudioAuthError(f"Label Studio at {self.url} refused the API token while trying "
                                    f"to {what} (HTTP {_status(exc)}: {detail}); {hint}")

    def _error(self, what: str, exc: BaseException, tries: int) -> LabelStudioError:
        if isinstance(exc, httpx.TransportError):
            kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "is not reachable"
            return LabelStudioError(
                f"Label Studio at {self.url} {kind} while trying to {what} "
                f"({type(exc).__name__}: {exc or 'no answer'}; {tries} tries); start it with "
                "`medq services up labelstudio` or fix labelstudio.url")
        return LabelStudioError(f"Label Studio at {self.url} could not {what}: HTTP {_status(exc)}: "
                                f"{_detail(_body(exc))}" + (f" ({tries} tries)" if tries > 1 else ""))

    # -- raw JSON -------------------------------------------------------------------------------
    def get_json(self, what: str, path: str, params: dict | None = None, *,
                 allow_404: bool = False) -> Any:
        def go():
            resp = self.http.get(path, params=params)
            if allow_404 and resp.status_code == 404:
                return None
            resp.raise_for_status()
            return resp.json()
        return self.call(what, go)

    def check(self) -> dict:
        """Who the token belongs to (also proves the server answers and the token works)."""
        return self.get_json("check the API token", "/api/current-user/whoami")

    def list_tasks(self, what: str, project: int, *, filters: list[dict] | None = None,
                   include: str = "id", fields: str = "task_only", page_size: int = 1000,
                   conjunction: str = "and") -> Iterator[dict]:
        """Tasks of `project` through the Data Manager API, page by page (all pages)."""
        query = {"filters": {"conjunction": conjunction, "items": filters or []}}
        page = 1
        while True:
            data = self.get_json(what, "/api/tasks", {
                "project": project, "page": page, "page_size": page_size, "fields": fields,
                "include": include, "query": json.dumps(query)}, allow_404=True)
            tasks = (data or {}).get("tasks") or []
            yield from tasks
            total = (data or {}).get("total", 0)
            if not tasks or page * page_size >= total:
                return
            page += 1

    def close(self) -> None:
        self.http.close()
