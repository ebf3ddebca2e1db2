"""A full disk at any stage of a build is a clear error, never a crash (issue 19, item 5).

The index folder lives on a real, small tmpfs; a ballast file leaves a chosen amount of space free, from none
to more than a build needs, so the disk fills at every stage in turn (staging, vectors.npy, metadata, the
FAISS index, the manifest, the pointer). Each build must end in exit 0, or in exit 2 with one line naming the
path and the space needed, no staging or half-written version left behind, and the live version untouched.

Needs: root, to mount the tmpfs (CI runs the suite as root); skipped otherwise.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from index_builder.cli import main
from photo_index import current_version
from photo_index.checks import verify
from photo_index.registry import open_source

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")]

DISK_BYTES = 4 * 1024 * 1024
STEP = 4 * 1024  # a tmpfs page


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


def test_every_stage_of_a_full_disk_ends_in_one_line_and_the_live_version_stays(make_gallery, small_disk, capsys):
    gallery = make_gallery({"cat": 5, "dog": 5})
    index_dir = small_disk / "index"
    args = ["build", "--gallery", str(gallery), "--out", str(index_dir), "--workers", "0", "--no-progress",
            "--rebuild"]
    assert main(args) == 0
    live = current_version(index_dir)
    version_bytes = sum(p.stat().st_size for p in (index_dir / "versions" / live).iterdir())
    capsys.readouterr()

    named = set()
    built = False
    for free in range(0, 3 * version_bytes + 4 * STEP, STEP):
        leave_free(small_disk, free)
        code = main(args)
        err = capsys.readouterr().err
        if code == 0:  # enough room: the build went through, and every tighter disk before it was refused
            built = True
            break
        assert code == 2, (free, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, (free, err)
        assert "No space left on device writing" in lines[0] and "needs about" in lines[0], lines[0]
        path = lines[0].split("writing ", 1)[1].split(":", 1)[0]
        assert path.startswith(str(index_dir)), lines[0]
        named.add(Path(path).name)
        assert not (index_dir / "staging").exists(), free
        assert sorted(p.name for p in (index_dir / "versions").iterdir()) == [live], free  # nothing half-written
        assert current_version(index_dir) == live
        assert verify(open_source(index_dir)) == [], free
    assert built, "no free space tried was enough for a build; raise the range"
    assert len(named) >= 3, named  # the disk filled at several stages, each named
    (small_disk / "ballast").unlink(missing_ok=True)


def test_a_memory_mapped_vector_file_is_reserved_before_a_byte_is_written(small_disk):
    """Without the reservation the copy into the map faults (SIGBUS, exit 135) once the disk is full."""
    from photo_index.backends.folder.writer import _reserved_memmap

    leave_free(small_disk, 64 * 1024)
    path = small_disk / "vectors.npy"
    with pytest.raises(OSError) as refused:
        _reserved_memmap(path, (1000, 512))  # 2 MB
    assert refused.value.errno == errno.ENOSPC and refused.value.filename == str(path)
    (small_disk / "ballast").unlink()
    vectors = _reserved_memmap(path, (1000, 512))
    vectors[:] = 1.0
    vectors.flush()
    assert path.stat().st_blocks * 512 >= 1000 * 512 * 4
