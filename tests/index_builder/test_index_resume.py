"""A build killed with SIGKILL mid-way leaves the live version serving; the next run resumes."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from index_builder import IndexReader, current_version
from index_builder.checks import verify
from tests.imagegen import random_photo

ROOT = Path(__file__).resolve().parents[2]


def staged_rows(index_dir: Path) -> int:
    entries = index_dir / "staging" / "entries.jsonl"
    return entries.read_bytes().count(b"\n") if entries.exists() else 0


@pytest.mark.slow
def test_killed_build_keeps_previous_version_and_resumes(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 3, "dog": 3})
    first = build(gallery=gallery)
    index_dir = tmp_path / "index"

    # Many new photos (one JPEG's bytes + a unique trailer: distinct files, cheap to write).
    buffer = io.BytesIO()
    random_photo((96, 72), seed=5).save(buffer, format="JPEG")
    base = buffer.getvalue()
    total_new = 400  # enough that the kill lands mid-way even on an idle box
    for i in range(total_new):
        (gallery / "dog" / f"new_{i:04d}.jpg").write_bytes(base + i.to_bytes(4, "big"))

    env = {**os.environ, "SBIR_BACKBONE": "sbir-tiny", "SBIR_PRETRAINED": "none", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "index_builder", "build", "--gallery", str(gallery), "--out", str(index_dir),
               "--workers", "0", "--batch-size", "2", "--no-progress"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while staged_rows(index_dir) < 8 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()
    staged = staged_rows(index_dir)
    assert 0 < staged < total_new, f"the kill came too late or too early to test resuming ({staged} staged)"

    # The previous version still serves, whole.
    assert current_version(index_dir) == first.version
    with IndexReader.open(index_dir) as reader:
        assert reader.size == 6
    assert verify(index_dir) == []

    # The next run resumes: it embeds only what the killed run had not staged.
    report = build(gallery=gallery)
    assert report.resumed >= staged - 2  # a torn last batch may be cut
    assert report.embedded + report.resumed == total_new
    assert report.added == total_new and report.size == 6 + total_new
    assert verify(index_dir) == []
    assert not (index_dir / "staging").exists()
