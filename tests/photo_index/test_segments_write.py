"""A segment is written whole or not at all, says what it holds, and detects damage by its checksums."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest

from photo_index.backends.folder.faiss_index import FaissEngine
from photo_index.backends.folder.records import write_metadata
from photo_index.backends.folder.segments import Segment, SegmentStore, adopt_folder, checksum_problems, write_segment
from photo_index.backends.folder.segments.checks import segment_problems
from photo_index.backends.folder.segments.segment import SEGMENT_FILE, TMP_PREFIX, read_segment_info
from photo_index.errors import BuildError, IndexCorruptError
from photo_index.format import IDS, METADATA, VECTORS

from .segtools import DIM, records_for, unit_vectors


def test_a_small_segment_is_exact_and_holds_its_rows(tmp_path):
    ids = np.arange(10, 110, dtype=np.int64)
    vectors = unit_vectors(100, seed=1)
    info = write_segment(tmp_path, vectors, ids, records_for(ids))
    folder = tmp_path / info.name
    assert sorted(p.name for p in tmp_path.iterdir()) == [info.name]  # no temp folder left
    assert (info.size, info.dim, info.index["factory"]) == (100, DIM, "Flat")
    assert checksum_problems(folder, info) == []
    segment = Segment(folder)
    try:
        assert np.array_equal(segment.ids, ids)
        assert np.array_equal(np.asarray(segment.vectors), vectors)
        assert len(segment.metadata.ids()) == 100
        _, found = segment.index.search(vectors[:5], 1)
        assert found[:, 0].tolist() == ids[:5].tolist()
        assert segment.rows_of(np.array([10, 11, 5, 109, 110])).tolist() == [0, 1, -1, 99, -1]
    finally:
        segment.close()


def test_a_large_segment_gets_a_trained_ivf_with_a_calibrated_nprobe(tmp_path):
    ids = np.arange(2000, dtype=np.int64)
    info = write_segment(tmp_path, unit_vectors(2000, seed=2), ids, records_for(ids), factory="IVF16,Flat")
    assert info.index["factory"] == "IVF16,Flat"
    assert info.index["calibration"]["param"] == "nprobe"
    assert info.search_params["nprobe"] == info.index["calibration"]["nprobe"]


def test_a_damaged_file_is_found_by_its_checksum(tmp_path):
    ids = np.arange(50, dtype=np.int64)
    info = write_segment(tmp_path, unit_vectors(50, seed=3), ids, records_for(ids))
    vectors = tmp_path / info.name / VECTORS
    data = bytearray(vectors.read_bytes())
    data[-1] ^= 0xFF
    vectors.write_bytes(bytes(data))
    problems = checksum_problems(tmp_path / info.name, info)
    assert problems == [f"segment {info.name}: {VECTORS} differs from its checksum"]


@pytest.mark.parametrize("ids", [np.array([3, 2, 1]), np.array([1, 1, 2]), np.array([-1, 0, 1])])
def test_rows_a_segment_cannot_hold_are_refused_and_leave_nothing(tmp_path, ids):
    with pytest.raises(BuildError, match="strictly ascending|outside 0"):
        write_segment(tmp_path, unit_vectors(3, seed=4), ids, records_for(ids))
    assert list(tmp_path.iterdir()) == []


def test_a_failure_mid_write_removes_the_temp_folder(tmp_path):
    ids = np.arange(5, dtype=np.int64)
    with pytest.raises(BuildError, match="metadata rows"):
        write_segment(tmp_path, unit_vectors(5, seed=5), ids, records_for(ids[:4]))
    assert not any(p.name.startswith(TMP_PREFIX) for p in tmp_path.iterdir())


def test_a_damaged_segment_json_is_a_corrupt_index(tmp_path):
    ids = np.arange(5, dtype=np.int64)
    info = write_segment(tmp_path, unit_vectors(5, seed=6), ids, records_for(ids))
    (tmp_path / info.name / SEGMENT_FILE).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(IndexCorruptError, match="segment.json is unreadable"):
        read_segment_info(tmp_path / info.name)


@pytest.mark.parametrize(("key", "value", "named"), [
    ("files", {"vectors.npy": 5}, "files.vectors.npy"),
    ("files", {"../../elsewhere": {"bytes": 1, "sha256": "0"}}, "files.../../elsewhere"),
    ("files", [], "files"),
    ("size", "5", "size"),
    ("dim", True, "dim"),
    ("index", {"search_params": "x"}, "index.search_params"),
    ("index", {"file": 7}, "index.file"),
    ("created_at", None, "created_at"),
])
def test_a_segment_json_of_wrong_types_is_a_corrupt_index_naming_the_field(tmp_path, key, value, named):
    ids = np.arange(5, dtype=np.int64)
    info = write_segment(tmp_path, unit_vectors(5, seed=6), ids, records_for(ids))
    path = tmp_path / info.name / SEGMENT_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    with pytest.raises(IndexCorruptError, match="missing or malformed") as raised:
        read_segment_info(tmp_path / info.name)
    assert str(path) in str(raised.value) and named in str(raised.value)


def test_a_one_copy_version_folder_becomes_a_segment_without_copying(tmp_path):
    old = tmp_path / "versions" / "v1"
    old.mkdir(parents=True)
    ids = np.arange(0, 40, 2, dtype=np.int64)
    vectors = unit_vectors(20, seed=7)
    np.save(old / VECTORS, vectors)
    np.save(old / IDS, ids)
    write_metadata(old / METADATA, records_for(ids))
    section = FaissEngine().build(vectors, ids, old, progress=False)
    info = adopt_folder(tmp_path / "segments", old, section)
    folder = tmp_path / "segments" / info.name
    assert os.stat(folder / VECTORS).st_ino == os.stat(old / VECTORS).st_ino  # a hard link, not a copy
    assert (info.size, info.dim, info.index["factory"]) == (20, DIM, "Flat")
    segment = Segment(folder)
    try:
        assert segment.index.search(vectors[3:4], 1)[1][0, 0] == ids[3]
    finally:
        segment.close()


def test_verify_finds_damage_in_segments_and_tombstones(tmp_path):
    store = SegmentStore(tmp_path)
    ids = np.arange(30, dtype=np.int64)
    first = write_segment(store.segments_dir, unit_vectors(30, 1), ids, records_for(ids))
    second = write_segment(store.segments_dir, unit_vectors(5, 2), ids[:5], records_for(ids[:5]))
    version = store.commit(None, added=[first], encoder={"fingerprint": "e"})
    version = store.commit(version, added=[second], removed=np.array([7]))
    assert segment_problems(store, version) == []
    broken = replace(version, segments=(replace(version.segments[0], tombstones=np.array([7, 99])),
                                        version.segments[1]))
    assert segment_problems(store, broken) == [
        f"segment {first.name}: 1 tombstones name ids it does not hold", "5 photo ids are live in two segments"]
    (store.segment_dir(second.name) / "index.faiss").write_bytes(b"garbage")
    problems = segment_problems(store, version)
    assert problems[0] == f"segment {second.name}: index.faiss differs from its checksum"
    assert problems[1].startswith(f"segment {second.name}: unreadable (FAISS index") and len(problems) == 2


def test_a_sqlite_write_error_other_than_a_full_disk_is_an_os_error_naming_the_file(tmp_path):
    """Under a file-size limit or a quota SQLite says "disk I/O error" (only ENOSPC is "full"): that escaped as a
    sqlite3.OperationalError, a traceback in build and compact. Run in a child limited to 64 KB files."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from pathlib import Path
        from photo_index.backends.folder.records import write_metadata
        from tests.photo_index.segtools import records_for
        try:
            write_metadata(Path({str(tmp_path / 'metadata.sqlite')!r}), records_for(range(5000)))
        except OSError as error:
            print("OSError", error.errno, error.filename)
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == f"OSError 5 {tmp_path / 'metadata.sqlite'}", done.stdout + done.stderr
