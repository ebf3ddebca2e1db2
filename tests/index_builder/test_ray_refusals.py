"""The Ray distributor refuses, in seconds and in one line, what would otherwise hang: a cluster address nobody
answers on (ray.init retried it for minutes) and more encoder actors than the cluster can place (Ray Data waited for
them for ever)."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from index_builder.ray_distributor import CPU_ONLY_SHARES, RayDistributor, connect
from photo_index.errors import BuildError


def _connected() -> bool:
    """Whether this process is a Ray driver now, without importing ray: an import here, before the session's
    cluster fixture sets its token environment (read at import), left that fixture's driver unauthenticated."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the block ends: nobody listens there


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "[::1]:{port}", "localhost:{port}"])
def test_an_address_nobody_answers_on_is_refused_at_once(form):
    connected = _connected()  # a session's shared local cluster may already be up: it stays as it was
    started = time.monotonic()
    with pytest.raises(BuildError, match="Cannot reach the Ray cluster"):
        connect(form.format(port=_closed_port()))
    assert time.monotonic() - started < 10 and _connected() == connected


def test_an_address_where_no_gcs_answers_is_refused_in_seconds():
    """A web server (the dashboard's port, say) accepts the connection: ray.init then retried it for minutes."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    connected, started = _connected(), time.monotonic()
    try:
        with pytest.raises(BuildError, match="not a Ray cluster's GCS"):
            connect(f"127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    assert time.monotonic() - started < 15 and _connected() == connected


def test_a_grpc_server_is_recognised_whatever_http_proxy_says(monkeypatch):
    """Ray's channels ignore http_proxy; the probe went through it and took a live GCS for no GCS."""
    from concurrent import futures

    import grpc

    from index_builder.ray_distributor import _speaks_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        for name in ("http_proxy", "https_proxy", "grpc_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{_closed_port()}")
        monkeypatch.delenv("no_proxy", raising=False)
        assert _speaks_grpc("127.0.0.1", port, 5.0)
    finally:
        server.stop(None)


@pytest.mark.parametrize(("resources", "actors", "on_gpu", "fits"), [
    ({"CPU": 2.0}, 1, False, True),
    ({"CPU": 2.0}, 6, False, True),  # a quarter CPU each beside a half-CPU read task
    ({"CPU": 2.0}, 50, False, False),
    ({"CPU": 8.0, "GPU": 2.0}, 2, True, True),
    ({"CPU": 8.0, "GPU": 2.0}, 3, True, False),
    ({"CPU": 2.0, "GPU": 4.0}, 2, True, False),  # one CPU per GPU actor, one for reading
])
def test_more_actors_than_the_cluster_can_place_are_refused(resources, actors, on_gpu, fits):
    reader_cpus, actor_cpus = (1, 1) if on_gpu else CPU_ONLY_SHARES
    check = RayDistributor._check_room
    if fits:
        check(resources, actors, actor_cpus, on_gpu, reader_cpus)
    else:
        with pytest.raises(BuildError, match="cannot all be placed"):
            check(resources, actors, actor_cpus, on_gpu, reader_cpus)
