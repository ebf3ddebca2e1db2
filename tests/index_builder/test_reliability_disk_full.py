"""A full disk at any stage of a build is a clear error, never a crash (issue 19, item 5).

The index folder lives on a real, small tmpfs; a ballast file leaves a chosen amount of space free, from none
to more than a build needs, so the disk fills at every stage in turn (staging, a segment's vectors.npy, ids,
metadata and FAISS index, its segment.json, tombstones, the version manifest, the report, the pointer; a merge,
through `compact`; and the one-copy writer's version folder). Each run must end in exit 0, or in exit 2 with one
line naming the path and the space needed, with nothing it wrote left behind (no staging, no temp folder, no
half-written segment or version), and the live version untouched and still consistent.

Needs: root, to mount the tmpfs (CI runs the suite as root); skipped otherwise.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import photo_index.backends.folder as folder_backend
from index_builder.cli import main
from photo_index import current_version
from photo_index.backends.folder import FolderWriter
from photo_index.backends.folder.segments import write_segment
from photo_index.checks import verify
from photo_index.registry import open_source
from photo_index.space import reserved_memmap
from tests.index_builder.conftest import write_photo
from tests.index_builder.killing import build_killed_before_seal, write_distinct_photos

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")]

DISK_BYTES = 4 * 1024 * 1024
STEP = 4 * 1024  # a tmpfs page
OWN = {".lock", "staging"}  # the builder's lock file, and staging (checked on its own)


@pytest.fixture()
def small_disk(tmp_path) -> Path:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def leave_free(disk: Path, free: int) -> None:
    """A ballast file that leaves about ``free`` bytes on ``disk``."""
    ballast = disk / "ballast"
    ballast.unlink(missing_ok=True)
    size = shutil.disk_usage(disk).free - free
    if size > 0:
        fd = os.open(ballast, os.O_CREAT | os.O_WRONLY)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)


def files_of(index_dir: Path) -> dict[str, int]:
    """Every file of the index (but the builder's own), with its size: what must stay as it was."""
    return {p.relative_to(index_dir).as_posix(): p.stat().st_size for p in index_dir.rglob("*")
            if p.is_file() and p.relative_to(index_dir).parts[0] not in OWN}


def change(gallery: Path) -> None:
    """New photos, one replaced: the next incremental build writes a segment and a tombstone (the live version
    stays consistent with the gallery, so `verify` has nothing to say about it)."""
    write_photo(next(iter(sorted((gallery / "cat").iterdir()))), 499)
    for i in range(4):
        write_photo(gallery / "bird" / f"bird_{i}.png", 500 + i)


def fill_at_every_stage(disk: Path, index_dir: Path, args: list[str], capsys) -> set[str]:
    """Run ``args`` with ever more free space until it succeeds; every failure before must be a clean one.
    Returns the file names the failures named."""
    live, before = current_version(index_dir), files_of(index_dir)
    needed = sum(before.values())
    named = set()
    capsys.readouterr()
    for free in range(0, 3 * needed + 4 * STEP, STEP):
        leave_free(disk, free)
        code = main(args)
        err = capsys.readouterr().err
        if code == 0:  # enough room: it went through, and every tighter disk before it was refused
            (disk / "ballast").unlink(missing_ok=True)
            return named
        assert code == 2, (free, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, (free, err)
        assert "No space left on device writing" in lines[0] and "needs about" in lines[0], lines[0]
        path = lines[0].split("writing ", 1)[1].split(":", 1)[0]
        assert path.startswith(str(index_dir)), lines[0]
        named.add(Path(path).name)
        assert not (index_dir / "staging").exists(), free
        assert files_of(index_dir) == before, free  # nothing half-written stays; nothing live was touched
        assert current_version(index_dir) == live
        assert verify(open_source(index_dir)) == [], free
    raise AssertionError("no free space tried was enough; raise the range")


def build_args(gallery: Path, index_dir: Path, *extra: str) -> list[str]:
    return ["build", "--gallery", str(gallery), "--out", str(index_dir), "--workers", "0", "--no-progress", *extra]


def test_a_full_disk_during_a_fresh_segment_ends_in_one_line_and_the_live_version_stays(make_gallery, small_disk,
                                                                                       capsys):
    gallery = make_gallery({"cat": 5, "dog": 5})
    index_dir = small_disk / "index"
    assert main(build_args(gallery, index_dir, "--rebuild")) == 0
    named = fill_at_every_stage(small_disk, index_dir, build_args(gallery, index_dir, "--rebuild"), capsys)
    assert {"vectors.npy", "index.faiss", "segment.json"} <= named or len(named) >= 3, named


def test_a_full_disk_during_an_incremental_build_leaves_no_segment_tombstones_or_version(make_gallery, small_disk,
                                                                                       capsys):
    gallery = make_gallery({"cat": 5, "dog": 5})
    index_dir = small_disk / "index"
    assert main(build_args(gallery, index_dir)) == 0
    change(gallery)
    named = fill_at_every_stage(small_disk, index_dir, build_args(gallery, index_dir), capsys)
    assert len(named) >= 3, named
    segments = open_source(index_dir).open()
    try:
        assert len(segments.structure()["segments"]) == 2 and segments.structure()["deleted"] == 1
    finally:
        segments.close()


def test_a_full_disk_during_a_merge_ends_in_one_line_and_the_live_version_stays(make_gallery, small_disk, capsys):
    gallery = make_gallery({"cat": 5, "dog": 5})
    index_dir = small_disk / "index"
    assert main(build_args(gallery, index_dir)) == 0
    change(gallery)
    assert main(build_args(gallery, index_dir)) == 0  # two segments, one with a tombstone: compact merges them
    named = fill_at_every_stage(small_disk, index_dir, ["compact", str(index_dir)], capsys)
    assert named, "the merge never ran out of space"
    merged = open_source(index_dir).open()
    try:
        assert len(merged.structure()["segments"]) == 1 and merged.size == 14
    finally:
        merged.close()


def test_a_full_disk_in_the_one_copy_writer_removes_its_half_written_version(make_gallery, small_disk, capsys,
                                                                            monkeypatch):
    monkeypatch.setattr(folder_backend, "open_writer", lambda location, options: FolderWriter(location, options))
    gallery = make_gallery({"cat": 5, "dog": 5})
    index_dir = small_disk / "index"
    assert main(build_args(gallery, index_dir, "--rebuild")) == 0
    named = fill_at_every_stage(small_disk, index_dir, build_args(gallery, index_dir, "--rebuild"), capsys)
    assert len(named) >= 3, named


def test_a_memory_mapped_vector_file_is_reserved_before_a_byte_is_written(small_disk):
    """Without the reservation the copy into the map faults (SIGBUS, exit 135) once the disk is full."""
    leave_free(small_disk, 64 * 1024)
    path = small_disk / "vectors.npy"
    with pytest.raises(OSError) as refused:
        reserved_memmap(path, (1000, 512))  # 2 MB
    assert refused.value.errno == errno.ENOSPC and refused.value.filename == str(path)
    (small_disk / "ballast").unlink()
    vectors = reserved_memmap(path, (1000, 512))
    vectors[:] = 1.0
    vectors.flush()
    assert path.stat().st_blocks * 512 >= 1000 * 512 * 4


def test_a_segment_too_large_for_the_disk_is_refused_before_its_vectors_are_mapped(small_disk):
    """The segment writer copies vectors through a memory map: on a full disk, ENOSPC naming the file (never
    SIGBUS), and its temp folder removed."""
    leave_free(small_disk, 64 * 1024)
    vectors = np.ones((1000, 512), dtype=np.float32) / np.sqrt(512)
    with pytest.raises(OSError) as refused:
        write_segment(small_disk / "segments", vectors, np.arange(1000), [])
    assert refused.value.errno == errno.ENOSPC and refused.value.filename.endswith("vectors.npy")
    assert list((small_disk / "segments").iterdir()) == []


def test_what_a_killed_build_left_does_not_take_the_room_the_next_build_needs(make_gallery, small_disk, capsys):
    """A build SIGKILLed while writing its segment leaves that segment's temp folder; on a disk with room for one
    such segment but not two, the next build must remove it before writing, not fail on a full disk each time."""
    gallery = make_gallery({"cat": 3, "dog": 3})
    index_dir = small_disk / "index"
    assert main(build_args(gallery, index_dir)) == 0
    write_distinct_photos(gallery / "bird", 40)
    tmp = build_killed_before_seal(gallery, index_dir, seal=1)
    left = sum(p.stat().st_size for p in tmp.iterdir())
    leave_free(small_disk, left // 2)  # the new segment (about `left` bytes) fits only where the leftover was
    capsys.readouterr()
    assert main(build_args(gallery, index_dir)) == 0, capsys.readouterr().err
    assert not tmp.exists() and current_version(index_dir) is not None
    assert verify(open_source(index_dir)) == []
    with open_source(index_dir).open() as reader:
        assert reader.size == 46
