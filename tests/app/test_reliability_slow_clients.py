"""Slow clients cannot crowd out the others (issue 19, item 6), against a real uvicorn run as `python -m app` runs it.

- 64 slow uploaders from one client (address 127.0.0.2, its own key) plus 64 slow uploaders with a wrong key
  (127.0.0.3): searches from 127.0.0.1 keep succeeding at their idle pace, because a wrong key is refused
  before it takes a body slot and one client holds at most SBIR_MAX_BODIES_PER_CLIENT of them.
- The same crowd on an open service (no keys): the cap is per source address.
- Connections that send no complete request head are closed within SBIR_HEADER_TIMEOUT_S.
- A 1 MB query string is a JSON 414 (uvicorn alone answers a plain-text 400).

Needs loopback addresses beyond 127.0.0.1 (Linux routes all of 127/8 to lo).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import selectors
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from app.main import create_app
from app.server import PROTOCOLS, http_protocol
from app.settings import Settings
from tests.app.support import STROKES, read_until_closed, serve, status_of

KEY_SEARCHER = "searcher-key-0123456789abcdef"
KEY_UPLOADER = "uploader-key-0123456789abcdef"
WRONG_KEY = "wrong-key-0123456789abcdef"
HEADER_TIMEOUT_S = 1.0
CROWD = 64
SEARCHES = 70


def _address(base: str) -> tuple[str, int]:
    url = urlsplit(base)
    return url.hostname, url.port


def _slow_upload(base: str, source: str, key: str | None) -> socket.socket:
    """A connection that declares a 100 kB body and sends its first bytes (the trickle sends the rest)."""
    sock = socket.create_connection(_address(base), timeout=5, source_address=(source, 0))
    key_header = f"X-API-Key: {key}\r\n" if key else ""
    sock.sendall(f"POST /search HTTP/1.1\r\nHost: test\r\n{key_header}Content-Type: image/png\r\n"
                 "Content-Length: 100000\r\n\r\n\x89PNG".encode())
    return sock


@contextlib.contextmanager
def crowd(base: str, uploaders: list[tuple[str, str | None]]) -> Iterator[None]:
    """Slow uploaders (source address, key) that trickle a byte every 0.2 s; one the server closes is opened
    again at once, so the pressure lasts while the block runs."""
    socks = [_slow_upload(base, source, key) for source, key in uploaders]
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.2):
            for i, (source, key) in enumerate(uploaders):
                try:
                    socks[i].send(b"\0")
                except OSError:
                    socks[i].close()
                    with contextlib.suppress(OSError):
                        socks[i] = _slow_upload(base, source, key)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        for sock in socks:
            sock.close()


def _searches(base: str, n: int, key: str | None) -> list[tuple[int, float]]:
    """``n`` sequential JSON searches from 127.0.0.1 on one keep-alive connection: (status, seconds)."""
    host, port = _address(base)
    connection = http.client.HTTPConnection(host, port, timeout=30, source_address=("127.0.0.1", 0))
    headers = {"Content-Type": "application/json", **({"X-API-Key": key} if key else {})}
    outcomes = []
    try:
        for _ in range(n):
            started = time.perf_counter()
            try:
                connection.request("POST", "/search", body=json.dumps({**STROKES, "k": 5}), headers=headers)
                response = connection.getresponse()
                response.read()
                outcomes.append((response.status, time.perf_counter() - started))
            except (OSError, http.client.HTTPException):
                connection.close()  # reconnects on the next request
                outcomes.append((-1, time.perf_counter() - started))
    finally:
        connection.close()
    return outcomes


def _searches_hold_their_pace(base: str, uploaders: list[tuple[str, str | None]], key: str | None) -> None:
    _searches(base, 5, key)  # warm
    idle = statistics.median(seconds for _, seconds in _searches(base, 25, key))
    with crowd(base, uploaders):
        time.sleep(0.5)  # every uploader has connected and sent its head
        outcomes = _searches(base, SEARCHES, key)
    succeeded = [seconds for status, seconds in outcomes if status == 200]
    statuses = sorted({status for status, _ in outcomes})
    assert len(succeeded) >= SEARCHES - 1, (len(succeeded), statuses)
    assert statistics.median(succeeded) <= 2 * idle, (statistics.median(succeeded), idle)


@pytest.fixture(params=sorted(PROTOCOLS))
def http_parser(request) -> str:
    """Each HTTP parser installed here (h11 always; httptools with uvicorn[standard]): both guard the same way."""
    return request.param


def _settings(app_index, http_parser: str, **overrides) -> Settings:
    return Settings(index_dir=app_index[1], header_timeout_s=HEADER_TIMEOUT_S, http_parser=http_parser, **overrides)


@pytest.mark.slow
def test_slow_and_wrong_key_uploaders_leave_searches_their_pace(app_index, app_encoder, http_parser):
    app = create_app(_settings(app_index, http_parser, api_keys=f"{KEY_SEARCHER},{KEY_UPLOADER}"), encoder=app_encoder)
    with serve(app) as base:
        uploaders = [("127.0.0.2", KEY_UPLOADER)] * CROWD + [("127.0.0.3", WRONG_KEY)] * CROWD
        _searches_hold_their_pace(base, uploaders, KEY_SEARCHER)


@pytest.mark.slow
def test_slow_uploaders_from_one_address_leave_an_open_service_its_pace(app_index, app_encoder, http_parser):
    app = create_app(_settings(app_index, http_parser), encoder=app_encoder)
    with serve(app) as base:
        _searches_hold_their_pace(base, [("127.0.0.2", None)] * CROWD, None)


def test_a_wrong_key_is_refused_at_once_without_a_body_slot(app_index, app_encoder, http_parser):
    settings = _settings(app_index, http_parser, api_key=KEY_SEARCHER, max_bodies_in_flight=1)
    app = create_app(settings, encoder=app_encoder)
    with serve(app) as base, crowd(base, [("127.0.0.2", KEY_SEARCHER)]):  # holds the one slot
        time.sleep(0.3)
        sock = _slow_upload(base, "127.0.0.3", WRONG_KEY)  # declares 100 kB, sends 4 bytes, then nothing
        started = time.monotonic()
        with sock:
            answer = read_until_closed(sock)
        took = time.monotonic() - started
    assert status_of(answer) == 401 and b'"unauthorized"' in answer, answer[:200]
    assert took < app.state.settings.drain_timeout_s + 1.0  # drained only within the short bound


def test_silent_and_stalled_connections_close_within_the_header_timeout(app_index, app_encoder, http_parser):
    app = create_app(_settings(app_index, http_parser), encoder=app_encoder)
    with serve(app) as base:
        started = time.monotonic()
        silent = [socket.create_connection(_address(base), timeout=5) for _ in range(190)]
        stalled = []  # half a request head, then nothing
        for _ in range(10):
            sock = socket.create_connection(_address(base), timeout=5)
            sock.sendall(b"POST /search HTTP/1.1\r\nHost: te")
            stalled.append(sock)
        open_socks = set(silent + stalled)
        selector = selectors.DefaultSelector()
        for sock in open_socks:
            selector.register(sock, selectors.EVENT_READ)
        deadline = started + HEADER_TIMEOUT_S + 2.0
        while open_socks and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(deadline - time.monotonic(), 0.01)):
                with contextlib.suppress(ConnectionResetError):
                    if key.fileobj.recv(4096):
                        continue
                selector.unregister(key.fileobj)
                open_socks.discard(key.fileobj)
        closed_after = time.monotonic() - started
        for sock in silent + stalled:
            sock.close()
    assert not open_socks, f"{len(open_socks)} of 200 still open after {closed_after:.1f} s"
    assert closed_after >= HEADER_TIMEOUT_S - 0.1  # not closed before their time


def test_a_keep_alive_connection_that_stalls_in_its_next_head_is_closed(app_index, app_encoder, http_parser):
    app = create_app(_settings(app_index, http_parser, timeout_keep_alive_s=30), encoder=app_encoder)
    with serve(app) as base:
        sock = socket.create_connection(_address(base), timeout=HEADER_TIMEOUT_S + 3)
        with sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            response = http.client.HTTPResponse(sock)
            response.begin()
            assert response.status == 200 and response.read()
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # the next head stalls (keep-alive timeout: 30 s)
            started = time.monotonic()
            assert read_until_closed(sock) == b""
            assert time.monotonic() - started < HEADER_TIMEOUT_S + 2.0


def test_a_slow_but_complete_head_is_served(app_index, app_encoder, http_parser):
    app = create_app(_settings(app_index, http_parser), encoder=app_encoder)
    with serve(app) as base:
        sock = socket.create_connection(_address(base), timeout=10)
        with sock:
            for part in (b"GET /healthz HTTP/1.1\r\n", b"Host: test\r\n", b"Connection: close\r\n\r\n"):
                sock.sendall(part)
                time.sleep(HEADER_TIMEOUT_S / 4)
            assert status_of(read_until_closed(sock)) == 200


@pytest.mark.parametrize("where", ["query", "short query", "header"])
def test_an_oversized_request_head_is_a_json_error_naming_it(app_index, app_encoder, http_parser, where):
    app = create_app(_settings(app_index, http_parser), encoder=app_encoder)
    with serve(app) as base:
        connection = http.client.HTTPConnection(*_address(base), timeout=10)
        try:
            if where == "query":
                connection.request("GET", "/search?text=" + "a" * 1_000_000)
            elif where == "short query":  # over the 16 KiB limit, arriving with its headers in one read
                connection.request("GET", "/healthz?" + "a" * 20_000)
            else:
                connection.request("GET", "/healthz", headers={"X-Padding": "a" * 100_000})
            response = connection.getresponse()
            status, content_type, body = response.status, response.getheader("content-type"), response.read()
        finally:
            connection.close()
    assert content_type == "application/json"
    answer = json.loads(body)
    assert set(answer) == {"error", "detail"}
    if where != "header":
        assert status == 414 and answer["error"] == "uri_too_long" and "query string" in answer["detail"]
    else:
        assert status == 431 and answer["error"] == "headers_too_large" and "headers" in answer["detail"]
    assert app.state.metrics.registry.get_sample_value("sbir_errors_total", {"type": answer["error"]}) == 1


def test_the_header_timeout_is_a_setting_with_a_default_of_10_s(monkeypatch):
    monkeypatch.delenv("SBIR_HEADER_TIMEOUT_S", raising=False)
    assert Settings().header_timeout_s == 10.0
    monkeypatch.setenv("SBIR_HEADER_TIMEOUT_S", "3.5")
    assert Settings().header_timeout_s == 3.5


def test_the_per_client_cap_applies_only_while_the_body_slots_are_contended():
    """A fast client behind one address (a benchmark, 16 concurrent searches) keeps the idle slots; past half the
    slots in use, a client already holding its share is refused so the rest stay for the others."""
    from app.body_guard import BodyGuard, BodyLimits

    guard = BodyGuard(app=None, limits=BodyLimits(timeout_s=1, max_in_flight=64, drain_max_bytes=0,
                                                  drain_timeout_s=1, max_per_client=8))
    guard.per_client["127.0.0.1"], guard.in_flight = 16, 16
    assert not guard._over_fair_share("127.0.0.1")  # 16 of 64 in use: not contended
    guard.per_client["127.0.0.2"], guard.in_flight = 16, 32
    assert guard._over_fair_share("127.0.0.2") and guard._over_fair_share("127.0.0.1")
    assert not guard._over_fair_share("127.0.0.3")  # a newcomer still gets a slot


def test_a_request_head_that_is_not_http_is_a_json_400(app_index, app_encoder, http_parser):
    app = create_app(_settings(app_index, http_parser), encoder=app_encoder)
    with serve(app) as base:
        sock = socket.create_connection(_address(base), timeout=10)
        with sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost test\r\n\r\n")  # a header line without its colon
            answer = read_until_closed(sock)
    assert status_of(answer) == 400 and b"application/json" in answer, answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"error": "bad_request",
                                                           "detail": "The request is not valid HTTP/1.1."}


def test_auto_serves_with_httptools_where_installed_else_h11(monkeypatch):
    assert http_protocol("h11") is PROTOCOLS["h11"]
    if "httptools" in PROTOCOLS:
        assert http_protocol("auto") is PROTOCOLS["httptools"]
    monkeypatch.delitem(PROTOCOLS, "httptools", raising=False)  # as on a host without it
    assert http_protocol("auto") is PROTOCOLS["h11"]
    with pytest.raises(ValueError, match="httptools"):
        http_protocol("httptools")
