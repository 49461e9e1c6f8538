"""The OpenAI-compatible HTTP clients of medq.storage.openai_chat: the judge's OpenAIChatClient and
the vllm backend's VLLMEndpointClient talk through the openai SDK, whose retry policy is the only
one (retries 5xx, fails at once on other 4xx); errors name the URL and status but never the key,
repr masks the key. Against local
fake servers: ``fake_openai`` (tests/fixtures/fake_openai.py, scripted statuses) and
``fake_vllm`` (tests/fixtures/fake_vllm.py, answers like ``vllm serve``)."""
from __future__ import annotations

import pytest
from pydantic import SecretStr

from medq.engine.models.base import ModelError
from medq.engine.scoring import JudgeEndpointError
from medq.storage.openai_chat import (
    OpenAIChatClient,
    VLLMEndpointClient,
    api_root,
    chat_completions_url,
)

KEY = "sk-test-secret-123"
HI = [{"role": "user", "content": "hi"}]


def _judge(url, **kw):
    return OpenAIChatClient(url, "judge-model", SecretStr(KEY), timeout_s=5, **kw)


def _vllm(url, **kw):
    kw.setdefault("model", "base-mllm")
    return VLLMEndpointClient(url, api_key=SecretStr(KEY), timeout_s=5, **kw)


def _send(client):
    """One chat request through either client, returning the reply text."""
    if isinstance(client, OpenAIChatClient):
        return client.complete(HI)
    return client.chat(HI, logprobs=False)["choices"][0]["message"]["content"]


CLIENTS = [pytest.param(_judge, JudgeEndpointError, id="judge"),
           pytest.param(_vllm, ModelError, id="vllm")]


def test_urls_are_normalised():
    for base in ("http://h:8000", "http://h:8000/", "http://h:8000/v1", " http://h:8000/v1/ ",
                 "http://h:8000/v1/chat/completions"):
        assert chat_completions_url(base) == "http://h:8000/v1/chat/completions"
        assert api_root(base) == "http://h:8000"
    with pytest.raises(JudgeEndpointError, match="not an http"):
        chat_completions_url("h:8000")
    with pytest.raises(ModelError, match="not an http"):
        VLLMEndpointClient("ftp://h")


@pytest.mark.parametrize("make, error", CLIENTS)
def test_503_is_retried_with_backoff_then_succeeds(fake_openai, make, error):
    url, server = fake_openai
    server.script = [("status", 503), ("status", 502), ("ok", "fine")]
    client = make(url, retries=2)
    assert _send(client) == "fine"
    assert len(server.seen) == 3  # the SDK's retries (0.5 s, then 1 s, jittered)
    assert all(s["auth"] == f"Bearer {KEY}" for s in server.seen)
    assert all(s["path"] == "/v1/chat/completions" for s in server.seen)
    server.script = [("status", 503)] * 3
    with pytest.raises(error, match="failed after 3 attempt.*HTTP 503") as err:
        _send(client)
    assert url in str(err.value) and KEY not in str(err.value)


@pytest.mark.parametrize("make, error", CLIENTS)
def test_401_fails_at_once_naming_url_and_status_not_the_key(fake_openai, make, error):
    url, server = fake_openai
    server.script = [("status", 401)]
    client = make(url, retries=3)
    with pytest.raises(error, match="HTTP 401") as err:
        _send(client)
    assert len(server.seen) == 1
    assert f"{url}/v1/chat/completions" in str(err.value)
    assert KEY not in str(err.value) and KEY not in repr(err.value)


@pytest.mark.parametrize("make, error", CLIENTS)
def test_repr_masks_the_key(make, error):
    client = make("http://127.0.0.1:9")
    assert KEY not in repr(client) and "**********" in repr(client)
    assert KEY not in repr(client._http) and KEY not in str(vars(client))


def test_a_plain_str_key_is_kept_as_a_secret():
    for client in (OpenAIChatClient("http://h", "m", KEY), VLLMEndpointClient("http://h", api_key=KEY)):
        assert isinstance(client._http._key, SecretStr) and KEY not in repr(client)


@pytest.mark.parametrize("make, error", CLIENTS)
def test_unreachable_endpoint_is_a_clear_error(make, error):
    dead = make("http://127.0.0.1:9", retries=1)  # nothing listens on port 9
    with pytest.raises(error, match="127.0.0.1:9.*failed after 2 attempt"):
        _send(dead)


def test_vllm_models_adapters_and_logprobs(fake_vllm):
    client = VLLMEndpointClient(fake_vllm.url + "/v1", api_key=KEY, timeout_s=5)
    assert client.served_model() == "base-mllm"
    data = client.chat(HI, top_logprobs=2, prompt_logprobs=1)
    req = fake_vllm.requests[-1]
    assert req["model"] == "base-mllm" and req["max_tokens"] == 1 and req["temperature"] == 0
    assert req["logprobs"] is True and req["top_logprobs"] == 2 and req["prompt_logprobs"] == 1
    top = data["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    assert [t["token"] for t in top] == ["A", " B"]
    client.load_adapter("medq-v1", "/tmp/adapter")  # plain-text success reply
    client.load_adapter("medq-v1", "/tmp/adapter")  # HTTP 400 "already been loaded": fine
    assert fake_vllm.loaded == [{"lora_name": "medq-v1", "lora_path": "/tmp/adapter"}]
    assert client.chat(HI, model="medq-v1")["choices"][0]["message"]["content"] == "B"
    assert set(fake_vllm.auth) == {f"Bearer {KEY}"}  # GET /v1/models is authorised too
    with pytest.raises(ModelError, match="HTTP 404.*does not exist"):
        client.chat(HI, model="nope")


def test_vllm_served_model_discovery_failure_is_a_model_error(fake_openai):
    url, _ = fake_openai  # answers no GET: /v1/models is HTTP 501
    client = VLLMEndpointClient(url, timeout_s=5, retries=0)
    with pytest.raises(ModelError, match="cannot find the served model.*HTTP 501"):
        client.served_model()
