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

Both talk through the official ``openai`` SDK (one ``openai.OpenAI`` client per instance; it is
thread-safe, the judge sends concurrently). Its retry policy is the only one (declared once, here):
network failures, timeouts and HTTP 408/409/429/5xx are retried up to ``retries`` more times
with the SDK's exponential backoff (0.5 s doubling, at most 8 s, jittered; a ``Retry-After`` of
the server is honoured); other HTTP errors fail at once; each request may take ``timeout_s``
seconds. Errors name the URL and the HTTP status, never the key. The API key is a
:class:`pydantic.SecretStr`, handed to the SDK only when the client is built and masked in
``repr``.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr

from medq.engine.models.base import ModelError
from medq.engine.scoring.llm_judge import JudgeEndpointError, Messages

# what the SDK retries (openai._base_client._should_retry), for the messages
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
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


class _Transport:
    """One ``openai.OpenAI`` client and the error mapping of this module (module docstring).

    `error` is the exception class raised (the caller's domain error), `what` names the endpoint
    in messages ("judge endpoint"), `hint` is appended to a non-retried HTTP error; `api_root`
    is the server's ``/v1`` base URL."""

    def __init__(self, api_key: SecretStr | str | None, *, api_root: str, error: type[Exception],
                 what: str, hint: str = "", timeout_s: float, retries: int):
        self._key = _secret(api_key)
        self.api_root = api_root
        self.error = error
        self.what = what
        self.hint = hint
        self.timeout_s = timeout_s
        self.retries = retries
        self._sdk: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"_Transport(what={self.what!r}, api_key={self._key!r})"

    @property
    def sdk(self) -> Any:
        """The ``openai.OpenAI`` client (built on first use; building does no I/O)."""
        with self._lock:
            if self._sdk is None:
                import openai
                # the SDK wants a key; keyless servers (vllm serve without --api-key) ignore it
                key = self._key.get_secret_value() or "EMPTY"
                self._sdk = openai.OpenAI(api_key=key, base_url=self.api_root,
                                          timeout=self.timeout_s, max_retries=self.retries)
            return self._sdk

    def _short(self, text: str, limit: int = 200) -> str:
        text = " ".join((text or "").split())
        key = self._key.get_secret_value()
        if key:
            text = text.replace(key, "**********")  # a server that echoes the header
        return text if len(text) <= limit else text[:limit] + "..."

    def call(self, url: str, fn: Callable[[Any], T], *,
             bad_reply: str = "a reply that is not JSON") -> T:
        """``fn(sdk)`` (one SDK request, retried by the SDK), with its failures as `error`."""
        import openai
        attempts = self.retries + 1
        try:
            return fn(self.sdk)
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status in RETRY_STATUS:
                raise self.error(f"{self.what} {url} failed after {attempts} attempt(s): "
                                 f"HTTP {status}") from None
            raise self.error(f"{self.what} {url} answered HTTP {status}: "
                             f"{self._short(exc.response.text)}{self.hint}") from None
        except openai.APITimeoutError:
            raise self.error(f"{self.what} {url} failed after {attempts} attempt(s): timeout "
                             f"({self.timeout_s:g} s per request)") from None
        except openai.APIConnectionError as exc:
            cause = type(exc.__cause__).__name__ if exc.__cause__ else "connection error"
            raise self.error(f"{self.what} {url} failed after {attempts} attempt(s): "
                             f"{cause}") from None
        except (openai.APIResponseValidationError, ValueError, KeyError, IndexError,
                TypeError, AttributeError):
            raise self.error(f"{self.what} {url}: {bad_reply}") from None


class OpenAIChatClient:
    """The LLM judge's client (module docstring). `retries` extra attempts for transient
    failures (the SDK's backoff); `timeout_s` seconds per request."""

    def __init__(self, base_url: str, model: str, api_key: SecretStr | str | None = None, *,
                 timeout_s: float = 60.0, retries: int = 3, max_tokens: int = 64):
        self.url = chat_completions_url(base_url)
        self.model = model
        self.max_tokens = max_tokens
        self._http = _Transport(api_key, api_root=self.url.removesuffix("/chat/completions"),
                                error=JudgeEndpointError, what="judge endpoint",
                                hint=" (check judge.model and judge.api_key)", timeout_s=timeout_s,
                                retries=retries)

    def __repr__(self) -> str:
        return (f"OpenAIChatClient(url={self.url!r}, model={self.model!r}, "
                f"api_key={self._http._key!r})")

    def complete(self, messages: Messages) -> str:
        """Text of the first choice for `messages` (temperature 0)."""
        content = self._http.call(self.url, lambda sdk: sdk.chat.completions.create(
            model=self.model, messages=messages, temperature=0,
            max_tokens=self.max_tokens).choices[0].message.content,
            bad_reply="a reply that is not a chat completion")
        return "" if content is None else str(content)


class VLLMEndpointClient:
    """Client of a running ``vllm serve`` (module docstring): `base_url` is the server
    ("http://h:8000", with or without "/v1"); `model` the served model name (None: the first of
    ``GET /v1/models``)."""

    def __init__(self, base_url: str, model: str | None = None,
                 api_key: SecretStr | str | None = None, *, timeout_s: float = 120.0,
                 retries: int = 2):
        self.base_url = api_root(base_url)
        self.model = model
        self._http = _Transport(api_key, api_root=f"{self.base_url}/v1", error=ModelError,
                                what="vLLM endpoint",
                                hint=" (check model.vllm_endpoint, model.vllm_model and "
                                     "model.vllm_api_key)",
                                timeout_s=timeout_s, retries=retries)

    def __repr__(self) -> str:
        return (f"VLLMEndpointClient(base_url={self.base_url!r}, model={self.model!r}, "
                f"api_key={self._http._key!r})")

    def served_model(self) -> str:
        """The configured model name, else the first one the server lists (asked once)."""
        if self.model:
            return self.model
        try:
            self.model = self._http.call(f"{self.base_url}/v1/models",
                                         lambda sdk: str(sdk.models.list().data[0].id),
                                         bad_reply="a reply that is not a model list")
        except ModelError as exc:
            raise ModelError(f"cannot find the served model (set model.vllm_model): {exc}") from exc
        return self.model

    def chat(self, messages: list[dict], *, model: str | None = None, max_tokens: int = 1,
             logprobs: bool = True, top_logprobs: int = 20, **extra: Any) -> dict:
        """The raw chat completion JSON (temperature 0; `extra` fields go into the request)."""
        options: dict[str, Any] = {"model": model or self.served_model(), "messages": messages,
                                   "max_tokens": max_tokens, "temperature": 0.0}
        if logprobs:
            options.update({"logprobs": True, "top_logprobs": top_logprobs})
        if extra:  # vLLM's own fields (prompt_logprobs, guided_choice, ...)
            options["extra_body"] = extra
        reply = self._http.call(f"{self.base_url}/v1/chat/completions",
                                lambda sdk: sdk.chat.completions.create(**options),
                                bad_reply="a reply that is not a chat completion")
        return reply.model_dump(mode="json")

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Ask the server to load a LoRA adapter under `name` (needs a server started with
        ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``). Already loaded is fine."""
        try:
            # a raw post (the SDK has no method for it); vLLM answers plain text on success
            self._http.call(f"{self.base_url}/v1/load_lora_adapter",
                            lambda sdk: sdk.post("/load_lora_adapter",
                                                 body={"lora_name": name, "lora_path": str(path)},
                                                 cast_to=str))
        except ModelError as exc:
            if "already" not in str(exc).lower():
                raise
