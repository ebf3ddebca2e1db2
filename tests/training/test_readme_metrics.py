"""README.md's evaluate paragraph lists every mAP key `training evaluate` reports (training.evaluate.METRIC_SOURCES)."""

from __future__ import annotations

import re
from pathlib import Path

from training.evaluate import METRIC_SOURCES

README = Path(__file__).resolve().parents[2] / "README.md"
NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


def test_readme_names_every_map_key_and_counts_the_map_200_conventions():
    text = README.read_text()
    map_keys = [key for key in METRIC_SOURCES if key.startswith("map_")]
    assert [key for key in map_keys if f"`{key}`" not in text] == []
    counts = re.findall(r"\b(\w+) published conventions", text)
    assert counts, "README no longer says how many mAP@200 conventions are reported"
    at_200 = sum(key.startswith("map_200") for key in map_keys)
    assert [NUMBERS.get(word.lower()) for word in counts] == [at_200] * len(counts)
