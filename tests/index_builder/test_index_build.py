"""Builds: broken files are skipped with reasons, incremental runs touch exactly what changed, ids are stable."""

from __future__ import annotations

import gc
import json
import os
import shutil
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from index_builder.builder import BuildOptions, build_index
from index_builder.lock import build_lock
from photo_index import BuildError, current_version
from photo_index.backends.folder import IndexReader
from photo_index.backends.folder.faiss_index import FLAT_MAX, FaissEngine, choose_factory
from tests.imagegen import random_photo
from tests.tolerance import f32_tol

from .conftest import add_broken_files, write_photo


def ids_by_path(index_dir) -> dict[str, int]:
    with IndexReader.open(index_dir) as reader:
        ids, _ = reader.vectors()
        return {record.path: record.id for record in reader.records(ids)}


def test_broken_files_are_skipped_and_reported(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 3, "dog": 2})
    expected = add_broken_files(gallery, tmp_path)

    report = build(gallery=gallery)

    assert report.status == "built" and report.size == 5
    reasons = {os.path.basename(item.path): item.reason for item in report.skipped}
    assert reasons == expected
    saved = json.loads((tmp_path / "index" / "reports" / f"{report.version}.json").read_text())
    assert saved["skipped_by_reason"]["symlink-loop"] == 2
    assert {item["path"] for item in saved["skipped"]} == {item.path for item in report.skipped}
    assert "skipped 9" in report.summary() or "skipped 10" in report.summary()


def test_incremental_run_updates_exactly_what_changed(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 4, "dog": 4})
    first = build(gallery=gallery)
    before = ids_by_path(tmp_path / "index")
    with IndexReader.open(tmp_path / "index") as reader:
        old_vectors = dict(zip(reader.vectors()[0].tolist(), np.asarray(reader.vectors()[1]), strict=True))

    deleted = gallery / "cat" / "cat_1.png"
    deleted.unlink()
    modified = gallery / "dog" / "dog_2.webp"
    write_photo(modified, seed=4242)
    touched = gallery / "dog" / "dog_0.jpg"  # same bytes, new mtime: re-hashed, but not an update
    os.utime(touched, ns=(time.time_ns(), time.time_ns() + 10**9))
    added = [write_photo(gallery / "owl" / "owl_0.jpg", 7001), write_photo(gallery / "cat" / "new.png", 7002)]

    second = build(gallery=gallery)

    assert (second.added, second.updated, second.removed, second.unchanged) == (2, 1, 1, 6)
    assert second.embedded == 3  # 2 new + the modified one (the touched one is re-hashed, its vector kept)
    assert second.previous == first.version and second.size == 9
    after = ids_by_path(tmp_path / "index")
    assert str(deleted) not in after
    for path, photo_id in before.items():
        if path != str(deleted):
            assert after[path] == photo_id, path
    new_ids = {after[str(p)] for p in added}
    assert min(new_ids) > max(before.values())  # fresh ids, never a deleted photo's
    with IndexReader.open(tmp_path / "index") as reader:
        vectors = dict(zip(reader.vectors()[0].tolist(), np.asarray(reader.vectors()[1]), strict=True))
        assert reader.record(after[str(modified)]).updated_at >= reader.record(after[str(modified)]).added_at
    assert not np.allclose(vectors[after[str(modified)]], old_vectors[before[str(modified)]])
    np.testing.assert_array_equal(vectors[after[str(touched)]], old_vectors[before[str(touched)]])

    third = build(gallery=gallery)  # nothing changed: no new version
    assert third.status == "unchanged" and third.version == second.version == current_version(tmp_path / "index")


def test_rebuild_reembeds_everything_and_keeps_ids(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 3})
    build(gallery=gallery)
    before = ids_by_path(tmp_path / "index")
    report = build(gallery=gallery, rebuild=True)
    assert report.status == "built" and report.embedded == 3 and report.unchanged == 3
    assert ids_by_path(tmp_path / "index") == before


def test_manifest_gives_ids_categories_and_user_fields(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 2, "dog": 1})
    (tmp_path / "lists").mkdir()
    manifest = tmp_path / "lists" / "photos.csv"
    manifest.write_text(
        "path,id,category,photographer\n"
        f"{gallery}/cat/cat_0.jpg,100,feline,ann\n"
        "../gallery/cat/cat_1.png,,,bob\n"  # relative to the manifest; category = its folder's name
        f"{gallery}/dog/dog_0.jpg,7,,\n"
        f"{gallery}/dog/missing.jpg,8,,\n"
        f"{gallery}/cat/cat_0.jpg,9,,\n"  # listed twice
        ",11,,\n"
        f"{gallery}/dog/dog_0.jpg,abc,,\n"
    )
    report = build(manifest=manifest)
    assert report.size == 3
    reasons = sorted(item.reason for item in report.skipped)
    assert reasons == ["bad-manifest-row", "bad-manifest-row", "duplicate-path", "missing"]
    with IndexReader.open(tmp_path / "index") as reader:
        assert reader.gallery_root is None
        first, auto, seven = reader.records([100, 101, 7])
        assert (first.category, first.metadata) == ("feline", {"photographer": "ann"})
        assert (auto.category, auto.metadata, auto.path) == ("cat", {"photographer": "bob"},
                                                              str(gallery / "cat" / "cat_1.png"))
        assert seven.path == str(gallery / "dog" / "dog_0.jpg") and seven.category == "dog"

    jsonl = tmp_path / "photos.jsonl"
    jsonl.write_text(
        json.dumps({"path": str(gallery / "cat" / "cat_0.jpg"), "id": 100, "category": "feline",
                    "tags": ["a", "b"]}) + "\n" + "{broken\n"
        + json.dumps({"path": str(gallery / "dog" / "dog_0.jpg"), "category": "canine"}) + "\n"
    )
    report = build(manifest=jsonl)
    assert (report.added, report.updated, report.removed) == (0, 2, 1)
    assert [item.reason for item in report.skipped] == ["bad-manifest-row"]
    with IndexReader.open(tmp_path / "index") as reader:
        assert reader.record(100).metadata == {"tags": ["a", "b"]}
        assert reader.record(7).category == "canine"  # the path keeps its id, its category changed


def test_factory_given_or_chosen_by_size(make_gallery, build, tmp_path):
    assert choose_factory(FLAT_MAX, 512) == "Flat"
    assert choose_factory(1_000_000, 512) == "IVF1024,Flat"
    assert choose_factory(100_000, 512).startswith("IVF") and choose_factory(10_000_000, 512).endswith("SQ8")

    report = build(gallery=make_gallery({"cat": 20, "dog": 20}), index_factory="IVF4,Flat")
    assert report.factory == "IVF4,Flat"
    with IndexReader.open(tmp_path / "index") as reader:
        section = reader.manifest["index"]
        assert section["factory"] == "IVF4,Flat" and 1 <= section["search_params"]["nprobe"] <= 4
        ids, vectors = reader.vectors()
        _, found = reader.search(np.asarray(vectors[:5]), 1)
        assert (found[:, 0] == ids[:5]).mean() >= 0.8
        _, found = reader.search(np.asarray(vectors[:5]), 40, category="dog")  # exact within the category
        dogs = {r.id for r in reader.records(ids) if r.category == "dog"}
        assert all(set(row[row >= 0].tolist()) == dogs for row in found)

    write_photo(tmp_path / "gallery" / "cat" / "more.jpg", 999)
    assert build(gallery=tmp_path / "gallery", recall_target=1.0).factory == "IVF4,Flat"  # the choice sticks
    with IndexReader.open(tmp_path / "index") as reader:
        assert reader.manifest["index"]["calibration"]["recall_at_10"] == 1.0
    assert build(gallery=tmp_path / "gallery", index_factory="auto").factory == "Flat"


def test_failed_build_leaves_current_serving(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 3})
    first = build(gallery=gallery)
    write_photo(gallery / "cat" / "more.jpg", 77)
    with pytest.raises(BuildError, match="factory"):
        build(gallery=gallery, index_factory="NotAFactory")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(BuildError, match="needs at least"):
            build(gallery=gallery, index_factory="IVF64,Flat")
        gc.collect()
    # The staged rows stay on disk for the next run; the failed build closed their files (none left to the GC).
    assert (tmp_path / "index" / "staging").is_dir()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
    assert current_version(tmp_path / "index") == first.version
    with IndexReader.open(tmp_path / "index") as reader:
        assert reader.size == 3
    assert build(gallery=gallery).size == 4  # and the next good run goes on


def test_old_versions_are_pruned(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 2})
    versions = []
    for i in range(4):
        write_photo(gallery / "cat" / f"extra{i}.jpg", 500 + i)
        versions.append(build(gallery=gallery, keep=2).version)
    kept = sorted(p.name for p in (tmp_path / "index" / "versions").iterdir())
    assert kept == [f"{v}.json" for v in versions[-2:]]
    assert sorted(p.stem for p in (tmp_path / "index" / "reports").iterdir()) == versions[-2:]
    listed = {s["name"] for v in versions[-2:] for s in json.loads((tmp_path / "index" / "versions" / f"{v}.json")
                                                                   .read_text())["segments"]}
    assert {p.name for p in (tmp_path / "index" / "segments").iterdir()} == listed  # no segment left unlisted


def test_workers_decode_in_parallel(make_gallery, build, tmp_path, tiny_baseline):
    gallery = make_gallery({"cat": 5, "dog": 4})
    (gallery / "dog" / "bad.jpg").write_bytes(b"garbage")
    report = build(gallery=gallery, workers=2, batch_size=4)
    assert report.size == 9 and [s.reason for s in report.skipped] == ["not-an-image"]
    other = tmp_path / "serial"
    serial = build_index(tiny_baseline, BuildOptions(index_dir=other, gallery=gallery, workers=0, progress=False))
    assert serial.size == 9
    with IndexReader.open(tmp_path / "index") as parallel, IndexReader.open(other) as single:
        # other batch shapes may take other kernels: unit vectors agree to some float32 steps
        np.testing.assert_allclose(np.asarray(parallel.vectors()[1]), np.asarray(single.vectors()[1]),
                                   atol=f32_tol(1.0, ulps=64))


def test_one_build_at_a_time(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 2})
    with build_lock(tmp_path / "index"), pytest.raises(BuildError, match="Another build"):
        build(gallery=gallery)
    assert build(gallery=gallery).size == 2


def test_missing_gallery_is_a_clear_error(build, tmp_path):
    with pytest.raises(BuildError, match="does not exist"):
        build(gallery=tmp_path / "nope")
    shutil.rmtree(tmp_path / "index", ignore_errors=True)


def test_failure_after_embedding_keeps_staged_vectors_for_the_next_run(make_gallery, build, tmp_path, monkeypatch):
    gallery = make_gallery({"cat": 3})
    first = build(gallery=gallery)
    for i in range(4):
        write_photo(gallery / "dog" / f"d{i}.png", 300 + i)

    def broken_build(*_args, **_kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(FaissEngine, "build", broken_build)
        with pytest.raises(OSError, match="disk full"):
            build(gallery=gallery)
    assert current_version(tmp_path / "index") == first.version
    # the half-written segment is removed at once (a full disk must not stay full of it); the staging stays
    assert (tmp_path / "index" / "segments").is_dir() and not any(
        p.name.startswith(".tmp-") for p in (tmp_path / "index" / "segments").iterdir())

    report = build(gallery=gallery)
    assert (report.embedded, report.resumed, report.added) == (0, 4, 4)
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "index" / "segments").iterdir())


def test_every_type_the_service_takes_for_upload_is_indexed_whatever_the_case(tmp_path, build):
    from app.uploads import EXTENSIONS as UPLOAD_EXTENSIONS  # what POST /admin/photos files photos as

    formats = Image.registered_extensions()
    gallery = tmp_path / "gallery"
    names = []
    for i, extension in enumerate(sorted({*UPLOAD_EXTENSIONS.values(), ".jpe", ".jfif"})):
        for name in (f"photo{i}{extension}", f"PHOTO{i}{extension.upper()}"):
            path = gallery / "any" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            random_photo((40, 32), seed=i).save(path, formats[extension])
            names.append(name)
    report = build(gallery=gallery)
    assert report.embedded == len(names) and not report.skipped, report.skipped


def test_photos_that_cannot_be_read_this_time_keep_their_ids_and_vectors(make_gallery, build, tmp_path,
                                                                          monkeypatch):
    """A folder or file the build cannot read (a permission, an I/O error, a share that went away) is not a deleted
    photo: the previous version's records stay, with their ids, until it can be read again."""
    gallery = make_gallery({"cat": 2, "dog": 2})
    first = build(gallery=gallery)
    with IndexReader.open(tmp_path / "index") as reader:
        ids = {r.path: r.id for r in reader.records(reader.vectors()[0])}
    real_scandir = os.scandir

    def failing_scandir(path="."):
        if isinstance(path, str) and os.path.basename(path) == "dog":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", failing_scandir)
    write_photo(gallery / "cat" / "cat_new.jpg", 99)  # and the cat photo is touched: read again, and fails
    cat_photo = next(p for p in sorted((gallery / "cat").iterdir()) if p.name != "cat_new.jpg")
    os.utime(cat_photo, ns=(cat_photo.stat().st_mtime_ns + 10**9,) * 2)
    monkeypatch.setattr("index_builder.embedding.open", _failing_open(str(cat_photo)), raising=False)
    second = build(gallery=gallery)
    assert (second.added, second.removed) == (1, 0), second.summary()
    assert any("kept 3 photo(s) of the previous version" in note for note in second.notes), second.notes
    with IndexReader.open(tmp_path / "index") as reader:
        now = {r.path: r.id for r in reader.records(reader.vectors()[0])}
    assert {path: now[path] for path in ids} == ids and second.version != first.version

    monkeypatch.undo()  # readable again: nothing to re-embed but the touched photo, every id the same
    third = build(gallery=gallery)
    assert (third.added, third.removed) == (0, 0)
    with IndexReader.open(tmp_path / "index") as reader:
        assert {r.path: r.id for r in reader.records(reader.vectors()[0])} == now


def _failing_open(path: str):
    def fake_open(file, *args, **kwargs):
        if str(file) == path:
            raise OSError(5, "Input/output error", file)
        return open(file, *args, **kwargs)
    return fake_open


def test_heic_photos_from_a_phone_are_indexed_like_their_png(make_gallery, build, tmp_path):
    """An iPhone gallery (.HEIC, upper case as phones name it) is indexed, not skipped; its vector is the photo's."""
    gallery = make_gallery({"cat": 2})
    photo = random_photo((48, 40), seed=77).resize((480, 400), Image.Resampling.BICUBIC)
    photo.save(gallery / "cat" / "IMG_0001.HEIC", "HEIF", quality=95)
    photo.save(gallery / "cat" / "same.png")
    report = build(gallery=gallery)
    assert report.size == 4 and not report.skipped
    with IndexReader.open(tmp_path / "index") as reader:
        ids, vectors = reader.vectors()
        by_name = {os.path.basename(r.path): v for r, v in zip(reader.records(ids), np.asarray(vectors), strict=True)}
    assert float(by_name["IMG_0001.HEIC"] @ by_name["same.png"]) > 0.99


def test_a_first_build_interrupted_before_staging_anything_leaves_no_index_folder(make_gallery, build, tmp_path):
    class Interrupting:
        name = "interrupting"

        def run(self, encoder, job, writer):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(gallery=make_gallery({"cat": 2}), distributor=Interrupting())
    assert not (tmp_path / "index").exists()


def test_one_long_csv_cell_skips_its_row_not_the_whole_manifest(make_gallery, build, tmp_path):
    # csv refuses fields over 131,072 characters by default: the whole manifest was a BuildError
    gallery = make_gallery({"cat": 2})
    manifest = tmp_path / "photos.csv"
    manifest.write_text(f"path,caption\n{gallery / 'cat' / 'cat_0.jpg'},{'x' * 200_000}\n"
                        f"{gallery / 'cat' / 'cat_1.png'},short\n")
    report = build(manifest=manifest)
    assert report.size == 1 and [item.reason for item in report.skipped] == ["bad-manifest-row"]


def test_a_file_far_larger_than_any_photo_is_skipped_without_reading_it(make_gallery, build):
    # It was read whole (to hash it) by every worker at once: a few mis-named videos filled the memory
    from index_builder import embedding

    gallery = make_gallery({"cat": 2})
    with open(gallery / "cat" / "video.tif", "wb") as handle:  # sparse: large, no disk used
        handle.truncate(embedding.MAX_PHOTO_FILE_BYTES + 1)
    report = build(gallery=gallery)
    assert report.size == 2 and [item.reason for item in report.skipped] == ["too-large"]
    assert f"{embedding.MAX_PHOTO_FILE_BYTES + 1:,} bytes" in report.skipped[0].detail


def test_a_photo_a_manifest_moves_under_its_id_is_counted_as_updated(make_gallery, build, tmp_path):
    # Counted by path it was "added 1, removed 1" while the index deleted nothing (the id stayed live).
    gallery = make_gallery({"cat": 3})
    photos = sorted((gallery / "cat").iterdir())
    manifest = tmp_path / "photos.csv"
    manifest.write_text("path,id\n" + "".join(f"{photo},{10 + n}\n" for n, photo in enumerate(photos)))
    build(manifest=manifest)
    moved = gallery / "dog" / photos[1].name
    moved.parent.mkdir()
    photos[1].rename(moved)
    manifest.write_text(f"path,id\n{photos[0]},10\n{moved},11\n{photos[2]},12\n")
    report = build(manifest=manifest)
    assert (report.added, report.updated, report.removed, report.unchanged) == (0, 1, 0, 2)


def _vectors_by_path(index_dir) -> dict[str, np.ndarray]:
    with IndexReader.open(index_dir) as reader:
        ids, vectors = reader.vectors()
        by_id = dict(zip(ids.tolist(), np.asarray(vectors), strict=True))
        return {record.path: by_id[record.id] for record in reader.records(ids)}


def test_a_renamed_folder_and_moved_files_keep_their_vectors_without_embedding(make_gallery, build, tmp_path):
    """Identity is by path: renaming a folder embedded its photos again (minutes per thousand on a CPU)."""
    gallery = make_gallery({"cat": 3, "dog": 3})
    build(gallery=gallery)
    before = _vectors_by_path(tmp_path / "index")
    (gallery / "cat").rename(gallery / "kitten")
    (gallery / "dog" / "dog_0.jpg").rename(gallery / "dog" / "puppy.jpg")
    # Two files swap contents: each path stays, and each takes the other's vector
    first, second = gallery / "dog" / "dog_1.png", gallery / "dog" / "dog_2.webp"
    first_bytes, second_bytes = first.read_bytes(), second.read_bytes()
    first.write_bytes(second_bytes)
    second.write_bytes(first_bytes)
    write_photo(gallery / "owl" / "owl_0.jpg", 7001)

    report = build(gallery=gallery)

    assert report.embedded == 1  # the owl
    assert (report.added, report.updated, report.removed, report.size) == (5, 2, 4, 7)
    after = _vectors_by_path(tmp_path / "index")
    for name in ("cat_0.jpg", "cat_1.png", "cat_2.webp"):
        np.testing.assert_array_equal(after[str(gallery / "kitten" / name)], before[str(gallery / "cat" / name)])
    np.testing.assert_array_equal(after[str(gallery / "dog" / "puppy.jpg")], before[str(gallery / "dog" / "dog_0.jpg")])
    np.testing.assert_array_equal(after[str(first)], before[str(second)])
    np.testing.assert_array_equal(after[str(second)], before[str(first)])
    with IndexReader.open(tmp_path / "index") as reader:
        kitten = [r for r in reader.records(reader.vectors()[0]) if r.path.startswith(str(gallery / "kitten"))]
    assert {r.category for r in kitten} == {"kitten"} and all(r.width for r in kitten)


def test_a_moved_file_whose_old_path_holds_other_content_is_embedded_as_it_is(make_gallery, build, tmp_path):
    """A gone path's content reused for a file of that content only: a path whose own content changed to another
    gone photo's takes that photo's vector, never its own old one."""
    gallery = make_gallery({"cat": 3})
    build(gallery=gallery)
    before = _vectors_by_path(tmp_path / "index")
    a, b, c = (gallery / "cat" / name for name in ("cat_0.jpg", "cat_1.png", "cat_2.webp"))
    b_bytes = b.read_bytes()
    b.unlink()
    c.write_bytes(b_bytes)  # c now holds b's content (b is gone); c's own content is gone too
    c_rename = gallery / "cat" / "renamed.png"
    c_rename.write_bytes(a.read_bytes())  # a copy of a, whose path stays: not a gone photo's content
    report = build(gallery=gallery)
    after = _vectors_by_path(tmp_path / "index")
    np.testing.assert_array_equal(after[str(c)], before[str(b)])
    np.testing.assert_array_equal(after[str(a)], before[str(a)])
    assert report.embedded == 1  # the copy of a: its content's path is not gone
    np.testing.assert_allclose(after[str(c_rename)], before[str(a)], rtol=0, atol=f32_tol(1.0))


def test_a_renumbered_series_keeps_every_vector(make_gallery, build, tmp_path):
    """IMG_1 deleted, IMG_2..4 renamed one down: only IMG_4's path is gone, the others' are read again."""
    gallery = tmp_path / "gallery"
    series = [write_photo(gallery / "cat" / f"IMG_{number}.png", 100 + number) for number in range(1, 5)]
    build(gallery=gallery)
    before = _vectors_by_path(tmp_path / "index")
    series[0].unlink()
    for older, newer in zip(series, series[1:], strict=False):
        newer.rename(older)
    report = build(gallery=gallery)
    after = _vectors_by_path(tmp_path / "index")
    assert report.embedded == 0 and (report.updated, report.removed, report.size) == (3, 1, 3)
    for older, newer in zip(series, series[1:], strict=False):
        np.testing.assert_array_equal(after[str(older)], before[str(newer)])


def test_touched_photos_do_not_crowd_out_the_gone_photo_a_moved_file_came_from(build, tmp_path):
    gallery = tmp_path / "gallery"
    same_size = [write_photo(gallery / "a" / f"{number:02d}.bmp", number) for number in range(12)]  # one byte size
    build(gallery=gallery)
    before = _vectors_by_path(tmp_path / "index")
    for photo in same_size[:-1]:
        os.utime(photo, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched: read again, content unchanged
    (gallery / "b").mkdir()
    moved = same_size[-1].rename(gallery / "b" / "moved.bmp")  # the last of its size in the index's order
    report = build(gallery=gallery)
    assert report.embedded == 0
    np.testing.assert_array_equal(_vectors_by_path(tmp_path / "index")[str(moved)], before[str(same_size[-1])])
