"""SIGKILL while a segment is written or while segments merge: the last version keeps serving, the next
write completes, and what the killed writer left is collected."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from photo_index.backends.folder.segments import SegmentedView, SegmentStore, write_segment
from photo_index.backends.folder.segments.segment import TMP_PREFIX
from photo_index.format import current_version

from .segtools import records_for, unit_vectors
from .segwriter import DIM, add, compact_all

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def base_index(tmp_path: Path, segments: int, size: int) -> SegmentStore:
    store = SegmentStore(tmp_path / "index")
    version = None
    for n in range(segments):
        ids = np.arange(n * size, (n + 1) * size, dtype=np.int64)
        info = write_segment(store.segments_dir, unit_vectors(size, seed=n, dim=DIM), ids, records_for(ids))
        version = store.commit(version, added=[info], encoder={"fingerprint": "enc-1"})
    store.publish(version)
    return store


def kill_while_writing_a_segment(store: SegmentStore, *args: str, timeout: float = 120) -> None:
    """Run segwriter.py, SIGKILL it as soon as its segment's temp folder appears."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("segwriter.py")), str(store.root),
                                *args], cwd=ROOT, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline and not any(
            p.name.startswith(TMP_PREFIX) for p in store.segments_dir.iterdir()):
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-3000:]


def snapshot(store: SegmentStore) -> tuple[str, np.ndarray]:
    with SegmentedView(store, store.current()) as view:
        return store.current_name(), view.search(unit_vectors(5, seed=7, dim=DIM), 10)[1]


@pytest.mark.parametrize(("segments", "size", "args", "write_again"), [
    (2, 1000, ("add", "20000"), lambda store: add(store, 20000)),
    (3, 8000, ("compact",), compact_all),
], ids=["mid-segment-write", "mid-merge"])
def test_a_kill_leaves_the_last_version_serving_and_the_next_write_completes(tmp_path, segments, size, args,
                                                                            write_again):
    store = base_index(tmp_path, segments, size)
    before = snapshot(store)
    kill_while_writing_a_segment(store, *args)
    assert any(p.name.startswith(TMP_PREFIX) for p in store.segments_dir.iterdir())  # the killed writer's leftovers
    after = snapshot(store)
    assert after[0] == before[0] and np.array_equal(after[1], before[1])
    write_again(store)
    assert current_version(store.root) != before[0]
    assert not any(p.name.startswith(TMP_PREFIX) for p in store.segments_dir.iterdir())
    assert {p.name for p in store.segments_dir.iterdir()} == set(store.current().segment_names())
    with SegmentedView(store, store.current()) as view:
        assert view.size == segments * size + (20000 if args[0] == "add" else 0)
