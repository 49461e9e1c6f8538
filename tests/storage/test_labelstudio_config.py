"""Med-IQA labeling interface and result conversion (no server needed)."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from medq.engine.taxonomy import DEGRADATION_NAMES, VERDICTS, all_degradations
from medq.storage.labelstudio.label_configs import (
    labels_to_result,
    paired_config,
    result_to_labels,
    single_image_config,
)


def test_single_image_config_covers_the_taxonomy():
    root = ET.fromstring(single_image_config())
    image = root.find(".//Image")
    assert image.get("zoom") == "true" and image.get("brightnessControl") == "true"
    assert image.get("contrastControl") == "true"
    choices = {c.get("name"): c for c in root.iter("Choices")}
    assert [c.get("value") for c in choices["verdict"]] == list(VERDICTS)
    assert choices["verdict"].get("required") == "true"
    types = [c.get("value") for c in choices["degradations"]]
    assert types == list(all_degradations()) and choices["degradations"].get("choice") == "multiple"
    assert choices["degradations"][0].get("hint") == DEGRADATION_NAMES[types[0]]
    for t in types:  # every type has its own mild/severe choice, shown only when the type is ticked
        level = choices[f"level_{t}"]
        assert [c.get("value") for c in level] == ["mild", "severe"]
    views = [v for v in root.iter("View") if v.get("visibleWhen") == "choice-selected"]
    assert {v.get("whenChoiceValue") for v in views} == set(types)
    assert root.find(".//TextArea").get("name") == "description"


def test_paired_config():
    root = ET.fromstring(paired_config())
    assert [i.get("value") for i in root.iter("Image")] == ["$image", "$image_b"]
    better = next(c for c in root.iter("Choices") if c.get("name") == "better")
    assert [c.get("value") for c in better] == ["A", "B"]


def test_round_trip_and_problems():
    labels = {"verdict": "usable", "degradations": [{"type": "motion", "level": 1},
                                                    {"type": "ghosting", "level": 2}],
              "description": "Motion and ghosting. Overall, the quality of this image is usable."}
    parsed = result_to_labels(labels_to_result(labels))
    assert parsed.problems == [] and parsed.labels() == labels
    no_level = [r for r in labels_to_result(labels) if r["from_name"] != "level_ghosting"]
    assert result_to_labels(no_level).problems == ["degradation 'ghosting' has no level (mild/severe)"]
    assert result_to_labels([]).problems == ["missing verdict"]
    odd = labels_to_result({"verdict": "fine"})
    assert "unknown verdict 'fine'" in result_to_labels(odd).problems[0]
    pair = result_to_labels(labels_to_result({"better": "B", "description": "B is sharper."}),
                            paired=True)
    assert pair.better == "B" and pair.problems == []
    assert result_to_labels([], paired=True).problems == ["missing comparison (better: A or B)"]


@pytest.mark.parametrize("text", [["a", "b"], "a\nb"])
def test_textarea_text_list_or_string(text):
    region = [{"from_name": "verdict", "value": {"choices": ["good"]}},
              {"from_name": "description", "value": {"text": text}}]
    assert result_to_labels(region).description == "a\nb"
