"""The model interface every part of MedQ talks to.

Images are ``numpy`` arrays, float32 in [0, 1], shape (H, W) for grayscale or (H, W, 3) for RGB.
Option probabilities always cover exactly the options present on the question and sum to 1;
higher is more likely. A backend is chosen by name (``settings.model.backend``) through
:func:`medq.engine.models.create_model` / :func:`medq.engine.models.load_model`.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from medq.errors import MedQError

MCQ_SUFFIX = "Answer directly only with the option letter from the given choices."


@dataclass
class MCQ:
    """A multiple-choice perception question about one image.

    `options` maps letters (A-D, in order, empty ones already dropped) to option text.
    `answer` is the gold letter when known."""

    item_id: str
    image: np.ndarray
    question: str
    options: dict[str, str]
    answer: str | None = None
    modality: str | None = None
    question_type: str | None = None
    level: int | None = None


@dataclass
class MCQAnswer:
    """`probs` maps each option letter to a probability (sums to 1). `letter` is the arg-max,
    `response` the raw text a generative model produced (or the letter)."""

    item_id: str
    probs: dict[str, float]
    letter: str
    response: str = ""


@dataclass
class LabelledImage:
    """One training or annotated image: its quality labels and reference description.

    `degradations` is a list of {"type": str, "level": 1|2}; empty means none."""

    item_id: str
    image: np.ndarray
    modality: str
    verdict: str
    degradations: list[dict] = field(default_factory=list)
    description: str = ""


@dataclass
class Comparison:
    """Paired judgement: `better` is "A" or "B" (the first or second image)."""

    better: str
    prob_a: float
    text: str


@dataclass
class TrainReport:
    """What a fine-tune did: loss per epoch/step (lower is better), examples, seconds."""

    losses: list[float]
    n_examples: int
    seconds: float
    extra: dict = field(default_factory=dict)


class QualityModel(abc.ABC):
    """A Med-IQA model: answers MCQs with probabilities, describes, compares, fine-tunes."""

    backend: str = "abstract"

    def __init__(self, version: str):
        self.version = version

    @classmethod
    def from_settings(cls, settings=None, *, version: str | None = None, **kwargs) -> "QualityModel":
        """A fresh model configured from :class:`medq.settings.ModelSettings` (None = defaults);
        `kwargs` override individual options. Backends override this to read their fields."""
        return cls(version or f"{cls.backend}-base", **kwargs)

    @abc.abstractmethod
    def answer(self, questions: Sequence[MCQ]) -> list[MCQAnswer]:
        """Option probabilities for each question (no sampling)."""

    @abc.abstractmethod
    def describe(self, images: Sequence[np.ndarray], questions: Sequence[str | None] | None = None
                 ) -> list[str]:
        """A quality description per image ending with 'Overall, the quality of this image is
        <good|usable|reject>.'"""

    @abc.abstractmethod
    def compare(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Comparison]:
        """Which image of each pair has the better quality, and why."""

    @abc.abstractmethod
    def fine_tune(self, examples: Sequence[LabelledImage], *, new_version: str, seed: int = 0
                  ) -> tuple["QualityModel", TrainReport]:
        """Train on `examples` (starting from this model) and return the new model version.
        This model is left unchanged."""

    @abc.abstractmethod
    def save(self, folder: Path) -> None:
        """Write everything needed to reload this version into `folder` (created if missing)."""

    @classmethod
    @abc.abstractmethod
    def load(cls, folder: Path, **kwargs) -> "QualityModel":
        """Inverse of :meth:`save` (`kwargs`: backend-specific runtime options such as device)."""


class ModelError(MedQError):
    """A model backend cannot do what was asked (unknown backend, missing package or files,
    malformed question); the message says what and where."""
