"""The Med-IQA labeling interfaces for Label Studio and the conversion between MedQ labels and
Label Studio results.

Two interfaces, generated from :mod:`medq.engine.taxonomy` so a new degradation type appears in
the interface without editing XML:

- :func:`single_image_config` (lanes ``expert``, ``verify``, ``auto``): the image with zoom,
  brightness and contrast controls (window / level), the overall verdict (good / usable / reject,
  hotkeys 1-3), the degradation types present (multiple choice; each selected type reveals its own
  mild / severe choice) and a free-text description.
- :func:`paired_config` (lane ``paired``): two images side by side with the same controls, which
  one is better (A / B) and why.

Task data fields used by the interfaces: ``image`` (and ``image_b`` for pairs): a URL the server
can reach; ``header``: one line shown above the image (modality, lane, round, uncertainty).

Results are Label Studio ``choices`` / ``textarea`` regions. :func:`labels_to_result` builds the
pre-annotation of the verify lane; :func:`result_to_labels` reads an annotation back, reporting
what is missing instead of guessing.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import quoteattr

from medq.engine.taxonomy import DEGRADATION_NAMES, DEGRADATIONS, LEVELS, VERDICTS, all_degradations

IMAGE = "image"
IMAGE_B = "image_b"
VERDICT = "verdict"
DEGRADATIONS_TAG = "degradations"
DESCRIPTION = "description"
BETTER = "better"
LEVEL_PREFIX = "level_"
LEVEL_VALUES = {LEVELS[1]: 1, LEVELS[2]: 2}  # "mild" -> 1, "severe" -> 2
VERDICT_HINTS = {
    "good": "No quality problem that matters for diagnosis.",
    "usable": "Degraded (mild) but still readable for diagnosis.",
    "reject": "Severe degradation: not usable for diagnosis.",
}
DESCRIPTION_HINT = ("Describe what is wrong (type, where, how strong) and end with: "
                    "Overall, the quality of this image is good / usable / reject.")


def ordered_degradation_types() -> tuple[str, ...]:
    """All known types, grouped by modality family then general ones (the interface's order)."""
    return all_degradations()


def _image_tag(name: str, value: str) -> str:
    # Brightness + contrast sliders act as window / level on the displayed image; zoom keeps
    # full resolution (pan with the hand tool).
    return (f'<Image name="{name}" value="${value}" zoom="true" zoomControl="true" zoomBy="1.5" '
            f'brightnessControl="true" contrastControl="true" rotateControl="true" '
            f'maxWidth="100%" defaultZoom="fit" horizontalAlignment="center"/>')


def _choice(value: str, hint: str | None = None, hotkey: str | None = None) -> str:
    attrs = f"value={quoteattr(value)}"
    if hint:
        attrs += f" hint={quoteattr(hint)}"
    if hotkey:
        attrs += f' hotkey="{hotkey}"'
    return f"<Choice {attrs}/>"


def single_image_config(types: Iterable[str] | None = None) -> str:
    """Label config of the single-image lanes (see module docstring)."""
    types = tuple(types) if types is not None else ordered_degradation_types()
    verdicts = "".join(_choice(v, VERDICT_HINTS.get(v), str(i + 1)) for i, v in enumerate(VERDICTS))
    deg_choices = "".join(_choice(t, DEGRADATION_NAMES.get(t, t)) for t in types)
    levels = "".join(
        f'<View visibleWhen="choice-selected" whenTagName="{DEGRADATIONS_TAG}" '
        f'whenChoiceValue={quoteattr(t)} style="padding-left:12px">'
        f'<Header value={quoteattr(f"{t}: level")} size="6"/>'
        f'<Choices name="{LEVEL_PREFIX}{t}" toName="{IMAGE}" choice="single-radio" showInline="true">'
        f'{_choice(LEVELS[1])}{_choice(LEVELS[2])}</Choices></View>'
        for t in types)
    return (
        '<View>'
        '<View style="display:flex; gap:16px; align-items:flex-start; flex-wrap:wrap">'
        '<View style="flex:3; min-width:420px">'
        '<Header value="$header" size="5"/>'
        f'{_image_tag(IMAGE, IMAGE)}'
        '</View>'
        '<View style="flex:2; min-width:320px">'
        '<Header value="Overall verdict" size="5"/>'
        f'<Choices name="{VERDICT}" toName="{IMAGE}" choice="single-radio" required="true" '
        f'showInline="true">{verdicts}</Choices>'
        '<Header value="Degradations present (then pick a level for each)" size="5"/>'
        f'<Choices name="{DEGRADATIONS_TAG}" toName="{IMAGE}" choice="multiple" showInline="true">'
        f'{deg_choices}</Choices>'
        f'{levels}'
        '<Header value="Description" size="5"/>'
        f'<TextArea name="{DESCRIPTION}" toName="{IMAGE}" rows="4" editable="true" '
        f'maxSubmissions="1" placeholder={quoteattr(DESCRIPTION_HINT)}/>'
        '</View></View></View>')


def paired_config() -> str:
    """Label config of the paired comparison lane: which of two images has the better quality."""
    return (
        '<View>'
        '<Header value="$header" size="5"/>'
        '<View style="display:flex; gap:12px">'
        f'<View style="flex:1"><Header value="A" size="6"/>{_image_tag(IMAGE, IMAGE)}</View>'
        f'<View style="flex:1"><Header value="B" size="6"/>{_image_tag(IMAGE_B, IMAGE_B)}</View>'
        '</View>'
        '<Header value="Which image has the better quality?" size="5"/>'
        f'<Choices name="{BETTER}" toName="{IMAGE}" choice="single-radio" required="true" '
        f'showInline="true">{_choice("A", "left image", "a")}{_choice("B", "right image", "b")}'
        '</Choices>'
        '<Header value="Why" size="5"/>'
        f'<TextArea name="{DESCRIPTION}" toName="{IMAGE}" rows="3" editable="true" '
        'maxSubmissions="1" placeholder="Compare the degradations of A and B."/>'
        '</View>')


# -- results ------------------------------------------------------------------------------------
def _choices_region(from_name: str, values: list[str], to_name: str = IMAGE) -> dict:
    return {"from_name": from_name, "to_name": to_name, "type": "choices",
            "value": {"choices": values}}


def labels_to_result(labels: Mapping[str, Any]) -> list[dict]:
    """MedQ labels {"verdict", "degradations": [{"type", "level"}], "description"} (or
    {"better", "description"} for pairs) -> Label Studio result regions."""
    result: list[dict] = []
    if labels.get("better"):
        result.append(_choices_region(BETTER, [str(labels["better"])]))
    if labels.get("verdict"):
        result.append(_choices_region(VERDICT, [str(labels["verdict"])]))
    degs = list(labels.get("degradations") or [])
    if degs:
        result.append(_choices_region(DEGRADATIONS_TAG, [str(d["type"]) for d in degs]))
        for d in degs:
            result.append(_choices_region(f"{LEVEL_PREFIX}{d['type']}", [LEVELS[int(d["level"])]]))
    if labels.get("description"):
        result.append({"from_name": DESCRIPTION, "to_name": IMAGE, "type": "textarea",
                       "value": {"text": [str(labels["description"])]}})
    return result


@dataclass
class ParsedResult:
    """What an annotation says, plus what is missing or invalid (`problems`, empty when clean)."""

    verdict: str | None = None
    degradations: list[dict] = field(default_factory=list)
    description: str | None = None
    better: str | None = None
    problems: list[str] = field(default_factory=list)

    def labels(self) -> dict:
        out = {"verdict": self.verdict, "degradations": self.degradations,
               "description": self.description}
        if self.better is not None:
            out["better"] = self.better
        return out


def _choices_of(region: Mapping[str, Any]) -> list[str]:
    value = region.get("value") or {}
    return [str(c) for c in (value.get("choices") or [])]


def result_to_labels(result: Iterable[Mapping[str, Any]] | None, *, paired: bool = False
                     ) -> ParsedResult:
    """Label Studio result regions -> MedQ labels. Missing verdict (or `better` for pairs), a
    selected degradation without a level, or an unknown verdict are reported in `problems`."""
    out = ParsedResult()
    types: list[str] = []
    levels: dict[str, str] = {}
    texts: list[str] = []
    for region in result or []:
        name = str(region.get("from_name", ""))
        if name == VERDICT:
            vals = _choices_of(region)
            out.verdict = vals[0] if vals else None
        elif name == BETTER:
            vals = _choices_of(region)
            out.better = vals[0] if vals else None
        elif name == DEGRADATIONS_TAG:
            types.extend(v for v in _choices_of(region) if v not in types)
        elif name.startswith(LEVEL_PREFIX):
            vals = _choices_of(region)
            if vals:
                levels[name[len(LEVEL_PREFIX):]] = vals[0]
        elif name == DESCRIPTION:
            value = region.get("value") or {}
            text = value.get("text")
            texts.extend([text] if isinstance(text, str) else [str(t) for t in (text or [])])
    description = "\n".join(t.strip() for t in texts if t and t.strip())
    out.description = description or None
    if paired:
        if out.better not in ("A", "B"):
            out.problems.append("missing comparison (better: A or B)" if out.better is None
                                else f"invalid comparison {out.better!r} (expected A or B)")
        return out
    if out.verdict is None:
        out.problems.append("missing verdict")
    elif out.verdict not in VERDICTS:
        out.problems.append(f"unknown verdict {out.verdict!r} (expected one of {list(VERDICTS)})")
    for t in types:
        lvl = levels.get(t)
        if lvl is None:
            out.problems.append(f"degradation {t!r} has no level (mild/severe)")
        elif lvl not in LEVEL_VALUES:
            out.problems.append(f"degradation {t!r} has unknown level {lvl!r}")
        else:
            out.degradations.append({"type": t, "level": LEVEL_VALUES[lvl]})
    return out


def known_modality_families() -> tuple[str, ...]:
    return tuple(DEGRADATIONS)
