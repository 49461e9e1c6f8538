"""Data side of the lite model: the label vocabulary learned from training data, label targets,
the text anchors that ground option texts in that vocabulary, and training MCQs from labels.

Training MCQs come half from :mod:`medq.engine.questions` (the generator of the synthetic eval
sets) and half from the small generator below (three MedQ-Bench question types, other phrasings,
distractors from the learned vocabulary, shuffled options), so the model learns to read question
and option text rather than one set of templates.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from medq.engine.models.base import MCQ, LabelledImage, ModelError
from medq.engine.taxonomy import DEGRADATION_NAMES, OPTION_LETTERS, VERDICTS

LEVEL_WORDS = ("none", "mild", "severe")
# Anchor phrases for levels, verdicts and the yes / no / none polarity: what an option text is
# compared with (cosine in the text encoder's space) to ground it in predicted attributes.
LEVEL_ANCHORS = ("none, no such degradation, absent", "mild, slight, moderate",
                 "severe, strong, heavy")
VERDICT_ANCHORS = {"good": "good quality, clear, excellent",
                   "usable": "usable, acceptable, fair quality",
                   "reject": "reject, poor quality, unusable, bad"}
YES, NO, NONE_ANCHOR = "Yes", "No", "None, no degradation, no artifact, normal clear image"


def degradation_text(name: str) -> str:
    """Readable text of a degradation identifier (taxonomy lexicon, else the identifier)."""
    return DEGRADATION_NAMES.get(name, name.replace("_", " "))


def verdict_anchor(verdict: str) -> str:
    return VERDICT_ANCHORS.get(verdict, f"{verdict} quality")


def modality_anchor(modality: str) -> str:
    return f"{modality} image"


@dataclass
class Vocab:
    """Label vocabulary learned from data (sorted, so it does not depend on example order).
    `verdicts` is ordered best to worst where known (taxonomy order), unknown ones after."""

    modalities: list[str] = field(default_factory=list)
    degradations: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)

    @classmethod
    def from_examples(cls, examples: Sequence[LabelledImage], base: Vocab | None = None) -> Vocab:
        mods = set(base.modalities if base else ())
        degs = set(base.degradations if base else ())
        vers = set(base.verdicts if base else ())
        for ex in examples:
            mods.add(ex.modality)
            vers.add(ex.verdict)
            for d in ex.degradations:
                degs.add(d["type"])
        known = [v for v in VERDICTS if v in vers]
        # an extended vocabulary keeps the old entries first, in their old order, so that head
        # rows of a warm-started model keep their meaning
        if base is not None:
            return cls(base.modalities + sorted(mods - set(base.modalities)),
                       base.degradations + sorted(degs - set(base.degradations)),
                       base.verdicts + [v for v in known + sorted(vers - set(VERDICTS))
                                        if v not in base.verdicts])
        return cls(sorted(mods), sorted(degs), known + sorted(vers - set(VERDICTS)))

    def to_json(self) -> dict:
        return {"modalities": self.modalities, "degradations": self.degradations,
                "verdicts": self.verdicts}

    @classmethod
    def from_json(cls, data: dict) -> Vocab:
        return cls(list(data["modalities"]), list(data["degradations"]), list(data["verdicts"]))

    def verdict_rank(self, verdict: str) -> float:
        """0 = best. Known verdicts by the taxonomy order, unknown ones in the middle."""
        return float(VERDICTS.index(verdict)) if verdict in VERDICTS else (len(VERDICTS) - 1) / 2


def targets(examples: Sequence[LabelledImage], vocab: Vocab) -> dict[str, np.ndarray]:
    """Integer targets: modality (N,), verdict (N,), level per degradation type (N, K) in 0..2
    (types not listed on an example are level 0: the labels are taken as complete)."""
    n, k = len(examples), len(vocab.degradations)
    mod = np.zeros(n, np.int64)
    ver = np.zeros(n, np.int64)
    lvl = np.zeros((n, k), np.int64)
    mi = {m: i for i, m in enumerate(vocab.modalities)}
    vi = {v: i for i, v in enumerate(vocab.verdicts)}
    di = {d: i for i, d in enumerate(vocab.degradations)}
    for r, ex in enumerate(examples):
        mod[r] = mi[ex.modality]
        ver[r] = vi[ex.verdict]
        for d in ex.degradations:
            level = int(d.get("level", 1))
            if level not in (1, 2):
                raise ModelError(f"example {ex.item_id}: degradation {d.get('type')!r} has level "
                                 f"{level!r}; expected 1 (mild) or 2 (severe)")
            lvl[r, di[d["type"]]] = max(lvl[r, di[d["type"]]], level)
    return {"modality": mod, "verdict": ver, "levels": lvl}


def check_examples(examples: Sequence[LabelledImage]) -> None:
    """A clear error for the first malformed training example."""
    if not examples:
        raise ModelError("fine_tune: no training examples")
    for ex in examples:
        if not isinstance(ex.image, np.ndarray):
            raise ModelError(f"example {ex.item_id}: image is {type(ex.image).__name__}, not a numpy array")
        if not ex.modality or not ex.verdict:
            raise ModelError(f"example {ex.item_id}: modality and verdict are required")
        for d in ex.degradations:
            if not isinstance(d, dict) or "type" not in d:
                raise ModelError(f"example {ex.item_id}: degradation {d!r} lacks a 'type'")
            if d.get("level") not in (1, 2):
                raise ModelError(f"example {ex.item_id}: degradation {d['type']!r} has level "
                                 f"{d.get('level')!r}; expected 1 (mild) or 2 (severe)")


# ---------------------------------------------------------------------------------------------
# Training MCQs from labels
# ---------------------------------------------------------------------------------------------

_YESNO = ("Is there {name} in this {mod} image?", "Does this {mod} image show {name}?",
          "Does the image exhibit {name}?", "Can {name} be observed in this image?")
_WHAT_DEG = ("What is the most prominent degradation in this {mod} image?",
             "Which distortion affects this image the most?",
             "What kind of quality problem can be seen in this {mod} image?",
             "Which artifact is present in this image?")
_WHAT_MOD = ("What is the imaging modality of this image?", "Which modality is this image?")
_HOW_LEVEL = ("How severe is the {name} in this image?", "How would you rate the {name} in this {mod} image?",
              "What is the level of {name} in this image?")
_HOW_VERDICT = ("How is the overall quality of this image?",
                "How would you rate the overall quality of this {mod} image?",
                "Is the overall quality of this image good, usable or reject?")
_LEVEL_OPTIONS = (("None", "Mild", "Severe"), ("No {name}", "Mild {name}", "Severe {name}"),
                  ("Absent", "Slight", "Severe"))
_NONE_OPTIONS = ("None", "No obvious degradation")


def _mcq(item_id: str, image, question: str, options: list[str], answer: int,
         rng: np.random.Generator, qtype: str, modality: str, level: int, shuffle: bool = True) -> MCQ:
    order = rng.permutation(len(options)) if shuffle else np.arange(len(options))
    letters = OPTION_LETTERS[:len(options)]
    opts = {letters[i]: options[j] for i, j in enumerate(order)}
    gold = letters[int(np.where(order == answer)[0][0])]
    return MCQ(item_id=item_id, image=image, question=question, options=opts, answer=gold,
               modality=modality, question_type=qtype, level=level)


def internal_mcqs(ex: LabelledImage, vocab: Vocab, rng: np.random.Generator, n: int) -> list[MCQ]:
    """`n` MCQs about one labelled image, answered by its labels. Degradation distractors come from
    the learned vocabulary (types seen in training data)."""
    present = {d["type"]: int(d["level"]) for d in ex.degradations}
    worst = max(present.values(), default=0)
    absent = [d for d in vocab.degradations if d not in present]
    mod = ex.modality
    out: list[MCQ] = []
    kinds = ["yesno", "what_deg", "how_level", "how_verdict", "what_mod"]
    weights = np.array([0.3, 0.25, 0.2, 0.2, 0.05])
    for q in range(n):
        kind = kinds[int(rng.choice(len(kinds), p=weights))]
        iid = f"{ex.item_id}#q{q}"
        if kind == "yesno":
            if present and (not absent or rng.random() < 0.5):
                deg, yes = list(present)[int(rng.integers(len(present)))], True
            elif absent:
                deg, yes = absent[int(rng.integers(len(absent)))], False
            else:
                continue
            text = _YESNO[int(rng.integers(len(_YESNO)))].format(name=degradation_text(deg), mod=mod)
            out.append(_mcq(iid, ex.image, text, [YES, NO], 0 if yes else 1, rng, "Yes-or-No", mod,
                            present.get(deg, 0), shuffle=rng.random() < 0.3))
        elif kind == "what_deg":
            text = _WHAT_DEG[int(rng.integers(len(_WHAT_DEG)))].format(mod=mod)
            if present:
                top = max(present.values())
                gold = sorted(d for d, lv in present.items() if lv == top)
                gold = gold[int(rng.integers(len(gold)))]
                pool = absent[:]  # other present types are not valid distractors
                rng.shuffle(pool)
                options = [degradation_text(gold)] + [degradation_text(d) for d in pool[:2]]
                options.append(_NONE_OPTIONS[int(rng.integers(2))])
            else:
                pool = absent[:]
                rng.shuffle(pool)
                options = [_NONE_OPTIONS[int(rng.integers(2))]] + [degradation_text(d) for d in pool[:3]]
            if len(options) < 2:
                continue
            out.append(_mcq(iid, ex.image, text, options, 0, rng, "What", mod, worst))
        elif kind == "how_level":
            cand = list(present) + absent
            if not cand:
                continue
            deg = list(present)[int(rng.integers(len(present)))] if present and rng.random() < 0.7 \
                else cand[int(rng.integers(len(cand)))]
            name = degradation_text(deg)
            text = _HOW_LEVEL[int(rng.integers(len(_HOW_LEVEL)))].format(name=name, mod=mod)
            opts = [o.format(name=name) for o in _LEVEL_OPTIONS[int(rng.integers(len(_LEVEL_OPTIONS)))]]
            out.append(_mcq(iid, ex.image, text, opts, present.get(deg, 0), rng, "How", mod,
                            present.get(deg, 0)))
        elif kind == "how_verdict":
            if len(vocab.verdicts) < 2:
                continue
            text = _HOW_VERDICT[int(rng.integers(len(_HOW_VERDICT)))].format(mod=mod)
            opts = [v.capitalize() for v in vocab.verdicts]
            out.append(_mcq(iid, ex.image, text, opts, vocab.verdicts.index(ex.verdict), rng, "How",
                            mod, worst, shuffle=rng.random() < 0.5))
        else:
            others = [m for m in vocab.modalities if m != mod]
            if not others:
                continue
            rng.shuffle(others)
            text = _WHAT_MOD[int(rng.integers(len(_WHAT_MOD)))]
            out.append(_mcq(iid, ex.image, text, [mod] + others[:3], 0, rng, "What", mod, worst))
    return out


def _external_mcqs(ex: LabelledImage, seed: int, n: int) -> list[MCQ]:
    """MCQs from :mod:`medq.engine.questions` (the generator that also writes synthetic eval sets):
    sets of the three MedQ-Bench types plus the standard verdict question. Empty if that module
    is missing or rejects these labels (e.g. a verdict outside the taxonomy)."""
    try:
        from medq.engine import questions as qmod
    except ImportError:
        return []
    out: list[MCQ] = []
    try:
        for j in range(max(1, n // 3)):
            recs = qmod.make_questions(ex.modality, ex.degradations, seed * 7919 + j, image=ex.image)
            out.extend(qmod.to_mcq(r, f"{ex.item_id}#e{j}{k}") for k, r in enumerate(recs))
        if ex.verdict in VERDICTS:
            out.append(qmod.verdict_mcq(f"{ex.item_id}#v", ex.image, ex.modality, ex.verdict))
    except Exception:  # noqa: BLE001 - labels outside the generator's vocabulary: use ours only
        return []
    return out


def training_mcqs(examples: Sequence[LabelledImage], vocab: Vocab, seed: int, per_image: int
                  ) -> tuple[list[MCQ], np.ndarray]:
    """About `per_image` MCQs per example (half from :mod:`medq.engine.questions` when available,
    the rest, or all, from :func:`internal_mcqs`: two phrasings sources make the model read the
    text instead of memorizing one template) and, for each MCQ, the index of its example."""
    mcqs: list[MCQ] = []
    owner: list[int] = []
    for i, ex in enumerate(examples):
        rng = np.random.default_rng([seed, i])
        made = _external_mcqs(ex, int(rng.integers(2 ** 31)), per_image // 2)
        made += internal_mcqs(ex, vocab, rng, max(1, per_image - len(made)))
        made = [m for m in made if m.answer in m.options and len(m.options) >= 2]
        mcqs.extend(made)
        owner.extend([i] * len(made))
    return mcqs, np.asarray(owner, np.int64)
