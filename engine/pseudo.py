"""Pseudo-labels for the `auto` lane: the model's own reading of an image as a training label.

Backends that predict quality attributes directly (``predict_attributes``, e.g. the lite model)
are used as they are; any other backend is read through its description, parsed by the
rule-based findings extractor. Every label ends in the verdict sentence, so pseudo-labelled rows
pass the same curation rules as human ones.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medq.engine.models.base import QualityModel
from medq.engine.scoring.findings import analyze
from medq.engine.taxonomy import VERDICTS, verdict_for, verdict_sentence


def pseudo_labels(model: QualityModel, images: Sequence[np.ndarray],
                  modalities: Sequence[str | None] | None = None) -> list[dict]:
    """One label per image: {"verdict", "degradations" [{"type", "level"}], "modality",
    "description"}. `modalities` (known from ingest) take precedence over predictions."""
    images = list(images)
    if not images:
        return []
    modalities = list(modalities) if modalities is not None else [None] * len(images)
    texts = model.describe(images)
    attrs = (model.predict_attributes(images) if hasattr(model, "predict_attributes")
             else [None] * len(images))
    out = []
    for text, att, known in zip(texts, attrs, modalities):
        if att is not None:
            verdict = att["verdict"]
            degs = [{"type": d["type"], "level": int(d["level"])} for d in att["degradations"]]
            modality = known or att.get("modality")
        else:
            found = analyze(text)
            degs = [{"type": min(m.types) if m.head is None else m.head,
                     "level": int(m.level or 1)} for m in found.present]
            verdict = found.verdict if found.verdict in VERDICTS else verdict_for(degs)
            modality = known or found.modality
        body = text.rsplit("Overall,", 1)[0].strip()
        out.append({"verdict": verdict, "degradations": degs, "modality": modality,
                    "description": f"{body} {verdict_sentence(verdict)}".strip()})
    return out
