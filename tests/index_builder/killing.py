"""Real SIGKILLs of `python -m index_builder build` subprocesses (mid-embedding, or held before sealing a segment),
and the checks after them: the build lock's holder, the processes of a session."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from tests.imagegen import random_photo

ROOT = Path(__file__).resolve().parents[2]
PAUSE_HOOK = Path(__file__).with_name("pausepoint")  # its sitecustomize holds a build before a seal


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
                             timeout: float = 120, sig: int = signal.SIGKILL) -> int:
    """Start a build (batches of 2), send it ``sig`` once 8 rows are staged; returns the rows staged then. A
    SIGKILL must kill it; SIGINT or SIGTERM must unwind it: exit 128 + the signal, saying it was interrupted."""
    command = [sys.executable, "-m", "index_builder", "build", "--gallery", str(gallery), "--out", str(index_dir),
               "--batch-size", "2", "--no-progress", *options]
    env = {**os.environ, "SBIR_BACKBONE": "sbir-tiny", "SBIR_PRETRAINED": "none", "PYTHONPATH": str(ROOT),
           **(env or {})}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while staged_rows(index_dir) < 8 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(sig)
    process.wait(timeout=120)
    err = process.stderr.read().decode()
    if sig == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL, err[-3000:]
    else:
        assert process.returncode == 128 + sig and "interrupted" in err, (process.returncode, err[-3000:])
    return staged_rows(index_dir)


def locked_by_another_process(index_dir: Path) -> bool:
    """Whether a fresh process is refused the lock file's record lock."""
    probe = textwrap.dedent(f"""
        import fcntl, sys
        with open({str(index_dir / ".lock")!r}, "a+") as handle:
            try:
                fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                sys.exit(3)
    """)
    return subprocess.run([sys.executable, "-c", probe], timeout=30).returncode == 3


def session_processes(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def wait_until_gone(sid: int, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := session_processes(sid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def build_killed_before_seal(gallery: Path, index_dir: Path, seal: int) -> Path:
    """Run a real build (its own session) until it is about to seal its ``seal``-th segment, SIGKILL its process
    group there, and check none of its processes outlives it; the temp folder it was writing."""
    env = {**os.environ, "SBIR_BACKBONE": "sbir-tiny", "SBIR_PRETRAINED": "none",
           "PYTHONPATH": f"{PAUSE_HOOK}{os.pathsep}{ROOT}", "SBIR_TEST_PAUSE_AT_SEAL": str(seal)}
    command = [sys.executable, "-m", "index_builder", "build", "--gallery", str(gallery), "--out", str(index_dir),
               "--workers", "1", "--no-progress"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    watchdog = threading.Timer(300, os.killpg, (process.pid, signal.SIGKILL))  # never hang the suite
    watchdog.start()
    try:
        lines = []
        for line in process.stderr:  # ends at EOF if the build exits without reaching the hold
            lines.append(line.decode(errors="replace"))
            if line.startswith(b"paused "):
                break
        assert lines and lines[-1].startswith("paused "), "".join(lines)[-3000:]
        os.killpg(process.pid, signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
        assert wait_until_gone(process.pid, 10) == []  # no worker, no child left behind
    finally:
        watchdog.cancel()
        if session_processes(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stderr.close()
    return Path(lines[-1].split(" ", 1)[1].strip())
