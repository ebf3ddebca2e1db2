"""A build killed with SIGKILL mid-way leaves the live version serving; the next run resumes."""

from __future__ import annotations

import pytest

from photo_index import current_version
from photo_index.backends.folder import IndexReader
from photo_index.checks import verify as verify_source
from photo_index.registry import open_source

from .killing import kill_build_mid_embedding, write_distinct_photos


def verify(index_dir):
    """The folder index's problems (what ``python -m index_builder verify`` prints)."""
    return verify_source(open_source(index_dir))


@pytest.mark.slow
def test_killed_build_keeps_previous_version_and_resumes(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 3, "dog": 3})
    first = build(gallery=gallery)
    index_dir = tmp_path / "index"

    total_new = 400  # enough that the kill lands mid-way even on an idle box
    write_distinct_photos(gallery / "dog", total_new)
    staged = kill_build_mid_embedding(gallery, index_dir, "--workers", "0")
    assert 0 < staged < total_new, f"the kill came too late or too early to test resuming ({staged} staged)"

    # The previous version still serves, whole.
    assert current_version(index_dir) == first.version
    with IndexReader.open(index_dir) as reader:
        assert reader.size == 6
    assert verify(index_dir) == []

    # The next run resumes: it embeds only what the killed run had not staged.
    report = build(gallery=gallery)
    assert report.resumed >= staged - 2  # a torn last batch may be cut
    assert report.embedded + report.resumed == total_new
    assert report.added == total_new and report.size == 6 + total_new
    assert verify(index_dir) == []
    assert not (index_dir / "staging").exists()
