"""The vllm backend without vLLM: log-probability parsing (letter spellings, missing-letter floor,
exact scoring), an injected in-memory transport, and the default HTTP transport against a tiny
local server that answers like ``vllm serve`` (fixture ``fake_vllm``, tests/fixtures/fake_vllm.py;
the client itself is tested in tests/storage/test_openai_chat.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from medq.engine.models import ModelError, create_model, load_model
from medq.engine.models.base import MCQ
from medq.engine.models.vllm import (
    FLOOR_MARGIN,
    VLLMModel,
    last_prompt_logprob,
    letter_logprobs,
    option_probs,
    parse_chat_completion,
    token_letter,
)


# ------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize("token, letter", [("A", "A"), (" A", "A"), ("A.", "A"), (" B)", "B"),
                                           ("(C", "C"), ("D:", "D"), ("\nA", "A"), ("a", None),
                                           ("An", None), ("E", None), ("", None), (" ", None)])
def test_token_letter(token, letter):
    assert token_letter(token) == letter


def test_option_probs_merges_spellings_and_renormalizes():
    top = [{"token": "A", "logprob": math.log(0.5)}, {"token": " A", "logprob": math.log(0.1)},
           {"token": "B", "logprob": math.log(0.2)}, {"token": "The", "logprob": math.log(0.15)},
           {"token": "C.", "logprob": math.log(0.05)}]
    p = option_probs(top, ["A", "B", "C"])
    assert sum(p.values()) == pytest.approx(1)
    assert p["A"] == pytest.approx(0.6 / 0.85)
    assert p["B"] == pytest.approx(0.2 / 0.85)
    # only the letters on the question count
    p2 = option_probs(top, ["A", "B"])
    assert p2["A"] == pytest.approx(0.6 / 0.8)


def test_missing_letters_get_the_floor():
    top = {"A": math.log(0.7), "Yes": math.log(0.2), "B": math.log(0.05)}
    found, floor = letter_logprobs(top, ["A", "B", "C", "D"])
    assert set(found) == {"A", "B"}
    assert floor == pytest.approx(math.log(0.05) - FLOOR_MARGIN)
    p = option_probs(top, ["A", "B", "C", "D"])
    assert p["C"] == p["D"] < p["B"] < p["A"]
    assert sum(p.values()) == pytest.approx(1)
    # an exact score replaces the floor
    p_exact = option_probs(top, ["A", "B", "C"], exact={"C": math.log(0.04)})
    assert p_exact["C"] == pytest.approx(0.04 / 0.79)
    # nothing that looks like a letter: uniform
    assert option_probs([("The", -0.1), ("It", -2.0)], ["A", "B"]) == {"A": 0.5, "B": 0.5}
    with pytest.raises(ModelError):
        option_probs(top, [])


def test_offline_logprob_objects_and_prompt_logprobs():
    class Logprob:  # the shape of vllm.sequence.Logprob
        def __init__(self, logprob, rank, decoded_token):
            self.logprob, self.rank, self.decoded_token = logprob, rank, decoded_token
    top = {65: Logprob(-0.2, 1, "A"), 33: Logprob(-1.9, 2, " B"), 12: Logprob(-3.0, 3, "Yes")}
    p = option_probs(top, ["A", "B"])
    assert p["A"] == pytest.approx(1 / (1 + math.exp(-1.7)))
    prompt_lps = [None, {5: {"logprob": -0.5, "rank": 1, "decoded_token": "user"}},
                  {9: {"logprob": -0.1, "rank": 1, "decoded_token": "No"},
                   66: {"logprob": -4.2, "rank": 7, "decoded_token": "C"}}]
    assert last_prompt_logprob(prompt_lps, "C") == -4.2
    assert last_prompt_logprob(prompt_lps) == -0.1
    assert last_prompt_logprob([]) is None


def test_parse_chat_completion():
    data = {"choices": [{"message": {"content": "B"}, "logprobs": {"content": [
        {"token": "B", "logprob": -0.1, "top_logprobs": [{"token": "B", "logprob": -0.1},
                                                         {"token": "A", "logprob": -2.4}]}]}}]}
    text, top = parse_chat_completion(data)
    assert text == "B" and top == [("B", -0.1), ("A", -2.4)]
    assert parse_chat_completion({"choices": [{"message": {"content": "hi"}, "logprobs": None}]}) == ("hi", [])
    with pytest.raises(ModelError, match="unexpected"):
        parse_chat_completion({"nothing": 1})


# ------------------------------------------------------------------------------ injected transport
class MemoryTransport:
    """An in-memory ChatTransport: records calls, answers "B" for adapters and "A" otherwise."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def served_model(self) -> str:
        self.calls.append(("served_model", {}))
        return "base"

    def load_adapter(self, name, path):
        self.calls.append(("load_adapter", {"name": name, "path": str(path)}))

    def chat(self, messages, *, model=None, max_tokens=1, logprobs=True, top_logprobs=20, **extra):
        self.calls.append(("chat", {"model": model, "max_tokens": max_tokens, "logprobs": logprobs,
                                    "top_logprobs": top_logprobs, **extra}))
        best = "A" if model == "base" else "B"
        top = [{"token": best, "logprob": math.log(0.7)}, {"token": "C", "logprob": math.log(0.2)}]
        return {"choices": [{"message": {"content": best},
                             "logprobs": {"content": [{**top[0], "top_logprobs": top}]}}]}


def test_injected_transport_needs_no_http(tmp_path):
    transport = MemoryTransport()
    model = VLLMModel("v0", client=transport)
    ans = model.answer([_q("ABC")])[0]
    assert ans.letter == "A" and ans.probs["B"] < ans.probs["C"] < ans.probs["A"]
    assert transport.calls[-1] == ("chat", {"model": "base", "max_tokens": 1, "logprobs": True,
                                            "top_logprobs": 20})
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    tuned = VLLMModel("round 1", client=transport, adapter_path=adapter)
    assert tuned.answer([_q("AB")])[0].letter == "B"
    assert ("load_adapter", {"name": "medq-round_1", "path": str(adapter)}) in transport.calls
    assert tuned.describe([np.zeros((8, 8), np.float32)])  # generation goes through chat too
    assert any(kind == "chat" and not kw["logprobs"] and kw["max_tokens"] == 256
               for kind, kw in transport.calls)


def _q(letters="ABC"):
    img = np.full((32, 32), 0.5, np.float32)
    return MCQ("q1", img, "How severe is the noise?", {k: t for k, t in zip(letters, ["None", "Mild", "Severe", "?"])})


def test_endpoint_answers_with_probabilities(fake_vllm):
    model = VLLMModel("v0", endpoint=fake_vllm.url + "/v1")
    ans = model.answer([_q("ABC")])[0]
    req = fake_vllm.requests[-1]
    assert req["model"] == "base-mllm" and req["max_tokens"] == 1 and req["temperature"] == 0.0
    assert req["logprobs"] is True and req["top_logprobs"] == 20
    content = req["messages"][0]["content"]
    assert content[0]["type"] == "image_url" and content[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert content[1]["text"].endswith("Answer directly only with the option letter from the given choices.")
    assert ans.letter == "A" and sum(ans.probs.values()) == pytest.approx(1)
    assert ans.probs["C"] < ans.probs["B"] < ans.probs["A"]   # C is missing: floor


def test_endpoint_exact_missing_letters(fake_vllm):
    model = VLLMModel("v0", endpoint=fake_vllm.url, served_model="base-mllm", exact_missing=True)
    ans = model.answer([_q("ABC")])[0]
    exact_req = fake_vllm.requests[-1]
    assert exact_req["continue_final_message"] is True and exact_req["add_generation_prompt"] is False
    assert exact_req["messages"][-1] == {"role": "assistant", "content": "C"}
    expected = np.array([0.6 + 0.0, 0.3, math.exp(-6.0)])
    assert ans.probs["C"] == pytest.approx(expected[2] / expected.sum())


def test_endpoint_lora_per_version_and_describe(fake_vllm, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    model = VLLMModel("round-2", endpoint=fake_vllm.url, served_model="base-mllm", adapter_path=adapter)
    ans = model.answer([_q("AB")])[0]
    assert fake_vllm.loaded == [{"lora_name": "medq-round-2", "lora_path": str(adapter)}]
    assert fake_vllm.requests[-1]["model"] == "medq-round-2" and ans.letter == "B"
    model.answer([_q("AB")])  # already loaded: fine
    assert len(fake_vllm.loaded) == 1
    text = model.describe([np.zeros((16, 16), np.float32)])[0]
    assert text.startswith("Mild noise is visible.")
    assert text.endswith(("is good.", "is usable.", "is reject."))
    comp = model.compare([(np.zeros((16, 16)), np.ones((16, 16)))], explain=False)[0]
    assert comp.better == "B" and len(fake_vllm.requests[-1]["messages"][0]["content"]) == 3
    # save / load keeps the adapter and the endpoint
    model.save(tmp_path / "saved")
    again = load_model(tmp_path / "saved")
    assert isinstance(again, VLLMModel) and again.lora_name == "medq-round-2"
    assert (tmp_path / "saved" / "adapter" / "adapter_config.json").is_file()
    assert again.answer([_q("AB")])[0].letter == "B"


def test_endpoint_model_errors_are_model_errors(fake_vllm):
    model = VLLMModel("v0", endpoint=fake_vllm.url, served_model="nope")
    with pytest.raises(ModelError, match="HTTP 404"):
        model.answer([_q("AB")])


def test_settings_build_the_endpoint_client_with_a_secret_key(tmp_path, monkeypatch):
    from pydantic import SecretStr

    from medq.settings import load_settings
    from medq.storage.openai_chat import VLLMEndpointClient
    monkeypatch.setenv("MEDQ_MODEL__VLLM_API_KEY", "sk-vllm-secret")
    settings = load_settings(workspace=tmp_path / "ws",
                             model={"backend": "vllm", "vllm_endpoint": "http://127.0.0.1:1/v1"})
    assert isinstance(settings.model.vllm_api_key, SecretStr)
    assert "sk-vllm-secret" not in repr(settings.model)
    assert "sk-vllm-secret" not in str(settings.public_dict())
    model = create_model(settings.model)
    assert isinstance(model._client, VLLMEndpointClient) and model.endpoint == "http://127.0.0.1:1/v1"
    assert model._client.base_url == "http://127.0.0.1:1"
    assert model._client._http._key.get_secret_value() == "sk-vllm-secret"
    assert "sk-vllm-secret" not in repr(model._client) and "sk-vllm-secret" not in repr(vars(model))
    model.save(tmp_path / "saved")
    assert "sk-vllm-secret" not in (tmp_path / "saved" / "model.json").read_text()


def test_offline_without_vllm_is_a_clear_error(tmp_path, settings):
    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is installed")
    except ImportError:
        pass
    model = VLLMModel("v0", path=tmp_path)
    with pytest.raises(ModelError, match="needs vLLM"):
        model.answer([_q("AB")])
    settings.model.backend = "vllm"
    with pytest.raises(ModelError, match="vllm_endpoint"):
        create_model(settings.model)
    settings.model.vllm_endpoint = "http://127.0.0.1:1"
    assert isinstance(create_model(settings.model), VLLMModel)


def test_offline_mode_never_takes_a_hub_name():
    """A hub id instead of a local folder would make vLLM download weights: refused first."""
    model = VLLMModel("v0", path="Qwen/Qwen2-VL-2B-Instruct")
    with pytest.raises(ModelError, match="needs a local model folder"):
        model.answer([_q("AB")])
