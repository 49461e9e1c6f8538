"""Clients for OpenAI-compatible chat endpoints (OpenAI, vLLM ``serve``, llama.cpp, ...).

- :class:`OpenAIChatClient` (the LLM description judge):
  ``OpenAIChatClient(base_url, model, api_key).complete(messages) -> str`` posts to
  ``<base>/v1/chat/completions`` with temperature 0 and returns the first choice's text. Failures
  raise :class:`medq.engine.scoring.llm_judge.JudgeEndpointError`.
- :class:`VLLMEndpointClient` (the ``vllm`` model backend's transport, the
  ``medq.engine.models.vllm.ChatTransport`` protocol): ``chat(messages, logprobs=..., ...)`` returns
  the raw chat completion JSON, ``served_model()`` asks ``GET /v1/models`` when no model name is
  configured, ``load_adapter(name, path)`` posts ``/v1/load_lora_adapter`` ("already loaded" is
  fine). Failures raise :class:`medq.engine.models.base.ModelError`.

Both send every request through one private transport: network failures, timeouts, a reply that
is not the expected JSON, and HTTP 408/409/425/429/5xx (:data:`RETRY_STATUS`) are retried with
exponential backoff (``backoff_s``, doubled per attempt) up to ``retries`` more times; other HTTP
errors fail at once. Errors name the URL and the HTTP status, never the key. The API key is a
:class:`pydantic.SecretStr`: it is read only to build the Authorization header and is masked in
``repr``.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests
from pydantic import SecretStr

from medq.engine.models.base import ModelError
from medq.engine.scoring.llm_judge import JudgeEndpointError, Messages

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
T = TypeVar("T")


def _http_url(base_url: str, error: type[Exception], what: str) -> str:
    url = str(base_url).strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise error(f"{what} {base_url!r} is not an http(s) URL")
    return url


def chat_completions_url(base_url: str) -> str:
    """Normalize `base_url` ("http://h:8000", ".../v1" or the full path) to the completions URL."""
    url = _http_url(base_url, JudgeEndpointError, "judge endpoint")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


def api_root(base_url: str) -> str:
    """The server root of a vLLM endpoint given as "http://h:8000", ".../v1" or the completions URL
    (the ``/v1/...`` paths are appended to it)."""
    url = _http_url(base_url, ModelError, "vLLM endpoint")
    return url.removesuffix("/chat/completions").removesuffix("/v1")


def _secret(api_key: SecretStr | str | None) -> SecretStr:
    return api_key if isinstance(api_key, SecretStr) else SecretStr(api_key or "")


def _json(resp: requests.Response) -> Any:
    return resp.json()


class _Transport:
    """The one request/retry loop of this module (see module docstring).

    `error` is the exception class raised (the caller's domain error), `what` names the endpoint
    in messages ("judge endpoint"), `hint` is appended to a non-retried HTTP error."""

    def __init__(self, api_key: SecretStr | str | None, *, error: type[Exception], what: str,
                 hint: str = "", timeout_s: float, retries: int, backoff_s: float,
                 session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self._key = _secret(api_key)
        self.error = error
        self.what = what
        self.hint = hint
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._shared = session
        self._local = threading.local()  # one Session per thread: judges send concurrently
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"_Transport(what={self.what!r}, api_key={self._key!r})"

    def _session(self) -> requests.Session:
        if self._shared is not None:
            return self._shared
        if getattr(self._local, "session", None) is None:
            self._local.session = requests.Session()
        return self._local.session

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = self._key.get_secret_value()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _short(self, text: str, limit: int = 200) -> str:
        text = " ".join((text or "").split())
        key = self._key.get_secret_value()
        if key:
            text = text.replace(key, "**********")  # a server that echoes the header
        return text if len(text) <= limit else text[:limit] + "..."

    def request(self, method: str, url: str, payload: dict | None = None, *,
                parse: Callable[[requests.Response], T] = _json,
                bad_reply: str = "a reply that is not JSON") -> T:
        """`parse` of the response to ``method url`` (JSON body `payload`), retried as above; a
        `parse` that raises ValueError/KeyError/IndexError/TypeError counts as `bad_reply`."""
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                resp = self._session().request(method, url, json=payload, headers=self._headers(),
                                               timeout=self.timeout_s)
            except requests.RequestException as exc:
                problem = type(exc).__name__
                continue
            if resp.status_code in RETRY_STATUS:
                problem = f"HTTP {resp.status_code}"
                continue
            if resp.status_code >= 400:
                raise self.error(f"{self.what} {url} answered HTTP {resp.status_code}: "
                                 f"{self._short(resp.text)}{self.hint}")
            try:
                return parse(resp)
            except (ValueError, KeyError, IndexError, TypeError):
                problem = bad_reply
        raise self.error(f"{self.what} {url} failed after {self.retries + 1} attempt(s): {problem}")


class OpenAIChatClient:
    """The LLM judge's client (module docstring). `retries` extra attempts for transient
    failures; `backoff_s` first wait (doubled per attempt); `timeout_s` per request."""

    def __init__(self, base_url: str, model: str, api_key: SecretStr | str | None = None, *,
                 timeout_s: float = 60.0, retries: int = 3, backoff_s: float = 1.0,
                 max_tokens: int = 64, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.url = chat_completions_url(base_url)
        self.model = model
        self.max_tokens = max_tokens
        self._http = _Transport(api_key, error=JudgeEndpointError, what="judge endpoint",
                                hint=" (check judge.model and judge.api_key)", timeout_s=timeout_s,
                                retries=retries, backoff_s=backoff_s, session=session, sleep=sleep)

    def __repr__(self) -> str:
        return (f"OpenAIChatClient(url={self.url!r}, model={self.model!r}, "
                f"api_key={self._http._key!r})")

    def complete(self, messages: Messages) -> str:
        """Text of the first choice for `messages` (temperature 0)."""
        payload = {"model": self.model, "messages": messages, "temperature": 0,
                   "max_tokens": self.max_tokens}
        content = self._http.request("POST", self.url, payload, parse=_first_choice_text,
                                     bad_reply="a reply that is not a chat completion")
        return "" if content is None else str(content)


def _first_choice_text(resp: requests.Response) -> Any:
    return resp.json()["choices"][0]["message"]["content"]


def _json_object(resp: requests.Response) -> dict:
    data = resp.json()
    if not isinstance(data, dict):
        raise TypeError("not a JSON object")
    return data


class VLLMEndpointClient:
    """Client of a running ``vllm serve`` (module docstring): `base_url` is the server
    ("http://h:8000", with or without "/v1"); `model` the served model name (None: the first of
    ``GET /v1/models``)."""

    def __init__(self, base_url: str, model: str | None = None,
                 api_key: SecretStr | str | None = None, *, timeout_s: float = 120.0,
                 retries: int = 2, backoff_s: float = 0.5, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.base_url = api_root(base_url)
        self.model = model
        self._http = _Transport(api_key, error=ModelError, what="vLLM endpoint",
                                hint=" (check model.vllm_endpoint, model.vllm_model and "
                                     "model.vllm_api_key)",
                                timeout_s=timeout_s, retries=retries, backoff_s=backoff_s,
                                session=session, sleep=sleep)

    def __repr__(self) -> str:
        return (f"VLLMEndpointClient(base_url={self.base_url!r}, model={self.model!r}, "
                f"api_key={self._http._key!r})")

    def served_model(self) -> str:
        """The configured model name, else the first one the server lists (asked once)."""
        if self.model:
            return self.model
        try:
            self.model = self._http.request("GET", f"{self.base_url}/v1/models",
                                            parse=lambda r: str(r.json()["data"][0]["id"]),
                                            bad_reply="a reply that is not a model list")
        except ModelError as exc:
            raise ModelError(f"cannot find the served model (set model.vllm_model): {exc}") from exc
        return self.model

    def chat(self, messages: list[dict], *, model: str | None = None, max_tokens: int = 1,
             logprobs: bool = True, top_logprobs: int = 20, **extra: Any) -> dict:
        """The raw chat completion JSON (temperature 0; `extra` fields go into the request)."""
        payload = {"model": model or self.served_model(), "messages": messages,
                   "max_tokens": max_tokens, "temperature": 0.0, **extra}
        if logprobs:
            payload.update({"logprobs": True, "top_logprobs": top_logprobs})
        return self._http.request("POST", f"{self.base_url}/v1/chat/completions", payload,
                                  parse=_json_object,
                                  bad_reply="a reply that is not a chat completion")

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Ask the server to load a LoRA adapter under `name` (needs a server started with
        ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``). Already loaded is fine."""
        try:
            # vLLM answers plain text on success: the body is not read.
            self._http.request("POST", f"{self.base_url}/v1/load_lora_adapter",
                               {"lora_name": name, "lora_path": str(path)}, parse=lambda r: None)
        except ModelError as exc:
            if "already" not in str(exc).lower():
                raise
