"""Builds publish segments: a change writes a segment of only the changed photos, the index answers like a fresh
full build of the same gallery, one-copy indexes open unchanged and convert on their first incremental build,
``--rebuild`` and ``compact`` make one segment."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import photo_index.backends.folder as folder_backend
from index_builder.cli import main
from photo_index.backends.folder import FolderWriter, IndexReader, SegmentedReader
from photo_index.checks import verify
from photo_index.registry import open_source
from tests.tolerance import assert_same_top_k

from .conftest import live_manifest, write_photo


def top10(index_dir, queries: np.ndarray) -> tuple[np.ndarray, list[list[str | None]]]:
    """Scores and the photos' paths of the top 10 (ids differ between indexes built from different histories)."""
    with IndexReader.open(index_dir) as reader:
        scores, found = reader.search(queries, 10)
        return scores, [[r.path if r else None for r in reader.records(row)] for row in found]


def ids_by_path(index_dir) -> dict[str, int]:
    with IndexReader.open(index_dir) as reader:
        return {r.path: r.id for r in reader.records(reader.vectors()[0])}


def change(gallery) -> None:
    """Two photos added, one removed, one modified in place."""
    write_photo(gallery / "owl" / "owl_new.jpg", 9001)
    write_photo(gallery / "cat" / "cat_new.png", 9002)
    (gallery / "cat" / "cat_1.png").unlink()
    write_photo(gallery / "dog" / "dog_2.webp", 9003)


def queries_of(index_dir) -> np.ndarray:
    with IndexReader.open(index_dir) as reader:
        vectors = reader.vectors()[1]
    noise = np.random.default_rng(0).normal(size=(8, vectors.shape[1])).astype(np.float32)
    return np.vstack([vectors[:8], noise / np.linalg.norm(noise, axis=1, keepdims=True)])


def test_a_change_writes_a_segment_of_the_changed_photos_and_answers_like_a_fresh_build(make_gallery, build,
                                                                                           tmp_path):
    gallery = make_gallery({"cat": 6, "dog": 6})
    first = build(gallery=gallery)
    change(gallery)
    second = build(gallery=gallery)
    assert (second.added, second.updated, second.removed) == (2, 1, 1)
    assert any("wrote a segment of 3 photos, 1 deleted" in note for note in second.notes)
    manifest = live_manifest(tmp_path / "index")
    assert [(s["size"], s["deleted"]) for s in manifest["segments"]] == [(12, 2), (3, 0)]  # removed + modified
    assert manifest["previous"] == first.version and manifest["size"] == 13

    fresh = build(gallery=gallery, index_dir=tmp_path / "fresh")
    queries = queries_of(tmp_path / "fresh")
    scores, found = top10(tmp_path / "index", queries)
    fresh_scores, fresh_found = top10(tmp_path / "fresh", queries)
    assert_same_top_k(scores, found, fresh_scores, fresh_found)
    assert verify(open_source(tmp_path / "index")) == []
    with IndexReader.open(tmp_path / "index") as reader:
        assert isinstance(reader, SegmentedReader) and reader.structure()["deleted"] == 2
        assert fresh.size == reader.size == 13


def test_a_one_copy_index_opens_unchanged_and_its_first_incremental_build_converts_it(make_gallery, build,
                                                                                       tmp_path, monkeypatch):
    gallery = make_gallery({"cat": 5, "dog": 5})
    with monkeypatch.context() as patch:  # the writer of the format before segments
        patch.setattr(folder_backend, "open_writer", lambda location, options: FolderWriter(location, options))
        old = build(gallery=gallery)
    old_folder = tmp_path / "index" / "versions" / old.version
    assert (old_folder / "manifest.json").is_file()
    with IndexReader.open(tmp_path / "index") as reader:
        assert not isinstance(reader, SegmentedReader) and reader.size == 10
    assert verify(open_source(tmp_path / "index")) == []

    change(gallery)
    converted = build(gallery=gallery)
    assert any(f"converted the one-copy version {old.version}" in note for note in converted.notes)
    assert f"converted the one-copy version {old.version}" in converted.summary()
    manifest = live_manifest(tmp_path / "index")
    adopted = tmp_path / "index" / "segments" / manifest["segments"][0]["name"]
    assert os.stat(adopted / "vectors.npy").st_ino == os.stat(old_folder / "vectors.npy").st_ino  # linked
    assert [(s["size"], s["deleted"]) for s in manifest["segments"]] == [(10, 2), (3, 0)]
    fresh = tmp_path / "fresh"
    build(gallery=gallery, index_dir=fresh)
    queries = queries_of(fresh)
    assert top10(tmp_path / "index", queries)[1] == top10(fresh, queries)[1]
    assert verify(open_source(tmp_path / "index")) == []
    assert sorted(open_source(tmp_path / "index").versions()) == [old.version, converted.version]


def test_rebuild_and_compact_make_one_segment(make_gallery, build, tmp_path, capsys):
    gallery = make_gallery({"cat": 4, "dog": 4})
    build(gallery=gallery)
    for seed in range(3):
        write_photo(gallery / "owl" / f"owl_{seed}.jpg", 500 + seed)
        (gallery / "dog" / f"dog_{seed}.{('jpg', 'png', 'webp')[seed]}").unlink()
        build(gallery=gallery)
    index_dir = tmp_path / "index"
    changed = live_manifest(index_dir)
    assert len(changed["segments"]) == 4
    queries = queries_of(index_dir)
    before = top10(index_dir, queries)[1]
    ids_before = ids_by_path(index_dir)

    assert main(["compact", str(index_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["status"], result["segments_before"], result["deleted_before"]) == (
        "compacted", 4, sum(s["deleted"] for s in changed["segments"]))
    manifest = live_manifest(index_dir)
    assert [(s["size"], s["deleted"]) for s in manifest["segments"]] == [(8, 0)]
    assert manifest["index"]["segments"] == 1 and manifest["compacted"]["segments_before"] == 4
    assert top10(index_dir, queries)[1] == before
    assert ids_by_path(index_dir) == ids_before  # ids are stable through merges
    assert verify(open_source(index_dir)) == []
    assert main(["compact", str(index_dir)]) == 0 and "nothing to do" in capsys.readouterr().out

    write_photo(gallery / "cat" / "late.jpg", 777)
    build(gallery=gallery)
    rebuilt = build(gallery=gallery, rebuild=True)
    manifest = live_manifest(index_dir)
    assert rebuilt.embedded == 9 and [(s["size"], s["deleted"]) for s in manifest["segments"]] == [(9, 0)]


def test_compact_keeps_the_factory_the_index_was_built_with_and_says_what_it_wrote(make_gallery, build, tmp_path,
                                                                                     capsys):
    """An index built with --index-factory IVF4,Flat was compacted into a Flat segment (the choice by size) that the
    output and the version still called IVF4,Flat."""
    gallery = make_gallery({"cat": 12, "dog": 12})
    build(gallery=gallery, index_factory="IVF4,Flat")
    write_photo(gallery / "owl" / "owl_0.jpg", 900)
    build(gallery=gallery)
    index_dir = tmp_path / "index"
    assert main(["compact", str(index_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    manifest = live_manifest(index_dir)
    segment = json.loads((index_dir / "segments" / manifest["segments"][0]["name"] / "segment.json").read_text())
    assert result["factory"] == manifest["index"]["factory"] == segment["index"]["factory"] == "IVF4,Flat"
    assert "nprobe" in result["search_params"]
    assert main(["compact", str(index_dir), "--index-factory", "Flat", "--json"]) == 0  # asked for now: used
    manifest = live_manifest(index_dir)
    segment = json.loads((index_dir / "segments" / manifest["segments"][0]["name"] / "segment.json").read_text())
    assert json.loads(capsys.readouterr().out)["factory"] == segment["index"]["factory"] == "Flat"
    write_photo(gallery / "owl" / "owl_1.jpg", 901)
    build(gallery=gallery)
    assert main(["compact", str(index_dir), "--index-factory", "auto", "--json"]) == 0  # by size, as for a build
    assert json.loads(capsys.readouterr().out)["factory"] == "Flat"
    assert live_manifest(index_dir)["index_factory_option"] is None


def test_info_reports_segments_and_tombstones(make_gallery, build, tmp_path, capsys):
    gallery = make_gallery({"cat": 4})  # one deleted of 4: under the ratio that rewrites a segment
    build(gallery=gallery)
    (gallery / "cat" / "cat_0.jpg").unlink()
    build(gallery=gallery)
    assert main(["info", str(tmp_path / "index"), "--json"]) == 0
    index = json.loads(capsys.readouterr().out)["index"]
    assert index["layout"] == "segments" and index["deleted"] == 1 and len(index["segments"]) == 1
    assert main(["info", str(tmp_path / "index")]) == 0
    assert "1 segment(s), 1 tombstone(s) (rows of deleted or replaced photos)" in capsys.readouterr().out


def test_compact_of_a_missing_index_is_a_clear_error(tmp_path, capsys):
    assert main(["compact", str(tmp_path / "nothing")]) == 2
    assert "No index" in capsys.readouterr().err


@pytest.mark.parametrize("keep", [1, 2])
def test_keep_counts_versions_of_either_format(make_gallery, build, tmp_path, monkeypatch, keep):
    gallery = make_gallery({"cat": 2})
    with monkeypatch.context() as patch:
        patch.setattr(folder_backend, "open_writer", lambda location, options: FolderWriter(location, options))
        old = build(gallery=gallery)
    write_photo(gallery / "cat" / "more.jpg", 4)
    new = build(gallery=gallery, keep=keep)
    assert open_source(tmp_path / "index").versions() == [old.version, new.version][-keep:]
    with IndexReader.open(tmp_path / "index") as reader:
        assert reader.size == 3


def test_a_damaged_segment_is_never_merged_compacted_or_built_on(make_gallery, build, tmp_path, capsys):
    gallery = make_gallery({"cat": 4, "dog": 4})
    build(gallery=gallery)
    write_photo(gallery / "owl" / "owl_0.jpg", 500)
    build(gallery=gallery)
    index_dir = tmp_path / "index"
    live = live_manifest(index_dir)
    first = index_dir / "segments" / live["segments"][0]["name"] / "vectors.npy"
    vectors = np.load(first, mmap_mode="r+")
    vectors[3] = vectors[5]  # a row overwritten: the file keeps its size, not its checksum
    vectors.flush()
    del vectors

    assert main(["compact", str(index_dir)]) == 2
    assert "Cannot merge damaged segments" in capsys.readouterr().err
    write_photo(gallery / "owl" / "owl_1.jpg", 501)
    assert main(["build", "--gallery", str(gallery), "--out", str(index_dir), "--workers", "0",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is damaged" in err and "vectors.npy differs from its checksum" in err and "--rebuild" in err
    assert live_manifest(index_dir) == live  # the live version stays, damaged as it is, for the operator to see
    assert build(gallery=gallery, rebuild=True).embedded == 10
    assert verify(open_source(index_dir)) == []


def test_a_version_killed_before_its_switch_takes_no_keep_slot_and_a_rolled_back_one_stays(make_gallery, build,
                                                                                            tmp_path):
    import time

    from photo_index.backends.folder.segments.store import SegmentStore
    from photo_index.format import new_version_name

    gallery = make_gallery({"cat": 3})
    index_dir = tmp_path / "index"
    build(gallery=gallery, keep=2)
    write_photo(gallery / "cat" / "two.jpg", 2)
    build(gallery=gallery, keep=2)
    store = SegmentStore(index_dir)
    first, live = store.versions()
    time.sleep(0.01)
    orphan = new_version_name()  # what a publish killed between its manifest and the switch leaves
    store.version_path(orphan).write_bytes(store.version_path(live).read_bytes())
    assert store.never_published() == [orphan]
    write_photo(gallery / "cat" / "three.jpg", 3)
    build(gallery=gallery, keep=2)
    assert store.versions()[0] == live and orphan not in store.versions()  # the one that served is kept

    newest = store.current_name()
    (index_dir / "current").write_text(live + "\n")  # an operator rolls back: the newer version stays
    assert store.never_published() == [] and newest in store.versions()


def test_a_reader_opened_before_compact_prunes_its_version_still_searches(make_gallery, build, tmp_path, capsys):
    """An approximate segment's index is read on first search; its file is opened with the reader, so deleting the
    version (compact --keep 1) after the open does not break that first search."""
    gallery = make_gallery({"cat": 20, "dog": 20})
    build(gallery=gallery, index_factory="IVF2,Flat")
    index_dir = tmp_path / "index"
    queries = queries_of(index_dir)
    with IndexReader.open(index_dir) as reader:
        first = live_manifest(index_dir)["segments"][0]["name"]
        write_photo(gallery / "owl" / "owl_new.jpg", 4242)
        build(gallery=gallery)
        assert main(["compact", str(index_dir), "--keep", "1"]) == 0
        assert not (index_dir / "segments" / first).exists()  # the reader's segment is gone from the disk
        scores, found = reader.search(queries, 5)
        assert (found >= 0).all() and len(reader.records(found[0])) == 5
    capsys.readouterr()
