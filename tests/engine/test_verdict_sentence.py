"""One reader of the verdict sentence: labels, MLLM outputs and description scoring agree."""
from __future__ import annotations

import pytest

from medq.engine.formats.world_labels import verdict_from_text
from medq.engine.scoring.description import extract_verdict
from medq.engine.taxonomy import VERDICT_SENTENCE, VERDICTS, stated_verdict

CASES = [
    ("Mild noise. Overall, the quality of this image is usable.", "usable"),
    ("Sharp. Overall, the quality of this image is **good**.", "good"),
    ("Overall the image quality of the image was 'rejected'.", "reject"),
    ("OVERALL, THE QUALITY OF THIS IMAGE IS GOOD", "good"),
    ("Overall, the quality of this image is good. Overall, the quality of this image is reject.",
     "reject"),  # the last sentence is the conclusion
    ("Overall, the quality of this image can be considered as usable.", "usable"),
]


@pytest.mark.parametrize(("text", "verdict"), CASES)
def test_every_reader_gets_the_same_verdict(text, verdict):
    assert stated_verdict(text) == verdict_from_text(text) == extract_verdict(text) == verdict


@pytest.mark.parametrize("verdict", VERDICTS)
def test_the_sentence_we_write_is_the_sentence_we_read(verdict):
    assert stated_verdict("Blur. " + VERDICT_SENTENCE.format(verdict=verdict)) == verdict


def test_no_sentence_no_verdict():
    assert stated_verdict(None) is None and stated_verdict("") is None
    assert stated_verdict("The image looks good.") is None  # a bare word is not the sentence
    assert extract_verdict("The image looks good.") == "good"  # the lenient scorer still reads it
