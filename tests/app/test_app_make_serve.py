"""The README's main command, `make serve`, works from a fresh clone: builds the index, serves, answers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.app.support import REPO, STROKES, TINY_ENV, make_gallery

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stand_in_venv(folder: Path) -> Path:
    """A VENV whose python is the running one, already 'installed' (its stamp is newer than any clone),
    so `make` uses the current environment and never reinstalls the shared one from a temporary clone."""
    (folder / "bin").mkdir(parents=True)
    python = folder / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    stamp = folder / ".installed"
    stamp.touch()
    future = time.time() + 3600
    os.utime(stamp, (future, future))
    return folder


@pytest.mark.skipif(not (shutil.which("make") and shutil.which("git")), reason="needs make and git")
def test_make_serve_from_a_fresh_clone_indexes_the_gallery_and_serves(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=60)
    venv = stand_in_venv(tmp_path / "venv")
    gallery = make_gallery(tmp_path / "photos")
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    env = {**os.environ, **TINY_ENV}
    env.pop("SBIR_CHECKPOINT", None)
    command = ["make", "serve", f"VENV={venv}", f"GALLERY={gallery}", f"INDEX={tmp_path / 'index'}", f"PORT={port}"]
    process = subprocess.Popen(command, cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 150
        while True:
            assert process.poll() is None, f"make serve exited:\n{(tmp_path / 'serve.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"not ready in time:\n{(tmp_path / 'serve.log').read_text()[-3000:]}"
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        response = httpx.post(f"{base}/search", json={**STROKES, "k": 5}, timeout=30)
        assert response.status_code == 200 and len(response.json()["results"]) == 5
        assert httpx.get(f"{base}/", timeout=10).status_code == 200
        assert httpx.get(f"{base}{response.json()['results'][0]['thumbnail_url']}", timeout=10).status_code == 200
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # make and the server it started: our own process group
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()
    assert (tmp_path / "index").is_dir()
