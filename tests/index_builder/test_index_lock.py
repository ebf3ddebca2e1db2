"""The build lock belongs to the building process alone: forked children do not hold it, a SIGKILLed build frees
it at once, and its DataLoader workers die with it."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from index_builder.lock import build_lock
from photo_index.errors import BuildError
from tests.imagegen import random_photo

from .killing import locked_by_another_process, session_processes, wait_until_gone

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "SBIR_BACKBONE": "sbir-tiny", "SBIR_PRETRAINED": "none", "PYTHONPATH": str(ROOT)}


def test_a_second_build_in_the_same_process_is_refused_and_the_first_keeps_its_lock(tmp_path):
    index_dir = tmp_path / "index"
    with build_lock(index_dir):
        with pytest.raises(BuildError, match="Another build"), build_lock(index_dir):
            pass
        # A record lock is dropped by any close of the file in its process: the refusal must not have opened it.
        assert locked_by_another_process(index_dir)
    assert not locked_by_another_process(index_dir)
    with build_lock(index_dir):  # and it can be taken again
        pass


def test_a_forked_child_outliving_a_killed_holder_does_not_hold_the_lock(tmp_path):
    index_dir = tmp_path / "index"
    holder = textwrap.dedent(f"""
        import os, time
        from index_builder.lock import build_lock
        with build_lock({str(index_dir)!r}):
            if os.fork() == 0:  # the child inherits the lock file's descriptor, as a DataLoader worker does
                time.sleep(60)
                os._exit(0)
            print("locked", flush=True)
            time.sleep(60)
    """)
    process = subprocess.Popen([sys.executable, "-c", holder], env=ENV, stdout=subprocess.PIPE,
                               start_new_session=True)
    try:
        assert process.stdout.readline() == b"locked\n"
        assert locked_by_another_process(index_dir)
        with pytest.raises(BuildError, match="Another build"), build_lock(index_dir):
            pass
        process.kill()
        process.wait()
        assert session_processes(process.pid), "the forked child should still be alive for this test"
        with build_lock(index_dir):  # freed at once, though the child still has the descriptor
            pass
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.slow
def test_a_sigkilled_build_leaves_no_worker_and_the_next_build_completes(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 2})
    buffer = io.BytesIO()
    random_photo((96, 72), seed=5).save(buffer, format="JPEG")
    for i in range(300):
        (gallery / "cat" / f"new_{i:04d}.jpg").write_bytes(buffer.getvalue() + i.to_bytes(4, "big"))
    index_dir = tmp_path / "index"
    command = [sys.executable, "-m", "index_builder", "build", "--gallery", str(gallery), "--out", str(index_dir),
               "--workers", "2", "--batch-size", "2", "--no-progress"]
    process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)  # its own session: every process it starts is findable
    try:
        entries = index_dir / "staging" / "entries.jsonl"
        deadline = time.monotonic() + 120
        while (not entries.exists() or entries.stat().st_size == 0) and process.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.005)
        assert process.poll() is None, process.stderr.read().decode()
        assert len(session_processes(process.pid)) >= 3, "expected the build and its two workers mid-embedding"
        process.kill()  # the main process only, as the OOM killer does
        process.wait()
        assert wait_until_gone(process.pid, 10) == []
    finally:
        if session_processes(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
    report = build(gallery=gallery)
    assert report.size == 302 and report.resumed > 0
