"""Fixed, model-independent image embeddings for failures and the pool.

The loop embeds failed eval items and every pool image in the *same* space so that failure
prototypes can be used as retrieval anchors in the pool index. The space must not move when the
model is fine-tuned, otherwise the pool index would have to be rebuilt every round: the embedder is
therefore independent of the model and its whole state (standardization, PCA) is plain data,
fitted once on a reference sample and versioned.

Pipeline of :class:`QualityEmbedder` (shapes for N images):

    images -> encoder (N, D) -> standardize with the reference mean / scale (N, D)
           -> per-column weights (N, D) -> optional PCA to `dims` (+ optional whitening) (N, d)
           -> L2 normalization (N, d) float32

Output rows have unit L2 norm, so Euclidean distances lie in [0, 2] (0 = identical) and
``squared_l2 = 2 - 2 * cosine``. Encoders, chosen by name:

- ``quality`` (default, CPU, no weights): :func:`medq.engine.features.quality_features`
  (MSCN, noise, sharpness, spectrum, exposure, colour, illumination, streak, periodic,
  blockiness and a coarse content descriptor). The content group is down-weighted by default
  so that *how* an image is degraded matters more than *what* it shows.
- ``timm`` / ``open_clip``: pretrained image towers loaded from a local weights path only
  (nothing is downloaded); import-guarded, a clear :class:`EmbedderError` when the package or
  the weights are missing.

``version`` (e.g. ``quality-3f9c0a1b2c4d``) hashes the encoder name and parameters, the
embedder parameters and the fitted state: two embedders with the same version produce the same
vectors, and an index built with one version must only be queried with vectors of that version.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from medq.errors import MedQError

STATE_FORMAT = 1
DEFAULT_GROUP_WEIGHTS: dict[str, float] = {"content": 0.5}
_EPS = 1e-8


class EmbedderError(MedQError):
    """The embedder cannot be built, fitted, restored or applied (says what and where)."""


# --------------------------------------------------------------------------------------------
# Encoders: images -> raw (N, D) float32 features
# --------------------------------------------------------------------------------------------

class QualityFeatureEncoder:
    """Handcrafted quality features (:mod:`medq.engine.features`), optionally group-weighted.

    `group_weights` maps a feature group (see ``FEATURE_GROUPS``) to a multiplier applied after
    standardization; groups not named keep weight 1. Weight 0 drops a group."""

    name = "quality"

    def __init__(self, group_weights: Mapping[str, float] | None = None):
        from medq.engine.features import FEATURE_DIM, FEATURE_GROUPS
        weights = dict(DEFAULT_GROUP_WEIGHTS if group_weights is None else group_weights)
        unknown = sorted(set(weights) - set(FEATURE_GROUPS))
        if unknown:
            raise EmbedderError(f"quality encoder: unknown feature group(s) {unknown}; "
                                f"known: {sorted(FEATURE_GROUPS)}")
        if any(float(w) < 0 for w in weights.values()):
            raise EmbedderError(f"quality encoder: group weights must be >= 0, got {weights}")
        self.group_weights = {k: float(v) for k, v in sorted(weights.items())}
        self.dim = FEATURE_DIM
        self._groups = FEATURE_GROUPS

    def params(self) -> dict:
        return {"group_weights": self.group_weights}

    def column_weights(self) -> np.ndarray:
        w = np.ones(self.dim, np.float64)
        for group, value in self.group_weights.items():
            w[self._groups[group]] = value
        return w

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray:
        from medq.engine.features import quality_features
        return quality_features(images)


def _to_tensor_batch(images: Sequence[np.ndarray], size: int, mean, std):
    """(N, 3, size, size) float tensor: grayscale replicated, bilinear resize, normalized."""
    import torch
    import torch.nn.functional as F
    out = []
    for i, img in enumerate(images):
        a = np.asarray(img, dtype=np.float32)
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
            raise EmbedderError(f"image {i}: expected (H, W) or (H, W, 3), got {a.shape}")
        if a.shape[2] == 1:
            a = np.repeat(a, 3, axis=2)
        a = np.clip(a[:, :, :3], 0.0, 1.0)
        t = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]
        out.append(F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                                 antialias=True))
    x = torch.cat(out, 0)
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def _require_weights(path: Path | str | None, encoder: str) -> Path:
    if path is None:
        raise EmbedderError(f"embedder {encoder!r} needs a local weights file or folder "
                            f"(embedder.weights_path); nothing is downloaded")
    p = Path(path).expanduser()
    if not p.exists():
        raise EmbedderError(f"embedder {encoder!r}: weights path {p} does not exist")
    return p


class _TorchEncoder:
    """Shared inference loop of the pretrained encoders (no gradients, fixed batch size)."""

    name = "torch"
    batch_size = 32

    def __init__(self, weights_path, model_name: str | None = None, device: str = "cpu"):
        self.weights_path = _require_weights(weights_path, self.name)
        self.model_name = model_name
        if device == "auto":
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self._model = None
        self.dim: int | None = None

    def params(self) -> dict:
        # the weights file name and size pin the version without hashing gigabytes
        p = self.weights_path
        size = p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*")
                                                        if f.is_file())
        return {"model_name": self.model_name, "weights": p.name, "weights_bytes": int(size)}

    def column_weights(self) -> np.ndarray | None:
        return None

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray:
        model, size, mean, std, forward = self._load()  # first: a missing package fails fast
        import torch
        feats = []
        with torch.inference_mode():
            for s in range(0, len(images), self.batch_size):
                x = _to_tensor_batch(images[s:s + self.batch_size], size, mean, std).to(self.device)
                feats.append(forward(model, x).float().cpu().numpy())
        if not feats:
            return np.zeros((0, self.dim or 0), np.float32)
        out = np.concatenate(feats, 0).astype(np.float32)
        self.dim = out.shape[1]
        return out

    def _load(self):  # pragma: no cover - overridden
        raise NotImplementedError


class TimmEncoder(_TorchEncoder):
    """A timm backbone (``num_classes=0`` pooled features) from a local weights path.

    `weights_path`: a checkpoint file (``.safetensors`` / ``.pth`` / ``.bin``; `model_name`
    required) or a folder in the Hugging Face timm layout (``config.json`` with ``architecture``
    plus ``model.safetensors`` or ``pytorch_model.bin``)."""

    name = "timm"

    def _load(self):
        if self._model is not None:
            return self._model
        try:
            import timm
        except ImportError as exc:
            raise EmbedderError("embedder 'timm' needs the timm package (pip install timm); "
                                "or use embedder.name=quality") from exc
        path, name = self.weights_path, self.model_name
        if path.is_dir():
            cfg_file = path / "config.json"
            if name is None and cfg_file.is_file():
                name = json.loads(cfg_file.read_text()).get("architecture")
            files = [path / f for f in ("model.safetensors", "pytorch_model.bin") if (path / f).is_file()]
            if not files:
                raise EmbedderError(f"embedder 'timm': no model.safetensors or pytorch_model.bin in {path}")
            path = files[0]
        if not name:
            raise EmbedderError(f"embedder 'timm': model name unknown for {self.weights_path}; "
                                "set embedder.model_name")
        try:
            model = timm.create_model(name, pretrained=True, num_classes=0,
                                      pretrained_cfg_overlay={"file": str(path)})
        except Exception as exc:
            raise EmbedderError(f"embedder 'timm': cannot load {name!r} from {path}: {exc}") from exc
        model.eval().to(self.device)
        cfg = timm.data.resolve_data_config({}, model=model)
        size = int(cfg["input_size"][-1])
        self._model = (model, size, cfg["mean"], cfg["std"], lambda m, x: m(x))
        return self._model


class OpenClipEncoder(_TorchEncoder):
    """An open_clip image tower from a local checkpoint file (`model_name` e.g. ``ViT-B-32``)."""

    name = "open_clip"
    _MEAN = (0.48145466, 0.4578275, 0.40821073)
    _STD = (0.26862954, 0.26130258, 0.27577711)

    def _load(self):
        if self._model is not None:
            return self._model
        try:
            import open_clip
        except ImportError as exc:
            raise EmbedderError("embedder 'open_clip' needs the open_clip_torch package "
                                "(pip install open_clip_torch); or use embedder.name=quality") from exc
        if not self.model_name:
            raise EmbedderError("embedder 'open_clip' needs embedder.model_name (e.g. ViT-B-32)")
        path = self.weights_path
        if path.is_dir():
            files = sorted([*path.glob("*.safetensors"), *path.glob("*.bin"), *path.glob("*.pt")])
            if not files:
                raise EmbedderError(f"embedder 'open_clip': no checkpoint file in {path}")
            path = files[0]
        try:
            model = open_clip.create_model(self.model_name, pretrained=str(path))
        except Exception as exc:
            raise EmbedderError(f"embedder 'open_clip': cannot load {self.model_name!r} from "
                                f"{path}: {exc}") from exc
        model.eval().to(self.device)
        size = model.visual.image_size
        size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self._model = (model, size, self._MEAN, self._STD, lambda m, x: m.encode_image(x))
        return self._model


ENCODERS: dict[str, Callable[..., Any]] = {
    "quality": QualityFeatureEncoder,
    "timm": TimmEncoder,
    "open_clip": OpenClipEncoder,
}


def create_encoder(name: str, **params):
    """An encoder by name (``quality`` | ``timm`` | ``open_clip``)."""
    if name not in ENCODERS:
        raise EmbedderError(f"unknown embedder {name!r}; choose one of {sorted(ENCODERS)}")
    try:
        return ENCODERS[name](**params)
    except TypeError as exc:
        raise EmbedderError(f"embedder {name!r}: bad parameters {params}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# The embedder
# --------------------------------------------------------------------------------------------

def _digest(*arrays: np.ndarray | None) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
    return h.hexdigest()


class QualityEmbedder:
    """Fitted, versioned embedder: images -> (N, d) float32 rows of unit L2 norm.

    `dims`: PCA output size (None keeps the D standardized features); capped by the feature
    count and the fit sample size minus one. `whiten`: divide PCA components by their standard
    deviation (equalizes directions; off by default because it amplifies low-variance noise).
    `encoder_params` are passed to the encoder (e.g. ``group_weights`` for ``quality``,
    ``weights_path`` / ``model_name`` / ``device`` for the pretrained ones)."""

    def __init__(self, name: str = "quality", *, dims: int | None = 64, whiten: bool = False,
                 batch_size: int = 256, encoder_params: Mapping[str, Any] | None = None,
                 _encoder=None):
        if dims is not None and dims < 1:
            raise EmbedderError(f"embedder dims must be >= 1 or None, got {dims}")
        if batch_size < 1:
            raise EmbedderError(f"embedder batch_size must be >= 1, got {batch_size}")
        self.name = name
        self.dims = dims
        self.whiten = bool(whiten)
        self.batch_size = int(batch_size)
        self.encoder_params = dict(encoder_params or {})
        self._encoder = _encoder
        # fitted state (None until fit / from_state)
        self.mean: np.ndarray | None = None           # (D,) float64
        self.scale: np.ndarray | None = None          # (D,) standardization divisor, > 0
        self.weights: np.ndarray | None = None        # (D,) per-column multiplier
        self.components: np.ndarray | None = None     # (d, D) PCA rows, or None
        self.component_std: np.ndarray | None = None  # (d,) std of each component on the fit sample
        self.n_fit = 0

    # -- encoder ---------------------------------------------------------------------------
    @property
    def encoder(self):
        if self._encoder is None:
            self._encoder = create_encoder(self.name, **self.encoder_params)
        return self._encoder

    def _encoder_params_for_version(self) -> dict:
        try:
            return self.encoder.params()
        except EmbedderError:
            raise
        except Exception:  # an encoder that cannot describe itself falls back to its settings
            return {k: str(v) for k, v in self.encoder_params.items()}

    # -- fitting ---------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self.mean is not None

    @property
    def dim(self) -> int:
        """Output dimension d (after fitting)."""
        mean, _, _ = self._fit_arrays()
        return int(self.components.shape[0]) if self.components is not None else int(mean.shape[0])

    def fit(self, images: Sequence[np.ndarray] | Iterable[np.ndarray]) -> "QualityEmbedder":
        """Fit standardization (+ PCA) on a reference sample of images (a few hundred to a few
        thousand, covering the modalities). Returns self."""
        return self.fit_features(self.encode_raw(list(images)))

    def fit_embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Fit on `images` and return their embeddings (N, d), computing features once."""
        raw = self.encode_raw(list(images))
        return self.fit_features(raw).transform(raw)

    def fit_features(self, features: np.ndarray) -> "QualityEmbedder":
        """Fit on raw encoder features (N, D) (e.g. cached ones)."""
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or len(f) < 2:
            raise EmbedderError(f"embedder fit needs a (N >= 2, D) feature matrix, got {f.shape}")
        if not np.isfinite(f).all():
            raise EmbedderError("embedder fit: features contain NaN or infinite values")
        mean = f.mean(0)
        std = f.std(0)
        # constant columns carry no information: scale 1 keeps them at 0 after centring
        scale = np.where(std > 1e-6, std, 1.0)
        col_w = self.encoder.column_weights()
        weights = np.ones(f.shape[1]) if col_w is None else np.asarray(col_w, np.float64)
        if weights.shape != (f.shape[1],):
            raise EmbedderError(f"embedder: encoder gave {weights.shape} column weights for "
                                f"{f.shape[1]} features")
        z = (f - mean) / scale * weights
        components = component_std = None
        if self.dims is not None and self.dims < f.shape[1]:
            d = min(self.dims, len(f) - 1)
            # PCA by SVD of the centred, weighted, standardized features (z is already centred)
            _, s, vt = np.linalg.svd(z, full_matrices=False)
            components = vt[:d]
            # fix the sign of each component (largest |loading| positive) so that a refit on the
            # same data gives the same vectors, not a sign-flipped copy
            signs = np.sign(components[np.arange(d), np.abs(components).argmax(1)])
            components = components * signs[:, None]
            component_std = s[:d] / np.sqrt(max(len(f) - 1, 1))
        self.mean, self.scale, self.weights = mean, scale, weights
        self.components, self.component_std = components, component_std
        self.n_fit = int(len(f))
        return self

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise EmbedderError(f"embedder {self.name!r} is not fitted: call fit() on a reference "
                                "sample or restore it with QualityEmbedder.from_state()")

    def _fit_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, scale, weights) of the fitted embedder; EmbedderError when not fitted."""
        self._check_fitted()
        # fit_features and from_state always set the three together
        assert self.mean is not None and self.scale is not None and self.weights is not None
        return self.mean, self.scale, self.weights

    # -- applying --------------------------------------------------------------------------
    def encode_raw(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Raw encoder features (N, D) float32, in batches of `batch_size`."""
        images = list(images)
        parts = [np.asarray(self.encoder.encode(images[s:s + self.batch_size]), np.float32)
                 for s in range(0, len(images), self.batch_size)]
        if not parts:
            dim = getattr(self.encoder, "dim", None) or (0 if self.mean is None else len(self.mean))
            return np.zeros((0, dim), np.float32)
        return np.concatenate(parts, 0)

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Raw features (N, D) -> embeddings (N, d) float32 with unit L2 norm."""
        mean, scale, weights = self._fit_arrays()
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != len(mean):
            raise EmbedderError(f"embedder {self.version}: expected features (N, {len(mean)}), "
                                f"got {f.shape}")
        z = (f - mean) / scale * weights
        # a degenerate image may yield a non-finite feature: treat it as "at the reference mean"
        z = np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)
        if self.components is not None:
            z = z @ self.components.T
            if self.whiten:
                assert self.component_std is not None  # always set together with components
                z = z / (self.component_std + _EPS)
        norm = np.linalg.norm(z, axis=1, keepdims=True)
        return (z / np.maximum(norm, 1e-12)).astype(np.float32)

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Images -> (N, d) float32, unit L2 norm, processed `batch_size` images at a time."""
        self._check_fitted()
        images = list(images)
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate([self.transform(self.encode_raw(images[s:s + self.batch_size]))
                               for s in range(0, len(images), self.batch_size)], 0)

    def embed_batches(self, batches: Iterable[Sequence[np.ndarray]]) -> Iterable[np.ndarray]:
        """Stream: one (n_i, d) array per input batch (keeps memory flat for large pools)."""
        for batch in batches:
            yield self.embed(batch)

    # -- identity and persistence ----------------------------------------------------------
    @property
    def version(self) -> str:
        """``<name>-<12 hex>``: hash of name, encoder params, embedder params and fit state."""
        self._check_fitted()
        payload = json.dumps({"name": self.name, "encoder": self._encoder_params_for_version(),
                              "dims": self.dims, "whiten": self.whiten,
                              "state": _digest(self.mean, self.scale, self.weights,
                                               self.components, self.component_std)},
                             sort_keys=True, default=str)
        return f"{self.name}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"

    def state_dict(self) -> dict:
        """Everything needed to rebuild this embedder, as JSON-safe data (lists, numbers)."""
        mean, scale, weights = self._fit_arrays()
        enc = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.encoder_params.items()}
        return {
            "format": STATE_FORMAT, "name": self.name, "dims": self.dims, "whiten": self.whiten,
            "batch_size": self.batch_size, "encoder_params": enc, "n_fit": self.n_fit,
            "mean": mean.tolist(), "scale": scale.tolist(),
            "weights": weights.tolist(),
            "components": None if self.components is None else self.components.tolist(),
            "component_std": None if self.component_std is None else self.component_std.tolist(),
            "version": self.version,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], *, check_version: bool = True) -> "QualityEmbedder":
        """Inverse of :meth:`state_dict`. With `check_version`, the restored embedder must hash
        to the stored version (catches edited state or a changed encoder implementation)."""
        try:
            if int(state.get("format", -1)) != STATE_FORMAT:
                raise EmbedderError(f"embedder state format {state.get('format')!r} is not "
                                    f"supported (expected {STATE_FORMAT})")
            emb = cls(state["name"], dims=state["dims"], whiten=state["whiten"],
                      batch_size=state.get("batch_size", 256),
                      encoder_params=state.get("encoder_params") or {})
            emb.mean = np.asarray(state["mean"], np.float64)
            emb.scale = np.asarray(state["scale"], np.float64)
            emb.weights = np.asarray(state["weights"], np.float64)
            if state["components"] is not None:
                emb.components = np.asarray(state["components"], np.float64)
                emb.component_std = np.asarray(state["component_std"], np.float64)
            emb.n_fit = int(state.get("n_fit", 0))
        except EmbedderError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise EmbedderError(f"embedder state is incomplete or malformed: {exc!r}") from exc
        d = len(emb.mean)
        if emb.scale.shape != (d,) or emb.weights.shape != (d,) or (
                emb.components is not None and emb.components.shape[1] != d):
            raise EmbedderError("embedder state has inconsistent array shapes")
        if check_version and state.get("version") and emb.version != state["version"]:
            raise EmbedderError(f"embedder state claims version {state['version']} but restores "
                                f"as {emb.version} (state edited or encoder changed)")
        return emb


def create_embedder(settings=None, **overrides) -> QualityEmbedder:
    """An unfitted embedder from :class:`medq.settings.EmbedderSettings` (or defaults).

    Keyword `overrides` replace settings fields (name, dims, whiten, batch_size, ...)."""
    values: dict[str, Any] = {}
    if settings is not None:
        values = settings.model_dump() if hasattr(settings, "model_dump") else dict(settings)
    values.update(overrides)
    name = values.get("name", "quality")
    enc: dict[str, Any] = {}
    if name == "quality":
        if values.get("group_weights") is not None:
            enc["group_weights"] = values["group_weights"]
    else:
        enc["weights_path"] = values.get("weights_path")
        enc["model_name"] = values.get("model_name")
        if values.get("device"):
            enc["device"] = values["device"]
    return QualityEmbedder(name, dims=values.get("dims", 64), whiten=values.get("whiten", False),
                           batch_size=values.get("batch_size", 256), encoder_params=enc)
