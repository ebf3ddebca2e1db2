"""Links in a folder gallery: inside ones are photos, outside ones are skipped (the app could never serve them)."""

from __future__ import annotations

import os

from photo_index.backends.folder import IndexReader

from .conftest import write_photo


def test_links_outside_the_gallery_are_skipped_and_inside_ones_indexed(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 2, "dog": 2})
    outside = make_gallery({"elsewhere": 2}, root=tmp_path / "outside", seed=50)
    target = next((gallery / "dog").iterdir())
    os.symlink(target, gallery / "cat" / "alias.jpg")  # inside: a photo like any other
    os.symlink(outside / "elsewhere", gallery / "linked-folder")  # outside: the whole folder is skipped
    os.symlink(next((outside / "elsewhere").iterdir()), gallery / "dog" / "stray.jpg")

    report = build(gallery=gallery)

    reasons = {os.path.basename(item.path): item.reason for item in report.skipped}
    assert reasons == {"linked-folder": "outside-gallery", "stray.jpg": "outside-gallery"}
    assert report.size == 5
    with IndexReader.open(tmp_path / "index") as reader:
        paths = {os.path.basename(r.path) for r in reader.records(range(100)) if r is not None}
    assert "alias.jpg" in paths and "stray.jpg" not in paths


def test_a_gallery_root_that_is_itself_a_link_is_fine(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 2})
    link = tmp_path / "gallery-link"
    os.symlink(gallery, link)
    report = build(gallery=link)
    assert report.size == 2 and report.skipped == []


def test_a_real_folder_keeps_its_category_when_a_link_to_it_sorts_first(make_gallery, build, tmp_path):
    """"Favorites -> cat" sorts before "cat": the link is the duplicate, the photos stay cat's, and removing the
    link later changes nothing."""
    gallery = make_gallery({"cat": 2, "dog": 2})
    os.symlink(gallery / "cat", gallery / "Favorites")
    first = build(gallery=gallery)
    assert [(os.path.basename(s.path), s.reason) for s in first.skipped] == [("Favorites", "duplicate-folder")]
    with IndexReader.open(tmp_path / "index") as reader:
        assert reader.categories() == ["cat", "dog"]
    os.remove(gallery / "Favorites")
    again = build(gallery=gallery)
    assert (again.added, again.removed, again.embedded, again.status) == (0, 0, 0, "unchanged")


def test_a_link_pointed_at_another_file_of_the_same_size_and_mtime_is_embedded_again(build, tmp_path):
    # The scan read the target's times only: the photo kept the first file's vector and hash.
    gallery = tmp_path / "gallery"
    first, second = (write_photo(gallery / "store" / f"{name}.bmp", seed) for name, seed in (("a", 1), ("b", 2)))
    assert first.stat().st_size == second.stat().st_size  # BMPs of one size
    for photo in (first, second):
        os.utime(photo, ns=(10**18, 10**18))
    link = gallery / "cat" / "x.bmp"
    link.parent.mkdir()
    link.symlink_to("../store/a.bmp")
    build(gallery=gallery)
    link.unlink()
    link.symlink_to("../store/b.bmp")
    report = build(gallery=gallery)
    assert (report.updated, report.embedded) == (1, 1)
    with IndexReader.open(tmp_path / "index") as reader:
        records = {record.path: record for record in reader.records(range(100)) if record is not None}
    assert records[str(link)].sha256 == records[str(second)].sha256
