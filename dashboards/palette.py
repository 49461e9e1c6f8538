"""One colour palette for every dashboard chart, so a modality, a lane or a status has the same
colour on every view.

Modalities use the Okabe-Ito colour-blind-safe set; lanes and queue statuses use hues that do not
collide with each other inside one chart. :func:`scale` turns a mapping into an Altair colour
scale restricted to the values a chart actually shows (unknown values get stable fallbacks).
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping

from medq.engine.taxonomy import LEVELS, MODALITIES, QUESTION_TYPES

MODALITY: dict[str, str] = {
    "CT": "#0072B2",              # blue
    "MRI": "#D55E00",             # vermillion
    "X-ray": "#56B4E9",           # sky blue
    "fundus": "#E69F00",          # orange
    "histopathology": "#CC79A7",  # reddish purple
    "endoscopy": "#009E73",       # bluish green
    "ultrasound": "#8C6D31",      # brown
}
assert set(MODALITY) == set(MODALITIES), "palette must cover every taxonomy modality"

LANE: dict[str, str] = {"expert": "#6A3D9A", "verify": "#FF7F00", "auto": "#33A02C"}
LANE_ORDER: tuple[str, ...] = ("expert", "verify", "auto")

STATUS: dict[str, str] = {"queued": "#BDBDBD", "sent": "#4292C6", "done": "#238B45",
                          "failed": "#CB181D", "deleted": "#807DBA"}
STATUS_ORDER: tuple[str, ...] = ("queued", "sent", "done", "failed", "deleted")

LEVEL: dict[str, str] = {"none": "#9ECAE1", "mild": "#4292C6", "severe": "#08306B"}
assert set(LEVEL) == set(LEVELS.values())
QUESTION_TYPE: dict[str, str] = {"Yes-or-No": "#1B9E77", "What": "#D95F02", "How": "#7570B3"}
assert set(QUESTION_TYPE) == set(QUESTION_TYPES)

DECISION: dict[str, str] = {"promoted": "#2CA02C", "rejected": "#D62728"}
SERIES: dict[str, str] = {"champion": "#1F3A5F", "candidate": "#7F7F7F",
                          "accuracy": "#1F3A5F", "description": "#B5651D",
                          "failure yield": "#D62728", "pool base rate": "#7F7F7F",
                          "start": "#BDBDBD", "latest": "#1F3A5F"}
STRATEGY_RANDOM = "#7F7F7F"
_STRATEGIES = ("#1F3A5F", "#D62728", "#2CA02C", "#9467BD", "#FF7F0E", "#17BECF")

# Fallbacks for values outside a mapping (a user's own modality or degradation type): stable per
# value (crc32, not Python's salted hash) so a colour never changes between reruns.
_FALLBACK = ("#4E79A7", "#F28E2B", "#E15759", "#76B7B2", "#59A14F", "#EDC948", "#B07AA1",
             "#FF9DA7", "#9C755F", "#BAB0AC")


def color_for(value: str, mapping: Mapping[str, str]) -> str:
    if value in mapping:
        return mapping[value]
    return _FALLBACK[zlib.crc32(str(value).encode()) % len(_FALLBACK)]


def strategy_colors(strategies: Iterable[str]) -> dict[str, str]:
    """Sample-efficiency strategies: `random` is always grey, the others take series colours."""
    out, i = {}, 0
    for s in strategies:
        if s.lower().startswith("random"):
            out[s] = STRATEGY_RANDOM
        else:
            out[s] = _STRATEGIES[i % len(_STRATEGIES)]
            i += 1
    return out


def ordered(values: Iterable[str], order: Iterable[str] = ()) -> list[str]:
    """Distinct `values`, known ones in `order` first, the rest sorted."""
    present = {str(v) for v in values if v is not None}
    order = list(order)
    return [v for v in order if v in present] + sorted(present - set(order))


def scale(mapping: Mapping[str, str], values: Iterable[str], order: Iterable[str] = ()):
    """An Altair colour scale whose domain is the values shown (ordered), colours from `mapping`."""
    import altair as alt
    domain = ordered(values, order or mapping.keys())
    return alt.Scale(domain=domain, range=[color_for(v, mapping) for v in domain])


class _DegradationColors(dict):
    """Every degradation type in one slate blue, clean images ("none") in grey."""

    def __init__(self):
        super().__init__(none="#BDBDBD")

    def __contains__(self, key) -> bool:
        return True

    def __missing__(self, key) -> str:
        return "#4C6A92"


# Which palette and order colours each breakdown dimension of the dashboard.
DIMENSIONS: dict[str, tuple[Mapping[str, str], tuple[str, ...]]] = {
    "modality": (MODALITY, MODALITIES),
    "question type": (QUESTION_TYPE, QUESTION_TYPES),
    "level": (LEVEL, tuple(LEVELS.values())),
    # one hue for every degradation type (a type may span modalities); "none" grey
    "degradation": (_DegradationColors(), ("none",)),
}
