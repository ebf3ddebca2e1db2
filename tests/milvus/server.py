"""A real Milvus standalone server for the tests: the PyPI ``milvus`` package's binary (embedded etcd, local
storage), on 127.0.0.1 and a free port, with its data in a temp folder; it can be killed and restarted in place."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from pathlib import Path

from milvus import MilvusServer, MilvusServerConfig


class ReusablePortConfig(MilvusServerConfig):
    """The package checks ports by binding them without SO_REUSEADDR, so a port a killed server left in TIME_WAIT
    looks taken and a restart would move to another port; Milvus itself binds with SO_REUSEADDR, so check alike."""

    def try_bind_port(self, port):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            sock.close()
            return None
        return sock


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MilvusProcess:
    """Start, SIGKILL and restart one standalone server keeping its port and data."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.port = free_port()
        self.server: MilvusServer | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 150) -> None:
        server = MilvusServer(ReusablePortConfig(), wait_for_started=False)
        server.set_base_dir(str(self.base_dir))
        server.listen_port = self.port
        server.start()
        try:
            self._wait_healthy(server, timeout_s)
            if server.listen_port != self.port:
                raise RuntimeError(f"Milvus came up on port {server.listen_port}, not {self.port}")
        except BaseException:
            server.stop()
            raise
        self.server = server

    def _wait_healthy(self, server: MilvusServer, timeout_s: float) -> None:
        """Until /healthz answers OK; fails at once (with the server's log) when the process exits."""
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{server.webservice_port}/healthz"
        while time.monotonic() < deadline:
            if server.server_proc.poll() is not None:
                raise RuntimeError(f"Milvus exited with {server.server_proc.returncode} while starting "
                                   f"(another Milvus on this host holds its fixed etcd peer port 2380?):\n"
                                   + self._log_tail())
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if b"OK" in response.read():
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"Milvus did not become healthy within {timeout_s:.0f} s:\n" + self._log_tail())

    def _log_tail(self) -> str:
        log = self.base_dir / "logs" / "milvus-stdout.log"
        return log.read_text(errors="replace")[-2000:] if log.is_file() else "(no log)"

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would."""
        server, self.server = self.server, None
        if server is not None and server.server_proc is not None:
            os.kill(server.server_proc.pid, signal.SIGKILL)
            server.server_proc.wait(timeout=30)
            server.server_proc = None
            server.stop()  # closes its log files

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop()  # SIGTERM, then SIGKILL after a second

    def leftovers(self) -> list[int]:
        """Pids of `milvus run standalone` processes of this server's folder that are still alive."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0].decode(errors="replace").startswith(str(self.base_dir)) and b"run" in cmdline:
                found.append(int(proc.name))
        return found
