"""The docs need nothing a clone lacks: no paths into the development workplace beside the repository, and
every relative link points to a file of the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_a_doc_points_only_to_what_a_clone_has(doc):
    text = doc.read_text()
    outside = [line for line in text.splitlines() if re.search(r"(\.\./|/work/)shared/", line)]
    assert not outside, outside
    missing = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or an anchor in the same page
        if not (doc.parent / target.split("#")[0]).exists():
            missing.append(target)
    assert not missing, missing
