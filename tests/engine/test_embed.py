"""QualityEmbedder: shapes, norms, determinism, versioning, state round trip, degradation
separation, pretrained-encoder guards."""
from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
from scipy import ndimage

from medq.engine.embed import EmbedderError, QualityEmbedder, create_embedder, create_encoder


def _base_images(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Smooth random 'anatomy': low-pass filtered noise, scaled to [0.1, 0.9]."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        f = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma=rng.uniform(3, 6))
        f = (f - f.min()) / (f.max() - f.min() + 1e-9)
        out.append((0.1 + 0.8 * f).astype(np.float32))
    return out


def _degrade(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "noise":
        return np.clip(img + rng.normal(0, 0.08, img.shape), 0, 1).astype(np.float32)
    if kind == "blur":
        return ndimage.gaussian_filter(img, 2.5).astype(np.float32)
    if kind == "dark":
        return (img * 0.35).astype(np.float32)
    return img


@pytest.fixture(scope="module")
def fitted():
    imgs = _base_images(48)
    return QualityEmbedder(dims=16).fit(imgs), imgs


def test_embed_shape_norm_and_determinism(fitted):
    emb, imgs = fitted
    v = emb.embed(imgs[:10])
    assert v.shape == (10, 16) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(v, emb.embed(imgs[:10]))
    # batching does not change the result
    small = QualityEmbedder.from_state(emb.state_dict())
    small.batch_size = 3
    # float32 kernels sum in a batch-size dependent order (BLAS picks the kernel by shape and
    # CPU): ~1e-5 differences on unit vectors are rounding, not a different embedding
    np.testing.assert_allclose(small.embed(imgs[:10]), v, atol=1e-4)
    assert emb.embed([]).shape == (0, 16)


def test_state_round_trip_is_pure_data_and_keeps_version(fitted):
    emb, imgs = fitted
    state = json.loads(json.dumps(emb.state_dict()))  # pure JSON data
    again = QualityEmbedder.from_state(state)
    assert again.version == emb.version == state["version"]
    np.testing.assert_allclose(again.embed(imgs[:5]), emb.embed(imgs[:5]), atol=1e-6)


def test_version_depends_on_params_and_fit(fitted):
    emb, imgs = fitted
    raw = emb.encode_raw(imgs)
    raw_other = emb.encode_raw(_base_images(24, seed=1))
    other_fit = QualityEmbedder(dims=16).fit_features(raw_other)
    other_dims = QualityEmbedder(dims=8).fit_features(raw)
    other_weights = QualityEmbedder(
        dims=16, encoder_params={"group_weights": {"content": 0.0}}).fit_features(raw)
    versions = {emb.version, other_fit.version, other_dims.version, other_weights.version}
    assert len(versions) == 4
    assert QualityEmbedder(dims=16).fit_features(raw).version == emb.version  # reproducible
    assert emb.version.startswith("quality-")


def test_tampered_state_is_refused(fitted):
    emb, _ = fitted
    state = emb.state_dict()
    state["mean"] = [m + 1.0 for m in state["mean"]]
    with pytest.raises(EmbedderError, match="claims version"):
        QualityEmbedder.from_state(state)
    with pytest.raises(EmbedderError, match="malformed|incomplete"):
        QualityEmbedder.from_state({"format": 1, "name": "quality"})
    with pytest.raises(EmbedderError, match="format"):
        QualityEmbedder.from_state({**emb.state_dict(), "format": 99})


def test_unfitted_and_bad_input_errors():
    emb = QualityEmbedder()
    with pytest.raises(EmbedderError, match="not fitted"):
        emb.embed([np.zeros((16, 16), np.float32)])
    with pytest.raises(EmbedderError, match="N >= 2"):
        emb.fit_features(np.zeros((1, 5)))
    with pytest.raises(EmbedderError, match="unknown embedder"):
        create_encoder("resnet-from-the-internet")
    with pytest.raises(EmbedderError, match="unknown feature group"):
        QualityEmbedder(encoder_params={"group_weights": {"colour_of_sky": 1.0}}).encoder  # noqa: B018


def test_degradation_types_separate():
    """Nearest neighbours in the embedding share the degradation type (not the content)."""
    rng = np.random.default_rng(3)
    base = _base_images(24, seed=5)
    kinds = ["noise", "blur", "dark"]
    imgs, labels = [], []
    for _i, img in enumerate(base):
        for k in kinds:
            imgs.append(_degrade(img, k, rng))
            labels.append(k)
    v = QualityEmbedder(dims=16).fit_embed(imgs)
    d = ((v[:, None] - v[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = d.argmin(1)
    purity = np.mean([labels[i] == labels[j] for i, j in enumerate(nn)])
    assert purity >= 0.9, purity


def test_create_embedder_from_settings(settings):
    emb = create_embedder(settings.embedder)
    assert emb.name == "quality" and emb.dims == settings.embedder.dims
    assert create_embedder(settings.embedder, dims=8).dims == 8


def test_pretrained_encoders_need_local_weights(tmp_path):
    with pytest.raises(EmbedderError, match="weights"):
        create_encoder("timm", weights_path=None, model_name="resnet18")
    with pytest.raises(EmbedderError, match="does not exist"):
        create_encoder("open_clip", weights_path=tmp_path / "nope.bin", model_name="ViT-B-32")


def test_timm_missing_package_is_a_clear_error(tmp_path, monkeypatch):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    enc = create_encoder("timm", weights_path=weights, model_name="resnet18")
    with pytest.raises(EmbedderError, match="needs the timm package"):
        enc.encode([np.zeros((32, 32), np.float32)])


def test_timm_encoder_with_a_local_checkpoint(tmp_path, monkeypatch):
    """The timm path end to end against a stand-in module (timm itself is not installed)."""
    import torch

    calls = {}

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 6, 3)

        def forward(self, x):
            calls["shape"] = tuple(x.shape)
            return self.conv(x).mean(dim=(2, 3))

    def create_model(name, pretrained, num_classes, pretrained_cfg_overlay):
        calls["args"] = (name, pretrained, num_classes, pretrained_cfg_overlay["file"])
        torch.manual_seed(0)
        return Tiny()

    fake = types.ModuleType("timm")
    fake.create_model = create_model
    fake.data = types.SimpleNamespace(resolve_data_config=lambda cfg, model: {
        "input_size": (3, 40, 40), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)})
    monkeypatch.setitem(sys.modules, "timm", fake)
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architecture": "tiny_net"}))
    (folder / "model.safetensors").write_bytes(b"weights")
    emb = QualityEmbedder("timm", dims=4, encoder_params={"weights_path": folder})
    imgs = _base_images(12, size=48) + [np.stack([img] * 3, -1) for img in _base_images(4, 48, 9)]
    emb.fit(imgs)
    v = emb.embed(imgs)
    assert v.shape == (16, 4)
    assert calls["args"] == ("tiny_net", True, 0, str(folder / "model.safetensors"))
    assert calls["shape"][1:] == (3, 40, 40)
    assert emb.version.startswith("timm-")
