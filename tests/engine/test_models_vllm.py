"""The vllm backend without vLLM: log-probability parsing (letter spellings, missing-letter floor,
exact scoring) and the endpoint client against a tiny local HTTP server that answers like
``vllm serve``."""
from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from medq.engine.models import ModelError, create_model, load_model
from medq.engine.models.base import MCQ
from medq.engine.models.vllm import (
    FLOOR_MARGIN,
    EndpointClient,
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


# ------------------------------------------------------------------------------ fake vllm serve
class FakeVLLM:
    """Answers /v1/models, /v1/chat/completions and /v1/load_lora_adapter like vLLM. The first
    token distribution depends on the served model name, so adapters are observable."""

    def __init__(self):
        self.requests: list[dict] = []
        self.loaded: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, obj):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/v1/models":
                    return self._send(200, {"object": "list", "data": [{"id": "base-mllm", "object": "model"}]})
                self._send(404, {"error": "not found"})

            def do_POST(self):
                data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/v1/load_lora_adapter":
                    if any(x["lora_name"] == data["lora_name"] for x in outer.loaded):
                        return self._send(400, {"error": f"The lora adapter '{data['lora_name']}' has already been loaded."})
                    outer.loaded.append(data)
                    return self._send(200, {"status": "ok"})
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                outer.requests.append(data)
                if data["model"] not in ["base-mllm"] + [x["lora_name"] for x in outer.loaded]:
                    return self._send(404, {"error": f"The model `{data['model']}` does not exist."})
                if data.get("continue_final_message"):
                    letter = data["messages"][-1]["content"]
                    return self._send(200, {"choices": [{"message": {"content": ""}}],
                                            "prompt_logprobs": [None, {"7": {"logprob": -6.0, "rank": 40,
                                                                             "decoded_token": letter}}]})
                if not data.get("logprobs"):
                    return self._send(200, {"choices": [{"message": {"role": "assistant",
                                                                     "content": "Mild noise is visible."}}]})
                tuned = data["model"] != "base-mllm"
                top = [{"token": "B" if tuned else "A", "logprob": math.log(0.6)},
                       {"token": " A" if tuned else " B", "logprob": math.log(0.3)},
                       {"token": "The", "logprob": math.log(0.05)}]
                self._send(200, {"choices": [{"message": {"content": top[0]["token"]}, "logprobs": {
                    "content": [{"token": top[0]["token"], "logprob": top[0]["logprob"],
                                 "top_logprobs": top[:data.get("top_logprobs", 20)]}]}}]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    with FakeVLLM() as f:
        yield f


def _q(letters="ABC"):
    img = np.full((32, 32), 0.5, np.float32)
    return MCQ("q1", img, "How severe is the noise?", {k: t for k, t in zip(letters, ["None", "Mild", "Severe", "?"])})


def test_endpoint_answers_with_probabilities(fake):
    model = VLLMModel("v0", endpoint=fake.url + "/v1")
    ans = model.answer([_q("ABC")])[0]
    req = fake.requests[-1]
    assert req["model"] == "base-mllm" and req["max_tokens"] == 1 and req["temperature"] == 0.0
    assert req["logprobs"] is True and req["top_logprobs"] == 20
    content = req["messages"][0]["content"]
    assert content[0]["type"] == "image_url" and content[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert content[1]["text"].endswith("Answer directly only with the option letter from the given choices.")
    assert ans.letter == "A" and sum(ans.probs.values()) == pytest.approx(1)
    assert ans.probs["C"] < ans.probs["B"] < ans.probs["A"]   # C is missing: floor


def test_endpoint_exact_missing_letters(fake):
    model = VLLMModel("v0", endpoint=fake.url, served_model="base-mllm", exact_missing=True)
    ans = model.answer([_q("ABC")])[0]
    exact_req = fake.requests[-1]
    assert exact_req["continue_final_message"] is True and exact_req["add_generation_prompt"] is False
    assert exact_req["messages"][-1] == {"role": "assistant", "content": "C"}
    expected = np.array([0.6 + 0.0, 0.3, math.exp(-6.0)])
    assert ans.probs["C"] == pytest.approx(expected[2] / expected.sum())


def test_endpoint_lora_per_version_and_describe(fake, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    model = VLLMModel("round-2", endpoint=fake.url, served_model="base-mllm", adapter_path=adapter)
    ans = model.answer([_q("AB")])[0]
    assert fake.loaded == [{"lora_name": "medq-round-2", "lora_path": str(adapter)}]
    assert fake.requests[-1]["model"] == "medq-round-2" and ans.letter == "B"
    model.answer([_q("AB")])  # already loaded: fine
    assert len(fake.loaded) == 1
    text = model.describe([np.zeros((16, 16), np.float32)])[0]
    assert text.startswith("Mild noise is visible.")
    assert text.endswith(("is good.", "is usable.", "is reject."))
    comp = model.compare([(np.zeros((16, 16)), np.ones((16, 16)))], explain=False)[0]
    assert comp.better == "B" and len(fake.requests[-1]["messages"][0]["content"]) == 3
    # save / load keeps the adapter and the endpoint
    model.save(tmp_path / "saved")
    again = load_model(tmp_path / "saved")
    assert isinstance(again, VLLMModel) and again.lora_name == "medq-round-2"
    assert (tmp_path / "saved" / "adapter" / "adapter_config.json").is_file()
    assert again.answer([_q("AB")])[0].letter == "B"


def test_endpoint_errors(fake):
    client = EndpointClient(fake.url, model="nope", retries=0)
    with pytest.raises(ModelError, match="404"):
        client.chat([{"role": "user", "content": "hi"}])
    dead = EndpointClient("http://127.0.0.1:9", model="x", retries=0, timeout_s=2)
    with pytest.raises(ModelError, match="no answer"):
        dead.chat([{"role": "user", "content": "hi"}])


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
