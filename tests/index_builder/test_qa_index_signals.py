"""Ctrl-C (SIGINT to the process group) and SIGTERM stop a build with a message and exit 128+n, no traceback
(workers included); the live version stays, and the next run resumes."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from photo_index import current_version
from tests.imagegen import random_photo

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_build_exits_cleanly(make_gallery, build, tmp_path, signum):
    gallery = make_gallery({"cat": 2})
    first = build(gallery=gallery)
    index_dir = tmp_path / "index"
    buffer = io.BytesIO()
    random_photo((96, 72), seed=5).save(buffer, format="JPEG")
    for i in range(300):
        (gallery / "cat" / f"new_{i:04d}.jpg").write_bytes(buffer.getvalue() + i.to_bytes(4, "big"))

    env = {**os.environ, "SBIR_BACKBONE": "sbir-tiny", "SBIR_PRETRAINED": "none", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "index_builder", "build", "--gallery", str(gallery), "--out", str(index_dir),
               "--workers", "1", "--batch-size", "2", "--no-progress"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    entries = index_dir / "staging" / "entries.jsonl"
    deadline = time.monotonic() + 120
    while (not entries.exists() or entries.stat().st_size == 0) and process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(process.pid, signum)  # like Ctrl-C in a terminal: the workers get it too
    _, err = process.communicate(timeout=60)
    err = err.decode()
    assert process.returncode == 128 + signum, err
    assert "Traceback" not in err and "interrupted" in err, err
    assert current_version(index_dir) == first.version
    report = build(gallery=gallery)
    assert report.resumed > 0 and report.size == 302
