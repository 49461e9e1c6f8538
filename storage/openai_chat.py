"""Client for any OpenAI-compatible chat endpoint (OpenAI, vLLM ``serve``, llama.cpp, ...).

``OpenAIChatClient(base_url, model, api_key).complete(messages) -> str`` posts to
``<base>/v1/chat/completions`` with temperature 0 and returns the first choice's text. Network
failures, timeouts, 429 and 5xx are retried with exponential backoff; other HTTP errors fail at
once. Failures raise :class:`medq.engine.scoring.llm_judge.JudgeEndpointError` naming the URL and
status, never the key. The API key is a :class:`pydantic.SecretStr`: it is read only to build the
Authorization header and is masked in ``repr``.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

import requests
from pydantic import SecretStr

from medq.engine.scoring.llm_judge import JudgeEndpointError, Messages

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def chat_completions_url(base_url: str) -> str:
    """Normalize `base_url` ("http://h:8000", ".../v1" or the full path) to the completions URL."""
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise JudgeEndpointError(f"judge endpoint {base_url!r} is not an http(s) URL")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


class OpenAIChatClient:
    """See module docstring. `retries` extra attempts for transient failures; `backoff_s` first
    wait (doubled per attempt); `timeout_s` per request."""

    def __init__(self, base_url: str, model: str, api_key: SecretStr | str | None = None, *,
                 timeout_s: float = 60.0, retries: int = 3, backoff_s: float = 1.0,
                 max_tokens: int = 64, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.url = chat_completions_url(base_url)
        self.model = model
        self._key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key or "")
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_tokens = max_tokens
        self._shared = session
        self._local = threading.local()  # one Session per thread: judges send concurrently
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"OpenAIChatClient(url={self.url!r}, model={self.model!r}, api_key={self._key!r})"

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

    def complete(self, messages: Messages) -> str:
        """Text of the first choice for `messages` (temperature 0)."""
        payload = {"model": self.model, "messages": messages, "temperature": 0,
                   "max_tokens": self.max_tokens}
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                resp = self._session().post(self.url, json=payload, headers=self._headers(),
                                          timeout=self.timeout_s)
            except requests.RequestException as exc:
                problem = f"{type(exc).__name__}"
                continue
            if resp.status_code in RETRY_STATUS:
                problem = f"HTTP {resp.status_code}"
                continue
            if resp.status_code >= 400:
                raise JudgeEndpointError(
                    f"judge endpoint {self.url} answered HTTP {resp.status_code}: "
                    f"{_short(resp.text)} (check judge.model and judge.api_key)")
            try:
                data = resp.json()
                content = data["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                problem = "a reply that is not a chat completion"
                continue
            return "" if content is None else str(content)
        raise JudgeEndpointError(f"judge endpoint {self.url} failed after {self.retries + 1} "
                                 f"attempt(s): {problem}")


def _short(text: str, limit: int = 200) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit] + "..."
