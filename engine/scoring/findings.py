"""What a free-text quality description says: degradations (present or denied), their levels,
the modality and the verdict. Pure text rules over the taxonomy's vocabulary; used by the
rule-based judge (and by anything that needs labels back from text).

Lexicon: every taxonomy degradation is found by its display name (``DEGRADATION_NAMES``), its
identifier written out ("sparse view", "bias-field") and the synonyms below. Generic words
("noise", "blurry", "streaks", "motion") name a *family* of degradations: such a mention is
compatible with each member but only an exact match for the family's head type.

Levels: mild/slight/minor/subtle/moderate... -> 1, severe/strong/significant/marked... -> 2, found
in the same clause within a few words of the mention. Negations ("no", "without", "free of",
"-free", "is not seen") mark a degradation as denied.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from medq.engine.scoring.description import extract_verdict
from medq.engine.taxonomy import DEGRADATION_NAMES

# Specific phrases per degradation type (in addition to the display name and the identifier).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "low_dose": ("low-dose", "low dose", "quantum noise", "quantum mottle", "photon starvation"),
    "sparse_view": ("sparse-view", "sparse view", "sparse sampling", "view aliasing"),
    "limited_angle": ("limited-angle", "limited angle", "missing wedge", "missing angles"),
    "metal_streak": ("metal artifact", "metal artefact", "metallic streak", "metal streak",
                     "beam hardening"),
    "motion": ("motion artifact", "motion artefact", "movement artifact", "patient motion",
               "motion-induced artifact", "motion corruption"),
    "ghosting": ("ghosting", "ghost artifact", "ghost image", "ghosts", "ghost"),
    "bias_field": ("bias field", "bias-field", "intensity inhomogeneity", "intensity non-uniformity",
                   "intensity nonuniformity", "inhomogeneous intensity", "shading artifact",
                   "uneven intensity", "brightness drift", "intensity drift", "shading"),
    "undersampling": ("undersampling", "under-sampling", "undersampled", "aliasing",
                      "wrap-around", "wraparound", "gibbs"),
    "rician_noise": ("rician noise", "rician"),
    "spike": ("spike artifact", "spike noise", "herringbone", "corduroy", "spike"),
    "scatter": ("scatter haze", "scatter", "scattered radiation", "haze", "hazy", "veiling glare"),
    "stain_variation": ("stain variation", "staining variation", "uneven staining",
                        "inconsistent staining", "stain inconsistency", "pale staining",
                        "over-staining", "overstaining", "faded stain"),
    "focus_blur": ("focus blur", "out of focus", "out-of-focus", "defocus", "defocused",
                   "poorly focused"),
    "compression": ("compression artifact", "compression artefact", "jpeg artifact",
                    "blocking artifact", "blockiness", "blocky", "compression"),
    "uneven_illumination": ("uneven illumination", "non-uniform illumination",
                            "nonuniform illumination", "uneven lighting", "vignetting",
                            "uneven brightness", "illumination inhomogeneity"),
    "specular_reflection": ("specular reflection", "specular highlight", "specular", "glare",
                            "light reflection", "reflections"),
    "color_distortion": ("color distortion", "colour distortion", "color cast", "colour cast",
                         "color shift", "colour shift", "discoloration", "discolouration",
                         "color deviation", "abnormal color"),
    "motion_blur": ("motion blur", "motion-blurred", "motion blurring", "motion smear"),
    "speckle": ("speckle noise", "speckle"),
    "shadowing": ("acoustic shadowing", "acoustic shadow", "shadowing"),
    "gaussian_noise": ("gaussian noise", "random noise", "white noise"),
    "blur": ("blurring", "blurred", "blurry", "blur", "unsharp", "lack of sharpness",
             "loss of sharpness", "reduced sharpness", "poor sharpness", "soft edges"),
    "low_resolution": ("low resolution", "low-resolution", "reduced resolution", "poor resolution",
                       "limited resolution", "pixelated", "pixelation", "pixelated", "downsampled",
                       "resolution loss", "loss of resolution"),
    "exposure": ("exposure error", "overexposed", "over-exposed", "underexposed", "under-exposed",
                 "overexposure", "over-exposure", "underexposure", "under-exposure",
                 "improper exposure", "exposure"),
    "reduce_contrast": ("reduced contrast", "low contrast", "poor contrast", "decreased contrast",
                        "contrast reduction", "contrast loss", "loss of contrast", "washed out",
                        "washed-out", "flat contrast"),
    "brightness": ("brightness shift", "too bright", "too dark", "overly bright", "overly dark",
                   "darkened", "brightened", "abnormal brightness", "brightness"),
}

# Generic words -> (family members, head type or None). Matched only where no specific phrase
# covers the same words (longest match wins).
FAMILIES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "noise": (("low_dose", "rician_noise", "gaussian_noise", "speckle"), "gaussian_noise"),
    "noisy": (("low_dose", "rician_noise", "gaussian_noise", "speckle"), "gaussian_noise"),
    "grainy": (("low_dose", "rician_noise", "gaussian_noise", "speckle"), "gaussian_noise"),
    "graininess": (("low_dose", "rician_noise", "gaussian_noise", "speckle"), "gaussian_noise"),
    "mottle": (("low_dose", "gaussian_noise"), "low_dose"),
    "streak": (("sparse_view", "metal_streak", "limited_angle"), None),
    "streaks": (("sparse_view", "metal_streak", "limited_angle"), None),
    "streaking": (("sparse_view", "metal_streak", "limited_angle"), None),
    "motion": (("motion", "motion_blur"), "motion"),
    "ringing": (("undersampling", "compression"), None),  # Gibbs (k-space) or JPEG ringing
    "illumination": (("uneven_illumination", "exposure", "brightness"), "uneven_illumination"),
    "lighting": (("uneven_illumination", "exposure", "brightness"), "uneven_illumination"),
}
# Attribute nouns that name no defect by themselves ("exposure is adequate"): a positive word
# near them reads as a denial.
NEUTRAL_PHRASES = frozenset({"illumination", "lighting", "exposure", "brightness", "compression",
                             "motion", "scatter"})
POSITIVE_WORDS = ("even", "uniform", "adequate", "appropriate", "good", "normal", "well",
                  "balanced", "sufficient", "satisfactory", "optimal", "proper", "correct",
                  "consistent", "excellent", "acceptable", "fine", "preserved", "stable")
LIST_JOINERS = frozenset({"and", "or", "nor", "of", "any"})
# The "blur" type's own words double as the blur family (focus and motion blur are blurs too).
BLUR_FAMILY = ("blur", "focus_blur", "motion_blur")

MILD_WORDS = ("mild", "mildly", "slight", "slightly", "minor", "subtle", "faint", "minimal",
              "light", "little", "moderate", "moderately", "some", "somewhat", "small")
SEVERE_WORDS = ("severe", "severely", "strong", "strongly", "significant", "significantly",
                "heavy", "heavily", "marked", "markedly", "pronounced", "prominent", "extensive",
                "substantial", "considerable", "serious", "seriously", "intense", "obvious",
                "major", "gross", "grossly", "extreme", "extremely", "massive")
NEGATION_WORDS = ("no", "not", "without", "free", "absence", "absent", "lacks", "lacking",
                  "neither", "nor", "none", "never")
_TRAILING_NEGATION = re.compile(
    r"^\s*(?:-free\b|(?:is|are|was|were)?\s*(?:not\s+(?:seen|observed|present|visible|evident|"
    r"detected|apparent|noted|identified)|absent)\b)")
_CONTRAST = r"\b(?:but|while|whereas|although|though|however|yet|except)\b"
_CLAUSE_SPLIT = re.compile(r"[.;!?\n]|" + _CONTRAST)
_CLAUSE_SPLIT_COMMAS = re.compile(r"[.;:!?\n]|,(?=\s)|" + _CONTRAST)
# Level cues do not reach across punctuation or a conjunction ("mild X and severe Y").
_LEVEL_STOP = re.compile(r"[,;:()]|\b(?:and|or|nor|with|plus)\b")
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
CLEAN_CLAIM = re.compile(
    r"\b(?:no|without|free\s+of|absence\s+of)\s+(?:\w+\s+){0,2}(?:artifacts?|artefacts?|"
    r"degradations?|distortions?|quality\s+(?:issues|problems))\b|\bartifact-free\b|"
    r"\bclean\s+image\b|\bhigh[\s-]quality\b")
LEVEL_WINDOW = 4  # words either side of a mention searched for a level cue

MODALITY_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("CT", re.compile(r"\bct\b|computed\s+tomograph|\bcbct\b")),
    ("MRI", re.compile(r"\bmri?\b|magnetic\s+resonance|\bt[12][\s-]weighted\b|\bflair\b")),
    ("X-ray", re.compile(r"x-?ray|radiograph|\bcxr\b|mammogra")),
    ("fundus", re.compile(r"\bfundus\b|\bretina|\boptic\s+dis[ck]\b")),
    ("histopathology", re.compile(r"histopatholog|histolog|\bh&e\b|whole[\s-]slide|"
                                  r"tissue\s+section|microscop")),
    ("endoscopy", re.compile(r"endoscop|colonoscop|gastroscop|laparoscop|bronchoscop")),
    ("ultrasound", re.compile(r"ultrasound|sonograph|echocardiog|\bechograph")),
)


@dataclass
class Mention:
    """One degradation mention. `types` are the degradation ids it may name (one for a specific
    phrase, several for a generic word); `head` the type a generic word names exactly (None when
    it names none exactly); `level` 1/2 or None; `negated` when the text denies it."""

    phrase: str
    start: int
    types: frozenset[str]
    specific: bool
    head: str | None = None
    level: int | None = None
    negated: bool = False

    def exact_for(self, dtype: str) -> bool:
        return dtype in self.types and (self.specific or self.head == dtype)


@dataclass
class Findings:
    """Everything :func:`analyze` read from one text."""

    mentions: list[Mention] = field(default_factory=list)
    modality: str | None = None
    verdict: str | None = None
    claims_clean: bool = False

    @property
    def present(self) -> list[Mention]:
        return [m for m in self.mentions if not m.negated]

    @property
    def denied(self) -> list[Mention]:
        return [m for m in self.mentions if m.negated]


@lru_cache(maxsize=1)
def _lexicon() -> tuple[re.Pattern, dict[str, tuple[frozenset[str], bool, str | None]]]:
    """One alternation of every phrase (longest first) and what each phrase names."""
    table: dict[str, tuple[frozenset[str], bool, str | None]] = {}

    def add(phrase: str, types: frozenset[str], specific: bool, head: str | None) -> None:
        phrase = phrase.lower().strip()
        if phrase and phrase not in table:
            table[phrase] = (types, specific, head)

    # Family words first: where a family word is also an identifier ("motion") it stays generic
    # (exact for its head type, partial for the other members).
    for word, (members, head) in FAMILIES.items():
        add(word, frozenset(members), False, head)
    for dtype, name in DEGRADATION_NAMES.items():
        if dtype == "blur":
            continue  # its words are the blur family, added from SYNONYMS below
        # "spike (herringbone) artifacts" -> "spike artifacts" and "herringbone"
        outer = re.sub(r"\s*\([^)]*\)\s*", " ", name).strip()
        for part in [outer, *re.findall(r"\(([^)]*)\)", name)]:
            add(part, frozenset({dtype}), True, dtype)
        add(dtype.replace("_", " "), frozenset({dtype}), True, dtype)
        add(dtype.replace("_", "-"), frozenset({dtype}), True, dtype)
    for dtype, phrases in SYNONYMS.items():
        for phrase in phrases:
            if dtype == "blur":
                add(phrase, frozenset(BLUR_FAMILY), False, "blur")
            else:
                add(phrase, frozenset({dtype}), True, dtype)
    # The generic words inside specific names ("low-dose noise", "ghosting artifacts") are
    # covered because the longest alternative is tried first at each position.
    longest_first = sorted(table, key=len, reverse=True)
    pattern = re.compile(r"(?<![a-z0-9])(" + "|".join(re.escape(p) for p in longest_first) +
                         r")(?:e?s)?(?![a-z0-9])")
    return pattern, table


def clause_spans(text: str, *, commas: bool = False) -> list[tuple[int, int]]:
    """(start, end) of each clause of `text`: split at sentence ends and contrastives ("but",
    "while", ...), and at commas and colons when `commas` (not by default: commas also separate
    the items of a list, "no noise, blur or ghosting")."""
    spans, start = [], 0
    for m in (_CLAUSE_SPLIT_COMMAS if commas else _CLAUSE_SPLIT).finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    return [(a, b) for a, b in spans if b > a]


def _level_near(words_before: list[str], words_after: list[str]) -> int | None:
    """Level cue nearest to the mention: preceding words first (closest first), then following."""
    for w in reversed(words_before[-LEVEL_WINDOW:]):
        if w in SEVERE_WORDS:
            return 2
        if w in MILD_WORDS:
            return 1
    for w in words_after[:LEVEL_WINDOW]:
        if w in SEVERE_WORDS:
            return 2
        if w in MILD_WORDS:
            return 1
    return None


def analyze(text: str | None) -> Findings:
    """Read degradations, levels, negations, modality, verdict and clean claims from `text`."""
    if not text:
        return Findings()
    low = str(text).lower()
    pattern, table = _lexicon()
    raw = [(m.start(1), m.end(), m.group(1)) for m in pattern.finditer(low)]
    mentions: list[Mention] = []
    for c_start, c_end in clause_spans(low):
        inside = [r for r in raw if c_start <= r[0] < c_end]
        for i, (start, end, phrase) in enumerate(inside):
            types, specific, head = table[phrase]
            # Level and negation cues stop at the neighbouring mentions of the same clause.
            left = inside[i - 1][1] if i > 0 else c_start
            right = inside[i + 1][0] if i + 1 < len(inside) else c_end
            before = _WORD.findall(low[left:start])
            after = _WORD.findall(low[end:right])
            level = _level_near(_WORD.findall(_LEVEL_STOP.split(low[left:start])[-1]),
                                _WORD.findall(_LEVEL_STOP.split(low[end:right])[0]))
            negated = (any(w in NEGATION_WORDS for w in before[-5:])
                       or bool(_TRAILING_NEGATION.match(low[end:right])))
            if (not negated and level is None and mentions and i > 0 and mentions[-1].negated
                    and set(before) <= LIST_JOINERS):
                negated = True  # "no ghosting, noise or blur": the denial runs through the list
            if (not negated and phrase in NEUTRAL_PHRASES
                    and any(w in POSITIVE_WORDS for w in before[-3:] + after[:3])):
                negated = True  # "exposure is adequate"
            mentions.append(Mention(phrase=phrase, start=start, types=types, specific=specific,
                                    head=head, level=level, negated=negated))
    modality = None
    first = len(low) + 1
    for name, pat in MODALITY_PATTERNS:
        m = pat.search(low)
        if m and m.start() < first:
            modality, first = name, m.start()
    return Findings(mentions=mentions, modality=modality, verdict=extract_verdict(low),
                    claims_clean=bool(CLEAN_CLAIM.search(low)))
