"""The lite backend: learns from labels, answers unseen phrasings far above chance, improves when
data of a missing degradation arrives, calibrated probabilities, deterministic, save/load."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medq.engine.models import ModelError, backend_class, create_model, load_model
from medq.engine.models.base import MCQ, LabelledImage
from medq.engine.models.lite import LiteModel
from medq.engine.taxonomy import VERDICTS
from tests.engine.lite_world import degrade, eval_mcqs, make_world

FAST = dict(epochs=25, mcqs_per_image=6, mcqs_per_epoch=2, batch_size=128)
NO_GHOST = {"CT": ("gaussian_noise", "blur", "brightness"),
            "MRI": ("gaussian_noise", "bias_field", "blur"),
            "fundus": ("uneven_illumination", "blur", "brightness")}
GHOST_ONLY = {"MRI": ("ghosting",)}


def accuracy(model, mcqs) -> float:
    answers = model.answer(mcqs)
    return float(np.mean([a.letter == q.answer for q, a in zip(mcqs, answers)]))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for the text encoder too: on a shared 2-core machine OpenMP barrier waits
    cost more than the second thread gains."""
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def world():
    return {"train": make_world(300, seed=1), "eval": make_world(150, seed=2, prefix="e")}


@pytest.fixture(scope="module")
def trained(world):
    model = create_model("lite", version="lite-base", seed=0, **FAST)
    new, report = model.fine_tune(world["train"], new_version="lite-1")
    return model, new, report


def test_trains_and_answers_unseen_phrasings_far_above_chance(world, trained):
    base, model, report = trained
    assert not base.trained and model.trained and model.parent == "lite-base"
    assert report.n_examples == 300 and len(report.losses) == FAST["epochs"]
    assert report.losses[-1] < 0.5 * report.losses[0]
    # vocabulary comes from the data
    assert model.vocab.modalities == ["CT", "MRI", "fundus"]
    assert set(model.vocab.degradations) == {"gaussian_noise", "blur", "brightness", "ghosting",
                                             "bias_field", "uneven_illumination"}
    mcqs = eval_mcqs(world["eval"], seed=5)
    answers = model.answer(mcqs)
    for q, a in zip(mcqs, answers):
        assert set(a.probs) == set(q.options)
        assert abs(sum(a.probs.values()) - 1) < 1e-9
        assert a.letter == max(a.probs, key=a.probs.get)
    by_type: dict[str, list[bool]] = {}
    chance: dict[str, list[float]] = {}
    for q, a in zip(mcqs, answers):
        by_type.setdefault(q.question_type, []).append(a.letter == q.answer)
        chance.setdefault(q.question_type, []).append(1 / len(q.options))
    for qtype, hits in by_type.items():
        assert np.mean(hits) > np.mean(chance[qtype]) + 0.3, (qtype, np.mean(hits))
    assert np.mean([h for v in by_type.values() for h in v]) > 0.8


def test_accuracy_improves_when_missing_degradation_is_added():
    """Round 1 never saw ghosting; adding labelled ghosting images must fix the ghosting items."""
    base_data = make_world(240, seed=11, types=NO_GHOST)
    extra = make_world(90, seed=12, types=GHOST_ONLY, p_clean=0.0, prefix="g")
    evalset = make_world(60, seed=13, types=GHOST_ONLY, p_clean=0.3, prefix="ge")
    mcqs = [q for q in eval_mcqs(evalset, seed=3) if q.question_type in ("Yes-or-No", "What")]
    assert any("ghosting" in " ".join(q.options.values()).lower() for q in mcqs)

    m0 = create_model("lite", version="r0", seed=0, **FAST)
    m1, _ = m0.fine_tune(base_data, new_version="r1")
    m2, rep2 = m1.fine_tune(base_data + extra, new_version="r2")
    assert "ghosting" not in m1.vocab.degradations and "ghosting" in m2.vocab.degradations
    assert rep2.extra["warm_start"] is True
    acc1, acc2 = accuracy(m1, mcqs), accuracy(m2, mcqs)
    print(f"ghosting items: accuracy {acc1:.3f} -> {acc2:.3f}")
    assert acc2 > acc1 + 0.15, (acc1, acc2)
    assert acc2 > 0.8
    # the old version is left unchanged by fine-tuning
    assert "ghosting" not in m1.vocab.degradations and accuracy(m1, mcqs) == acc1


def test_probabilities_are_calibrated_on_holdout(trained):
    _, model, report = trained
    info = report.extra
    assert info["n_holdout_images"] == 30
    assert info["holdout_nll"] <= info["holdout_nll_t1"] + 1e-9
    assert 0.05 <= model.temperature <= 20
    assert info["holdout_accuracy"] > 0.8


def test_deterministic_with_seed(world):
    data = world["train"][:120]
    kw = dict(FAST, epochs=5)
    a, _ = LiteModel("x", seed=3, **kw).fine_tune(data, new_version="a")
    b, _ = LiteModel("x", seed=3, **kw).fine_tune(data, new_version="b")
    c, _ = LiteModel("x", seed=4, **kw).fine_tune(data, new_version="c")
    qs = eval_mcqs(world["eval"][:20], seed=1)
    pa = [x.probs for x in a.answer(qs)]
    assert pa == [x.probs for x in b.answer(qs)]
    assert pa != [x.probs for x in c.answer(qs)]


def test_save_load_roundtrip(tmp_path, world, trained):
    _, model, _ = trained
    model.save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "model.json").read_text())
    assert manifest["backend"] == "lite" and manifest["version"] == "lite-1"
    assert manifest["vocab"]["verdicts"] == ["good", "usable", "reject"]
    again = load_model(tmp_path / "m")
    assert isinstance(again, LiteModel) and again.version == "lite-1"
    assert again.temperature == model.temperature
    qs = eval_mcqs(world["eval"][:10], seed=2)
    assert [a.probs for a in again.answer(qs)] == [a.probs for a in model.answer(qs)]
    assert again.describe([world["eval"][0].image]) == model.describe([world["eval"][0].image])


def test_describe_and_compare(world, trained):
    _, model, _ = trained
    ev = world["eval"]
    texts = model.describe([ex.image for ex in ev[:30]])
    for t in texts:
        assert any(t.endswith(f"Overall, the quality of this image is {v}.") for v in VERDICTS)
    said = [t.rsplit(" ", 1)[-1].rstrip(".") for t in texts]
    assert np.mean([s == ex.verdict for s, ex in zip(said, ev[:30])]) > 0.7
    rng = np.random.default_rng(0)
    clean = [ex for ex in ev if not ex.degradations and ex.modality == "CT"][:5]
    pairs = [(ex.image, degrade(ex.image, "gaussian_noise", 2, rng)) for ex in clean]
    pairs += [(b, a) for a, b in pairs]
    comps = model.compare(pairs)
    n = len(clean)
    assert all(c.better == "A" for c in comps[:n]) and all(c.better == "B" for c in comps[n:])
    assert all(0 <= c.prob_a <= 1 and c.text for c in comps)
    assert "noise" in comps[0].text.lower()


def test_learns_types_outside_the_taxonomy():
    """A degradation and modality the taxonomy does not know are learned from the data."""
    rng = np.random.default_rng(4)
    data = []
    for i in range(160):
        img = make_world(1, seed=100 + i, types={"CT": ()})[0].image
        flare = i % 2 == 0
        if flare:  # bright vertical stripes
            img = img.copy()
            img[:, ::6] = np.clip(img[:, ::6] + 0.5, 0, 1)
        degs = [{"type": "lens_flare", "level": 2}] if flare else []
        data.append(LabelledImage(f"f{i}", img, "thermal", "reject" if flare else "good", degs))
    model, _ = LiteModel("t", seed=0, **FAST).fine_tune(data[:120], new_version="t1")
    assert model.vocab.degradations == ["lens_flare"] and model.vocab.modalities == ["thermal"]
    mcqs = [MCQ(ex.item_id, ex.image, "Is there lens flare in this image?", {"A": "Yes", "B": "No"},
                "A" if ex.degradations else "B") for ex in data[120:]]
    assert accuracy(model, mcqs) > 0.85
    del rng


def test_untrained_model_is_uniform_and_registry_errors(world):
    model = create_model("lite")
    assert model.version == "lite-base"
    q = eval_mcqs(world["eval"][:1], seed=0)[0]
    ans = model.answer([q])[0]
    assert set(ans.probs.values()) == {1 / len(q.options)}
    with pytest.raises(ModelError, match="valid backends: lite, hf, vllm"):
        create_model("nope")
    with pytest.raises(ModelError, match="no training examples"):
        model.fine_tune([], new_version="x")
    bad = LabelledImage("b1", world["eval"][0].image, "CT", "usable", [{"type": "blur", "level": 3}])
    with pytest.raises(ModelError, match="b1.*level"):
        model.fine_tune([bad], new_version="x")
    assert backend_class("lite") is LiteModel


def test_create_from_settings(settings):
    settings.model.lite_epochs = 7
    settings.model.seed = 9
    model = create_model(settings.model, version="v0")
    assert isinstance(model, LiteModel)
    assert model.config["epochs"] == 7 and model.config["seed"] == 9 and model.version == "v0"


def test_comparison_text_never_contradicts_its_call():
    from medq.engine.models.lite import comparison_text
    rank = {"good": 0, "usable": 1, "reject": 2}.__getitem__

    def att(verdict, degs=(), severity=0.0):
        return {"verdict": verdict, "degradations": [{"type": t, "level": lv} for t, lv in degs],
                "severity": severity}
    clean, noisy = att("good"), att("reject", [("gaussian_noise", 2)], 2.0)
    text = comparison_text(clean, noisy, 0.9, rank)
    assert text.startswith("The first image has better quality than the second.")
    assert "The second shows severe" in text
    assert "The first image is good and the second is reject" in text
    flipped = comparison_text(noisy, clean, 0.1, rank)  # same pair, other order
    assert flipped.startswith("The second image has better quality than the first.")
    # the call (from the full distributions) against the single most likely verdicts and the
    # named degradations: a close call, and no sentence claiming the opposite as fact
    odd = comparison_text(att("reject", [("blur", 1)], 1.0), att("good", [], 0.0), 0.55, rank)
    assert "close call: probability 0.55" in odd
    assert "is reject and the second is good" not in odd and "while the first" not in odd
    assert "the verdict probabilities favour the first" in odd
    same = comparison_text(att("usable", [("blur", 1)], 1.0), att("usable", [("blur", 2)], 2.0),
                           0.7, rank)
    assert "Both images are most likely usable." in same and "close call" not in same
