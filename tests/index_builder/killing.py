"""A real SIGKILL of a `python -m index_builder build` subprocess while it is embedding."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.imagegen import random_photo

ROOT = Path(__file__).resolve().parents[2]


def write_distinct_photos(folder: Path, count: int) -> None:
    """``count`` photos: one JPEG's bytes + a unique trailer each (distinct files, cheap to write)."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    random_photo((96, 72), seed=5).save(buffer, format="JPEG")
    for i in range(count):
        (folder / f"new_{i:04d}.jpg").write_bytes(buffer.getvalue() + i.to_bytes(4, "big"))


def staged_rows(index_dir: Path) -> int:
    entries = index_dir / "staging" / "entries.jsonl"
    return entries.read_bytes().count(b"\n") if entries.exists() else 0


def kill_build_mid_embedding(gallery: Path, index_dir: Path, *options: str, env: dict | None = None,
                             timeout: float = 120) -> int:
    """Start a build (batches of 2), SIGKILL it once 8 rows are staged; returns the rows staged then."""
    command = [sys.executable, "-m", "index_builder", "build", "--gallery", str(gallery), "--out", str(index_dir),
               "--batch-size", "2", "--no-progress", *options]
    env = {**os.environ, "SBIR_BACKBONE": "sbir-tiny", "SBIR_PRETRAINED": "none", "PYTHONPATH": str(ROOT),
           **(env or {})}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while staged_rows(index_dir) < 8 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-3000:]
    return staged_rows(index_dir)
