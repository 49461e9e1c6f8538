"""MedQ-Bench-style questions and reference descriptions generated from ground truth.

Ground truth is a modality, a list of degradations ``[{"type", "level"}]`` (level 1 = mild,
2 = severe; empty = none) and a verdict (good / usable / reject). From it:

- :func:`make_questions`: multiple-choice perception questions of the three MedQ-Bench types,
  as records for :func:`medq.engine.formats.medqbench.mcq_records_to_frame`:

  * *Yes-or-No* (options Yes / No): "Does this CT image show sparse-view streak artifacts?"
    about a present degradation or a plausible absent one;
  * *What* (four options): the most prominent degradation among distractors drawn from the same
    modality family (or "No obvious degradation");
  * *How* (three options): the severity of a degradation (not present / mild / severe). There are
    three levels in the taxonomy; a fourth option would be an invented level, so How questions
    carry options A-C.

  Options are shuffled by seed; letters are assigned after shuffling.
- :func:`describe`: a reference description with varied wording that names the modality, every
  degradation with its severity word ("mild" / "severe") and ends exactly with
  ``"Overall, the quality of this image is <verdict>."``.
- :func:`verdict_mcq`: the standard overall-quality question (A good / B usable / C reject) used by
  routing.
- :func:`compare_description`: the reference text and answer of a paired (A vs B) item.

Degradation types not in the taxonomy are accepted: their identifier is shown with underscores as
spaces ("lens_flare" -> "lens flare"). Pure functions, deterministic by seed.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from medq.engine import taxonomy
from medq.engine.models.base import MCQ
from medq.errors import MedQError

NONE_OPTION = "No obvious degradation"
NOT_PRESENT = "Not present"
SEVERITY_OPTIONS = {0: NOT_PRESENT, 1: "Mild", 2: "Severe"}
VERDICT_QUESTION = "How would you rate the overall quality of this image?"
VERDICT_OPTIONS = {"A": "Good", "B": "Usable", "C": "Reject"}
VERDICT_LETTERS = {"good": "A", "usable": "B", "reject": "C"}

# How each modality is named in text ("this <noun>").
_MODALITY_NOUN = {
    "CT": ("CT image", "CT scan", "CT slice"),
    "MRI": ("MRI image", "MRI scan", "MRI slice"),
    "X-ray": ("X-ray image", "X-ray radiograph", "X-ray"),
    "fundus": ("fundus image", "fundus photograph", "fundus photo"),
    "histopathology": ("histopathology image", "histopathology slide image",
                       "histopathology section"),
    "endoscopy": ("endoscopy image", "endoscopy frame", "endoscopy view"),
    "ultrasound": ("ultrasound image", "ultrasound scan", "ultrasound frame"),
}

# What each known degradation does to the image (used to vary and ground the descriptions).
_EFFECTS = {
    "low_dose": "a grainy noise texture that masks low-contrast structures",
    "sparse_view": "radial streaks that run across the field of view",
    "limited_angle": "directional smearing and wedge-shaped streaks at edges",
    "metal_streak": "dark and bright streaks radiating from dense implants",
    "motion": "ghosted, smeared edges along the phase-encoding direction",
    "ghosting": "faint replicas of the anatomy shifted along one axis",
    "bias_field": "a slow brightness drift across the field",
    "undersampling": "aliasing ripples and loss of fine detail",
    "rician_noise": "a raised noise floor, most visible in dark regions",
    "spike": "a striped (herringbone) pattern over the whole image",
    "scatter": "a diffuse haze that flattens contrast",
    "stain_variation": "shifted stain colours and intensities",
    "focus_blur": "soft, defocused cell and tissue boundaries",
    "compression": "blocky 8x8 patterns and ringing around edges",
    "uneven_illumination": "one side noticeably darker than the other",
    "specular_reflection": "saturated white highlights hiding the underlying surface",
    "color_distortion": "an unnatural colour cast",
    "motion_blur": "streaked, doubled edges in one direction",
    "speckle": "a granular texture that hides fine echoes",
    "shadowing": "dark bands below strong reflectors",
    "gaussian_noise": "random pixel noise over the whole image",
    "blur": "soft edges and lost fine detail",
    "low_resolution": "pixelated, coarse detail",
    "exposure": "clipped highlights or crushed shadows",
    "reduce_contrast": "a washed-out, flat appearance",
    "brightness": "an overall brightness shift",
}

_OPENINGS = (
    "This {noun} shows {findings}.",
    "In this {noun}, the findings are {findings}.",
    "The {noun} presents {findings}.",
    "Looking at this {noun}, one can see {findings}.",
    "Inspection of this {noun} reveals {findings}.",
)
_CLEAN = (
    "This {noun} is sharp and well exposed, with no noticeable noise or artifacts.",
    "The {noun} shows clear structures and good contrast; no degradation is visible.",
    "In this {noun}, edges are crisp and the signal is clean, without visible artifacts.",
    "No noticeable artifacts, noise or blur are present in this {noun}.",
)
_IMPACT = {
    "good": ("Fine details are fully assessable.", "Diagnostic detail is preserved."),
    "usable": ("Most diagnostic details remain visible, although some fine structures are "
               + "harder to assess.", "The image can still support a diagnosis with some caution.",
               "The degradation is noticeable but does not prevent interpretation."),
    "reject": ("The degradation obscures diagnostically relevant structures.",
               "Key structures cannot be assessed reliably, so a repeat acquisition is advisable.",
               "The artifacts are strong enough to compromise interpretation."),
}
_YES_NO = (
    "Does this {noun} show {name}?",
    "{Is_there} {name} in this {noun}?",
    "{Is} {name} visible in this {noun}?",
)
_WHAT = (
    "What is the most prominent quality issue in this {noun}?",
    "Which degradation most affects this {noun}?",
    "What type of degradation is present in this {noun}?",
)
_HOW = (
    "How severe {is} the {name} in this {noun}?",
    "How strong {is} the {name} in this {noun}?",
)


class QuestionError(MedQError):
    """Ground truth that questions cannot be built from (unknown verdict, bad level)."""


def degradation_name(type_: str) -> str:
    """Human-readable name: taxonomy name, or the identifier with underscores as spaces."""
    return taxonomy.DEGRADATION_NAMES.get(type_, type_.replace("_", " ").strip())


def is_plural(name: str) -> bool:
    """"motion artifacts", "specular reflections" are plural; "Rician noise" is not."""
    last = name.rstrip(").").split()[-1] if name.strip() else ""
    return last.endswith("s") and not last.endswith("ss")


def _grammar(name: str) -> dict[str, str]:
    plural = is_plural(name)
    return {"is": "are" if plural else "is", "Is": "Are" if plural else "Is",
            "Is_there": "Are there" if plural else "Is there"}


def severity_word(level: int) -> str:
    return taxonomy.LEVELS[int(level)]


class _Rand:
    """The few random draws text generation needs, from a sha256 counter stream: creating a
    NumPy generator (~40 us) or seeding ``random.Random`` (~30 us) is too slow for describing a
    million pool rows, and hash output is stable across Python versions."""

    def __init__(self, key: bytes):
        self._key = key
        self._counter = 0
        self._words: list[int] = []

    def _word(self) -> int:
        if not self._words:
            digest = hashlib.sha256(self._key + self._counter.to_bytes(4, "little")).digest()
            self._counter += 1
            self._words = [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 32, 4)]
        return self._words.pop()

    def integers(self, lo: int, hi: int) -> int:
        return lo + self._word() % (hi - lo)  # modulo bias < 1e-8 for these small ranges

    def random(self) -> float:
        return self._word() / 4294967296.0

    def permutation(self, n: int) -> list[int]:
        order = list(range(n))
        for i in range(n - 1, 0, -1):  # Fisher-Yates
            j = self.integers(0, i + 1)
            order[i], order[j] = order[j], order[i]
        return order

    def weighted_sample(self, weights: Sequence[float], k: int) -> list[int]:
        """`k` distinct indices, drawn one after the other proportionally to `weights`."""
        idx, w = list(range(len(weights))), list(weights)
        out = []
        for _ in range(k):
            u, acc, j = self.random() * sum(w), 0.0, len(w) - 1
            for pos, wt in enumerate(w):
                acc += wt
                if u < acc:
                    j = pos
                    break
            out.append(idx.pop(j))
            w.pop(j)
        return out


def _rng(seed: int, *salt: str) -> _Rand:
    return _Rand("|".join(("medq-text", str(seed), *salt)).encode())


def _noun(modality: str | None, rng: _Rand) -> str:
    nouns = _MODALITY_NOUN.get(modality or "", None)
    if nouns is None:
        return f"{modality} image" if modality else "medical image"
    return nouns[int(rng.integers(0, len(nouns)))]


def _clean_degradations(degradations: Sequence[dict]) -> list[dict]:
    out = []
    for n, d in enumerate(degradations or []):
        try:
            t, level = str(d["type"]), int(d["level"])
        except (KeyError, TypeError, ValueError):
            raise QuestionError(f"degradation #{n}: expected {{'type', 'level'}}, "
                                f"got {d!r}") from None
        if level not in (0, 1, 2):
            raise QuestionError(f"degradation #{n} ({t}): level must be 0, 1 or 2, got {level}")
        if level > 0 and t:
            out.append({"type": t, "level": level})
    return out


def _verdict(verdict: str | None, degradations: list[dict]) -> str:
    v = verdict or taxonomy.verdict_for(degradations)
    if v not in taxonomy.VERDICTS:
        raise QuestionError(f"verdict must be one of {taxonomy.VERDICTS}, got {v!r}")
    return v


def _family(modality: str | None) -> tuple[str, ...]:
    """Distractor vocabulary: the modality's own degradations, then general ones."""
    if modality in taxonomy.DEGRADATIONS:
        return taxonomy.degradations_for(modality)
    return taxonomy.DEGRADATIONS["general"]


def _distractors(modality: str | None, present: set[str], k: int, rng) -> list[str]:
    """`k` absent degradation types, preferring the modality's specific ones (plausible)."""
    family = [t for t in _family(modality) if t not in present]
    specific = [t for t in taxonomy.DEGRADATIONS.get(modality or "", ()) if t not in present]
    # Specific types get twice the weight of general ones.
    weights = [2.0 if t in specific else 1.0 for t in family]
    if len(family) <= k:
        extra = [t for t in taxonomy.all_degradations() if t not in present and t not in family]
        return family + extra[: k - len(family)]
    return [family[i] for i in rng.weighted_sample(weights, k)]


def _options(texts: list[str], answer_text: str, rng) -> tuple[dict[str, str], str]:
    order = rng.permutation(len(texts))
    shuffled = [texts[i] for i in order]
    options = {taxonomy.OPTION_LETTERS[i]: t for i, t in enumerate(shuffled)}
    answer = taxonomy.OPTION_LETTERS[shuffled.index(answer_text)]
    return options, answer


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _worst(degradations: list[dict]) -> dict:
    # Highest level; ties keep the listed order (the first named is the main finding).
    return max(degradations, key=lambda d: d["level"])


def yes_no_question(modality, degradations, seed, *, index=None, image=None) -> dict:
    rng = _rng(seed, "yes-no")
    degs = _clean_degradations(degradations)
    present = {d["type"] for d in degs}
    noun = _noun(modality, rng)
    ask_present = bool(degs) and bool(rng.random() < 0.5)
    if ask_present:
        d = degs[int(rng.integers(0, len(degs)))]
        subject, answer_text = d["type"], "Yes"
    else:
        subject = _distractors(modality, present, 1, rng)[0]
        answer_text = "No"
    template = _YES_NO[int(rng.integers(0, len(_YES_NO)))]
    name = degradation_name(subject)
    question = template.format(noun=noun, name=name, **_grammar(name))
    options, answer = _options(["Yes", "No"], answer_text, rng)
    return _record(index, image, question, options, answer, modality, "Yes-or-No", degs, subject)


def what_question(modality, degradations, seed, *, index=None, image=None) -> dict:
    rng = _rng(seed, "what")
    degs = _clean_degradations(degradations)
    present = {d["type"] for d in degs}
    noun = _noun(modality, rng)
    if degs:
        main = _worst(degs)["type"]
        answer_text = _cap(degradation_name(main))
        # Other present degradations are not offered as distractors (two right answers).
        others = [_cap(degradation_name(t)) for t in _distractors(modality, present, 3, rng)]
        if rng.random() < 0.5:
            others[-1] = NONE_OPTION
        subject = main
    else:
        answer_text = NONE_OPTION
        others = [_cap(degradation_name(t)) for t in _distractors(modality, present, 3, rng)]
        subject = ""
    template = _WHAT[int(rng.integers(0, len(_WHAT)))]
    options, answer = _options([answer_text] + others, answer_text, rng)
    return _record(index, image, template.format(noun=noun), options, answer, modality, "What",
                   degs, subject)


def how_question(modality, degradations, seed, *, index=None, image=None) -> dict:
    rng = _rng(seed, "how")
    degs = _clean_degradations(degradations)
    present = {d["type"] for d in degs}
    noun = _noun(modality, rng)
    if degs and rng.random() < 0.8:
        d = degs[int(rng.integers(0, len(degs)))]
        subject, level = d["type"], d["level"]
    else:  # an absent (but plausible) degradation: the answer is "Not present"
        subject, level = _distractors(modality, present, 1, rng)[0], 0
    template = _HOW[int(rng.integers(0, len(_HOW)))]
    name = degradation_name(subject)
    question = template.format(noun=noun, name=name, **_grammar(name))
    texts = [SEVERITY_OPTIONS[k] for k in (0, 1, 2)]
    options, answer = _options(texts, SEVERITY_OPTIONS[level], rng)
    return _record(index, image, question, options, answer, modality, "How", degs, subject)


def _record(index, image, question, options, answer, modality, qtype, degs, subject) -> dict:
    level = max((d["level"] for d in degs), default=0)
    rec = {"index": index, "image": image, "question": question, "options": options,
           "answer": answer, "modality": modality, "question_type": qtype, "level": level,
           "degradation": subject or "none"}
    return rec


_MAKERS = {"Yes-or-No": yes_no_question, "What": what_question, "How": how_question}


def make_questions(modality: str | None, degradations: Sequence[dict], seed: int, *,
                   image: np.ndarray | None = None, index_start: int | None = None,
                   types: Sequence[str] = taxonomy.QUESTION_TYPES) -> list[dict]:
    """One MCQ record per requested question type for one image's ground truth.

    Records carry ``index`` (``index_start + i`` when given, else None), ``image``, ``question``,
    ``options`` ({letter: text}), ``answer`` (letter), ``modality``, ``question_type``, ``level``
    (worst degradation level of the image, 0-2) and ``degradation`` (the type the question is
    about, "none" for clean-image What questions)."""
    out = []
    for i, qtype in enumerate(types):
        if qtype not in _MAKERS:
            raise QuestionError(f"unknown question type {qtype!r}; types: {list(_MAKERS)}")
        idx = None if index_start is None else index_start + i
        out.append(_MAKERS[qtype](modality, degradations, seed, index=idx, image=image))
    return out


def to_mcq(record: dict, item_id: str) -> MCQ:
    """A question record as the model interface's :class:`MCQ`."""
    return MCQ(item_id=item_id, image=record["image"], question=record["question"],
               options=dict(record["options"]), answer=record.get("answer"),
               modality=record.get("modality"), question_type=record.get("question_type"),
               level=record.get("level"))


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def describe(modality: str | None, degradations: Sequence[dict], verdict: str | None = None,
             seed: int = 0) -> str:
    """Reference quality description (varied wording by seed) ending exactly with
    ``taxonomy.verdict_sentence(verdict)``. The verdict defaults to the one the degradation
    levels imply."""
    rng = _rng(seed, "describe")
    degs = _clean_degradations(degradations)
    verdict = _verdict(verdict, degs)
    noun = _noun(modality, rng)
    sentences = []
    if not degs:
        sentences.append(_CLEAN[int(rng.integers(0, len(_CLEAN)))].format(noun=noun))
    else:
        findings = [f"{severity_word(d['level'])} {degradation_name(d['type'])}" for d in degs]
        template = _OPENINGS[int(rng.integers(0, len(_OPENINGS)))]
        sentences.append(_cap(template.format(noun=noun, findings=_join(findings))))
        for d in degs:
            effect = _EFFECTS.get(d["type"])
            if effect and rng.random() < 0.75:
                name = degradation_name(d["type"])
                verbs = (("produce", "cause", "show as") if is_plural(name)
                         else ("produces", "causes", "shows as"))
                verb = verbs[int(rng.integers(0, 3))]
                sentences.append(f"The {severity_word(d['level'])} {name} {verb} {effect}.")
    impact = _IMPACT[verdict]
    sentences.append(impact[int(rng.integers(0, len(impact)))])
    sentences.append(taxonomy.verdict_sentence(verdict))
    return " ".join(sentences)


def verdict_mcq(item_id: str, image: np.ndarray, modality: str | None = None,
                verdict: str | None = None) -> MCQ:
    """The standard overall-quality question: A Good, B Usable, C Reject (fixed order, so that
    answers are comparable across items). `verdict` sets the gold answer when known."""
    if verdict is not None and verdict not in VERDICT_LETTERS:
        raise QuestionError(f"verdict must be one of {taxonomy.VERDICTS}, got {verdict!r}")
    return MCQ(item_id=item_id, image=image, question=VERDICT_QUESTION,
               options=dict(VERDICT_OPTIONS),
               answer=VERDICT_LETTERS[verdict] if verdict else None,
               modality=modality, question_type="How")


def compare_description(modality: str | None, degradations_a: Sequence[dict],
                        degradations_b: Sequence[dict], seed: int = 0) -> tuple[str, str | None]:
    """Reference text for a paired item and the answer ("A" = first image better, "B" = second,
    None = equal quality). Quality order: verdict first, then the summed levels."""
    rng = _rng(seed, "compare")
    a, b = _clean_degradations(degradations_a), _clean_degradations(degradations_b)
    va, vb = taxonomy.verdict_for(a), taxonomy.verdict_for(b)
    score_a = (taxonomy.VERDICTS.index(va), sum(d["level"] for d in a))
    score_b = (taxonomy.VERDICTS.index(vb), sum(d["level"] for d in b))
    noun = _noun(modality, rng)

    def summary(degs):
        if not degs:
            return "no visible degradation"
        return _join([f"{severity_word(d['level'])} {degradation_name(d['type'])}" for d in degs])

    first = f"The first {noun} shows {summary(a)}, while the second shows {summary(b)}."
    if score_a == score_b:
        return (f"{first} Both images have comparable quality. "
                f"Overall, the quality of the two images is similar."), None
    better = "A" if score_a < score_b else "B"
    word = "first" if better == "A" else "second"
    return (f"{first} The {word} image therefore has the better quality. "
            f"Overall, the {word} image is better."), better
