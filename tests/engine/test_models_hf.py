"""The hf backend on a tiny random-weight Qwen2-VL built from a config (no download): option
probabilities from letter logits, assistant-only labels, a LoRA fine-tune whose loss goes down,
adapter save / reload with identical probabilities, the base version left unchanged."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medq.engine.models import ModelError, create_model, load_model
from medq.engine.models.base import MCQ, LabelledImage
from medq.engine.models.hf import (
    _RUNTIMES,
    HFModel,
    assistant_turn,
    label_description,
    letter_probs,
    letter_token_ids,
    mcq_prompt,
    sft_records,
    user_turn,
)
from medq.engine.taxonomy import VERDICTS
from tests.engine.lite_world import make_world


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's ops are too small for two OpenMP threads to pay off on a shared 2-core
    machine (barrier waits dominate); one thread keeps this module fast."""
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    from medq.engine.models.hf_random import build_random_qwen2vl
    path = tmp_path_factory.mktemp("tiny-qwen2vl")
    build_random_qwen2vl(path, size="tiny", seed=0)
    return path


@pytest.fixture(scope="module")
def examples():
    return make_world(6, seed=7)


def _mcqs(examples):
    return [MCQ("q2", examples[0].image, "Is there blur in this CT image?", {"A": "Yes", "B": "No"}, "B"),
            MCQ("q3", examples[1].image, "How is the overall quality?",
                {"A": "Good", "B": "Usable", "C": "Reject"}, "A"),
            MCQ("q4", examples[2].image, "What is the main degradation?",
                {"A": "Blur", "B": "Gaussian noise", "C": "Ghosting artifacts", "D": "None"}, "D")]


def test_letter_probs_and_prompt_pure():
    logits = np.full(10, -5.0)
    logits[[1, 2, 3]] = [2.0, 2.0, 0.0]
    ids = {"A": [1, 2], "B": [3], "C": [4]}
    p = letter_probs(logits, ["A", "B"], ids)
    assert abs(sum(p.values()) - 1) < 1e-12
    # A has two spellings at logit 2: log-sum-exp = 2 + ln 2
    assert p["A"] == pytest.approx(1 / (1 + np.exp(-(2 + np.log(2)))))
    assert set(letter_probs(logits, ["A", "B", "C"], ids)) == {"A", "B", "C"}
    prompt = mcq_prompt("Is it blurry? Answer directly only with the option letter from the given "
                        "choices.", {"A": "Yes", "B": "No"})
    assert prompt == ("Is it blurry?\nOptions:\nA. Yes\nB. No\n"
                      "Answer directly only with the option letter from the given choices.")


def test_sft_records_layout(examples):
    ex = LabelledImage("x1", examples[0].image, "MRI", "reject",
                       [{"type": "ghosting", "level": 2}, {"type": "blur", "level": 1}])
    assert label_description(ex) == ("This MRI image shows severe ghosting artifacts and mild blur. "
                                     "Overall, the quality of this image is reject.")
    recs = sft_records([ex, examples[1]], seed=0, mcqs_per_image=2)
    kinds = [r["kind"] for r in recs]
    assert kinds.count("description") == 2 and kinds.count("mcq") >= 2
    for r in recs:
        user, assistant = r["messages"]
        assert user["role"] == "user" and user["content"][0] == {"type": "image"}
        assert user["content"][1]["type"] == "text"
        assert assistant["role"] == "assistant" and len(r["images"]) == 1
        if r["kind"] == "mcq":
            assert assistant["content"][0]["text"] in "ABCD"
        else:
            assert assistant["content"][0]["text"].endswith(".")


def test_answer_probabilities_sum_to_one(tiny_path, examples):
    model = HFModel("hf-base", path=tiny_path, batch_size=2)
    answers = model.answer(_mcqs(examples))
    for q, a in zip(_mcqs(examples), answers):
        assert set(a.probs) == set(q.options)
        assert abs(sum(a.probs.values()) - 1) < 1e-9
        assert a.letter == max(a.probs, key=a.probs.get) == a.response
    # batching does not change the numbers
    one = HFModel("hf-base", path=tiny_path, batch_size=1).answer(_mcqs(examples))
    for a, b in zip(answers, one):
        assert a.probs == pytest.approx(b.probs, abs=1e-5)
    ids = letter_token_ids(model.runtime.tokenizer)
    assert all(len(v) >= 1 for v in ids.values())


def test_collate_labels_only_assistant_tokens(tiny_path, examples):
    model = HFModel("hf-base", path=tiny_path)
    recs = [{"messages": [user_turn("Is there blur ?"), assistant_turn("B")], "images": [examples[0].image]},
            {"messages": [user_turn("Describe the quality ."),
                          assistant_turn("This CT image shows mild blur .")], "images": [examples[1].image]}]
    enc = model.collate(recs)
    tok = model.runtime.tokenizer
    got = [tok.convert_ids_to_tokens(enc["input_ids"][i][enc["labels"][i] != -100]) for i in range(2)]
    assert got[0] == ["B", "<|im_end|>"]
    assert got[1] == ["This", "CT", "image", "shows", "mild", "blur", ".", "<|im_end|>"]
    assert (enc["labels"][enc["attention_mask"] == 0] == -100).all()


def test_lora_finetune_save_reload(tiny_path, examples, tmp_path):
    base = HFModel("hf-base", path=tiny_path, batch_size=4, max_steps=12, learning_rate=1e-2,
                   lora_rank=8, lora_alpha=16, seed=0)
    qs = _mcqs(examples)
    before = [a.probs for a in base.answer(qs)]
    recs = sft_records(examples[:2], seed=0, mcqs_per_image=1)[:4]
    tuned, report = base.fine_tune(examples[:2], new_version="hf-1", records=recs)
    assert len(report.losses) == 12 and report.extra["samples_seen"] == 48
    assert np.mean(report.losses[-3:]) < np.mean(report.losses[:3]) - 0.1, report.losses
    assert tuned.adapter and tuned.parent == "hf-base"
    after = [a.probs for a in tuned.answer(qs)]
    assert after != before
    # the base version is unchanged (adapters are disabled for it)
    for b, x in zip([a.probs for a in base.answer(qs)], before):
        assert b == pytest.approx(x, abs=1e-6)

    tuned.save(tmp_path / "v1")
    manifest = json.loads((tmp_path / "v1" / "model.json").read_text())
    assert manifest["backend"] == "hf" and manifest["adapter"] == "adapter"
    assert (tmp_path / "v1" / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "v1" / "adapter" / "adapter_config.json").is_file()

    _RUNTIMES.clear()  # reload from disk into a fresh base model
    again = load_model(tmp_path / "v1")
    assert isinstance(again, HFModel) and again.version == "hf-1"
    reloaded = [a.probs for a in again.answer(qs)]
    for a, b in zip(reloaded, after):
        assert a == pytest.approx(b, abs=1e-6)

    # warm start: a second fine-tune starts from hf-1's adapter, not from scratch
    _, rep2 = again.fine_tune(examples[:2], new_version="hf-2", records=recs)
    assert rep2.losses[0] < report.losses[0]


def test_describe_and_compare_shapes(tiny_path, examples):
    model = HFModel("hf-base", path=tiny_path, max_new_tokens=8, batch_size=2)
    texts = model.describe([examples[0].image, examples[1].image])
    assert len(texts) == 2
    for t in texts:
        assert any(t.endswith(f"Overall, the quality of this image is {v}.") for v in VERDICTS)
    comps = model.compare([(examples[0].image, examples[1].image)], explain=False)
    assert comps[0].better in ("A", "B") and 0 <= comps[0].prob_a <= 1


def test_settings_and_errors(settings, tmp_path):
    settings.model.backend = "hf"
    with pytest.raises(ModelError, match="hf_path"):
        create_model(settings.model)
    settings.model.hf_path = tmp_path / "missing"
    model = create_model(settings.model, version="v0")
    with pytest.raises(ModelError, match="does not exist"):
        model.answer([MCQ("q", np.zeros((32, 32), np.float32), "Q?", {"A": "Yes", "B": "No"})])


def test_gpu_script_exits_cleanly_without_cuda():
    import subprocess
    import sys
    from pathlib import Path

    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script would run the real benchmark")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_finetune.py")],
                          capture_output=True, text=True, timeout=120, cwd=root, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"ok": False, "reason": "no CUDA GPU (torch.cuda.is_available() "
                                                              "is False): nothing to measure"}
    assert "no CUDA GPU" in proc.stderr
