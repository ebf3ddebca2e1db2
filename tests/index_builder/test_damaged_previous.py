"""What a build or `tune` must not carry forward: a damaged one-copy version (converting it would bless its files
with fresh checksums), ids past the photo id range, and a tuned version whose checksums no longer hold."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

import photo_index.backends.folder as folder_backend
from index_builder.tuning import tune_index
from photo_index.api import MAX_PHOTO_ID
from photo_index.backends.folder import FolderWriter
from photo_index.checks import verify
from photo_index.errors import BuildError
from photo_index.format import IndexLayout
from photo_index.registry import open_source

from .conftest import write_photo


@pytest.fixture()
def one_copy_build(build, monkeypatch):
    """``build`` with the writer of the format before segments (one folder per version, with checksums)."""

    def run(**options):
        with monkeypatch.context() as patch:
            patch.setattr(folder_backend, "open_writer", lambda location, options: FolderWriter(location, options))
            return build(**options)

    return run


def test_a_damaged_one_copy_version_is_not_converted_into_a_segment(make_gallery, build, one_copy_build, tmp_path):
    gallery = make_gallery({"cat": 4, "dog": 4})
    one_copy_build(gallery=gallery)
    database = IndexLayout(tmp_path / "index").current_dir() / "metadata.sqlite"
    database.chmod(0o644)
    with sqlite3.connect(database) as db:  # bit rot in one record, the file's size unchanged
        db.execute("UPDATE photos SET path = substr(path, 1, length(path) - 5) || 'X.jpg' WHERE id = 3")
    db.close()
    write_photo(gallery / "cat" / "new.jpg", 77)

    with pytest.raises(BuildError, match="damaged.*metadata.sqlite.*--rebuild"):
        build(gallery=gallery)

    report = build(gallery=gallery, rebuild=True)  # what the message says: the gallery embedded afresh
    assert report.size == 9 and verify(open_source(tmp_path / "index")) == []


def test_no_photo_gets_an_id_past_the_range_when_a_manifest_took_the_last(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 3})
    photos = sorted((gallery / "cat").iterdir())
    manifest = tmp_path / "photos.jsonl"
    rows = [{"path": str(photos[0]), "id": MAX_PHOTO_ID}, {"path": str(photos[1])}, {"path": str(photos[2]), "id": 5}]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))

    report = build(manifest=manifest)

    assert report.size == 2 and [(s.path, s.reason) for s in report.skipped] == [(str(photos[1]), "no-id-left")]
    assert "give this photo an id" in report.skipped[0].detail


def test_tune_of_a_one_copy_index_publishes_checksums_that_hold(make_gallery, one_copy_build, tmp_path):
    gallery = make_gallery({"cat": 20, "dog": 20})
    one_copy_build(gallery=gallery, index_factory="IVF4,Flat")
    index_dir = tmp_path / "index"
    dim = json.loads((IndexLayout(index_dir).current_dir() / "manifest.json").read_text())["dim"]
    for seed in (1, 2):
        queries = np.random.default_rng(seed).normal(size=(64, dim)).astype(np.float32)
        np.save(tmp_path / f"q{seed}.npy", queries / np.linalg.norm(queries, axis=1, keepdims=True))
    assert tune_index(index_dir, tmp_path / "q1.npy")["status"] == "tuned"
    write_photo(gallery / "cat" / "new.jpg", 78)
    one_copy_build(gallery=gallery)  # the one-copy writer carries the query sample over, with its checksum

    assert tune_index(index_dir, tmp_path / "q2.npy")["status"] == "tuned"  # a new sample under the same name

    assert verify(open_source(index_dir)) == []


def test_a_stale_query_sample_checksum_of_an_older_tune_does_not_block_builds(make_gallery, build, one_copy_build,
                                                                               tmp_path):
    """`tune` before this fix copied the old checksums beside a new query file; the sample is no photo data: a build
    carries it over (load_queries checks it) and records fresh checksums."""
    gallery = make_gallery({"cat": 20, "dog": 20})
    one_copy_build(gallery=gallery, index_factory="IVF4,Flat")
    index_dir = tmp_path / "index"
    manifest_file = IndexLayout(index_dir).current_dir() / "manifest.json"
    dim = json.loads(manifest_file.read_text())["dim"]
    queries = np.random.default_rng(3).normal(size=(64, dim)).astype(np.float32)
    np.save(tmp_path / "q.npy", queries / np.linalg.norm(queries, axis=1, keepdims=True))
    assert tune_index(index_dir, tmp_path / "q.npy")["status"] == "tuned"
    manifest_file = IndexLayout(index_dir).current_dir() / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["checksums"]["calibration_queries.npy"]["sha256"] = "0" * 64  # what the older tune left
    manifest_file.chmod(0o644)
    manifest_file.write_text(json.dumps(manifest))
    write_photo(gallery / "cat" / "new.jpg", 79)

    report = build(gallery=gallery)

    assert report.added == 1 and verify(open_source(index_dir)) == []
