"""A real single-node Ray cluster for tests: started with `ray start --head --block`, on loopback, in its own
short temp dir; stopped by its pid, then checked for processes that outlived it.

Every process of the cluster (GCS, raylet, agents, workers) inherits a marker variable from the head
process, so leftovers are found by that marker, never by a process name another user might share.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARK = "SBIR_TEST_RAY_CLUSTER"
# Ray treats this as "single machine": every server binds 127.0.0.1 (the default binds all interfaces).
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def marked_processes(mark: str) -> list[int]:
    """Pids of live processes whose environment carries ``MARK=mark``."""
    needle = f"{MARK}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


class LocalRayCluster:
    def __init__(self, cpus: int = 4) -> None:
        self.cpus = cpus
        self.mark = uuid.uuid4().hex
        # Short: Ray's Unix sockets live under it and their paths must stay under ~107 bytes.
        self.temp_dir = tempfile.mkdtemp(prefix="sr", dir="/tmp")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = Path(self.temp_dir) / "head.log"
        self.head: subprocess.Popen | None = None
        # What a driver needs besides the address: loopback, and this cluster's own token (none in ~/.ray).
        self.driver_env = {**LOOPBACK_ONLY, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                           "RAY_USAGE_STATS_ENABLED": "0"}

    def start(self, timeout: float = 180) -> None:
        ray_cli = Path(sys.executable).with_name("ray")  # from the `distributed` extra: missing is a failure
        assert ray_cli.exists(), f"{ray_cli} is missing: install the `distributed` extra (ray[data])"
        env = {**os.environ, **self.driver_env, MARK: self.mark, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
               "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # nothing runs at teardown: no drain to wait for
        command = [str(ray_cli), "start", "--head", "--block", f"--port={self.port}", f"--num-cpus={self.cpus}",
                   "--num-gpus=0", f"--temp-dir={self.temp_dir}", "--include-dashboard=false",
                   f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                   "--object-store-memory=200000000", "--disable-usage-stats"]
        with open(self.log, "wb") as log:
            self.head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while b"Ray runtime started" not in self.log.read_bytes():
            if self.head.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Ray head did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self, timeout: float = 60) -> list[int]:
        """Stop the head (it drains and stops its processes); returns the pids that outlived it (then killed)."""
        if self.head is not None and self.head.poll() is None:
            self.head.send_signal(signal.SIGTERM)
            try:
                self.head.wait(timeout)
            except subprocess.TimeoutExpired:
                self.head.kill()
                self.head.wait()
        deadline = time.monotonic() + 20
        survivors = marked_processes(self.mark)
        while survivors and time.monotonic() < deadline:
            time.sleep(0.2)
            survivors = marked_processes(self.mark)
        for pid in survivors:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return survivors
