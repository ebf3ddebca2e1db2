"""Oversized, slow and surplus request bodies, against a real uvicorn: every client reads its 413 (even one that
sends the whole body before reading, as http.client and urllib do), a trickled body ends in 408 within the body
timeout while searches keep their pace, and bodies beyond the in-flight bound get 503 with Retry-After."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from app.body_guard import BodyGuard, BodyLimits
from app.main import create_app
from app.settings import MIB, Settings
from tests.app.support import read_until_closed, serve, sketch_png, status_of

BODY_TIMEOUT_S = 3.0
DRAIN_TIMEOUT_S = 1.5
PNG = sketch_png()
BIG_PNG = b"\x89PNG\r\n\x1a\n" + bytes(40_000_000)  # 40 MB, 4x the upload limit
BOUNDARY = "sbir-test-boundary"


def _multipart(data: bytes) -> bytes:
    head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="sketch"; filename="s.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def _strokes_json(size: int) -> bytes:
    """A drawing of ``size`` bytes: far more than the upload limit (and the point limit)."""
    point = b"[12,34],"
    return b'{"strokes": [[' + point * (size // len(point)) + b"[0,0]]]}"


OVERSIZED = {
    "multipart file": (lambda: _multipart(BIG_PNG), f"multipart/form-data; boundary={BOUNDARY}"),
    "raw image": (lambda: BIG_PNG, "image/png"),
    "json strokes": (lambda: _strokes_json(11_000_000), "application/json"),
}


@pytest.fixture(scope="module")
def served(app_index, app_encoder) -> Iterator[tuple[str, object]]:
    """One real uvicorn for the module: (base URL, app), with a short body timeout and drain time."""
    settings = Settings(index_dir=app_index[1], reload_interval_s=0.2, body_timeout_s=BODY_TIMEOUT_S,
                        drain_timeout_s=DRAIN_TIMEOUT_S, max_bodies_in_flight=64,
                        max_bodies_per_client=64)  # a crowd from one address on purpose: the timeout is tested
    app = create_app(settings, encoder=app_encoder)
    with serve(app) as base:
        yield base, app


@contextlib.contextmanager
def connect(base: str) -> Iterator[http.client.HTTPConnection]:
    url = urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        yield connection
    finally:
        connection.close()


def post(connection: http.client.HTTPConnection, body: bytes, content_type: str,
         headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    connection.request("POST", "/search", body=body, headers={"Content-Type": content_type, **(headers or {})})
    response = connection.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(response.read())


def raw_request(base: str, headers: str, body: bytes = b"") -> socket.socket:
    url = urlsplit(base)
    sock = socket.create_connection((url.hostname, url.port), timeout=30)
    sock.sendall(f"POST /search HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode() + body)
    return sock


def bodies_in_flight(app) -> float:
    return app.state.metrics.bodies_in_flight._value.get()


@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "connection-close"])
@pytest.mark.parametrize("kind", list(OVERSIZED))
def test_every_http_client_reads_the_413_of_an_oversized_body(served, kind, close):
    base, _ = served
    make, content_type = OVERSIZED[kind]
    with connect(base) as connection:  # urllib always sends "Connection: close": the server closes once it answers
        status, headers, body = post(connection, make(), content_type, {"Connection": "close"} if close else None)
    assert status == 413 and body["error"] == "request_too_large", body
    assert headers["connection"] == "close"
    with connect(base) as again:  # and the service serves on
        assert post(again, PNG, "image/png")[0] == 200


@pytest.mark.parametrize(("declared", "expect", "drained"), [
    (200 * MIB, False, False),  # beyond the drain bound: not read, answered at once
    (11 * MIB, True, False),  # the client waits for "100 Continue" before sending: nothing to drain
    (11 * MIB, False, True),  # within the bound but it stops coming: drained for the drain time, no longer
], ids=["beyond-the-drain-bound", "expect-100-continue", "stops-coming"])
def test_a_refused_body_is_drained_only_within_its_bounds(served, declared, expect, drained):
    base, _ = served
    started = time.monotonic()
    headers = f"Content-Type: image/png\r\nContent-Length: {declared}\r\n" + ("Expect: 100-continue\r\n" * expect)
    with raw_request(base, headers, b"" if expect else PNG[:1000]) as sock:
        answer = read_until_closed(sock)
    took = time.monotonic() - started
    assert status_of(answer) == 413 and b"100 Continue" not in answer
    assert DRAIN_TIMEOUT_S - 0.1 <= took < BODY_TIMEOUT_S + 1 if drained else took < DRAIN_TIMEOUT_S


@pytest.mark.parametrize(("length", "status"), [("9" * 4301, 400), ("0" * 4301, 422), ("\u00b2", 400)],
                         ids=["4301-digits", "4301-zeros", "superscript-two"])
def test_a_content_length_of_thousands_of_digits_or_odd_digits_is_a_4xx(served, length, status):
    """int() of more than 4300 digits raised ValueError (a 500 on every route: the HTTP parser passes leading zeros,
    and refuses a value that overflows); '²' is a digit to str.isdigit."""
    base, _ = served
    headers = f"Content-Type: image/png\r\nContent-Length: {length}\r\nConnection: close\r\n"
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(b"POST /search HTTP/1.1\r\nHost: test\r\n" + headers.encode("latin-1") + b"\r\n")
        assert status_of(read_until_closed(sock)) == status


def _search_latencies(base: str, n: int, until: float = float("inf")) -> list[float]:
    """Up to ``n`` sequential image searches on one keep-alive connection (stopping at ``until``), in seconds."""
    latencies = []
    with connect(base) as connection:
        for _ in range(n):
            if time.monotonic() >= until:
                break
            started = time.perf_counter()
            status, _, body = post(connection, PNG, "image/png")
            latencies.append(time.perf_counter() - started)
            assert status == 200, body
    return latencies


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.mark.slow
def test_trickling_bodies_end_in_408_within_the_timeout_while_searches_keep_their_pace(served):
    base, app = served
    _search_latencies(base, 5)  # warm
    idle = statistics.median(_search_latencies(base, 25))
    rss_before = _rss_bytes()

    started = time.monotonic()
    socks = [raw_request(base, "Content-Type: image/png\r\nContent-Length: 100000\r\n", PNG[:8]) for _ in range(50)]
    stop = threading.Event()

    def trickle() -> None:  # one more byte to every connection, ten times a second, until the server hangs up
        while not stop.wait(0.1):
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.send(b"\0")

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    try:
        # Searches while all 50 are trickling: a bounded loop that stops well before their timeout.
        loaded_latencies = _search_latencies(base, 25, until=started + BODY_TIMEOUT_S - 0.5)
        assert bodies_in_flight(app) >= 50
        answers = []
        for sock in socks:
            sock.settimeout(max(started + BODY_TIMEOUT_S + 2.0 - time.monotonic(), 0.1))
            try:
                answers.append(read_until_closed(sock))
            except TimeoutError:
                answers.append(b"still open")
        closed_after = time.monotonic() - started
    finally:
        stop.set()
        trickler.join()
        for sock in socks:
            sock.close()
    assert [status_of(a) for a in answers] == [408] * 50, {a[:60] for a in answers}
    assert b'"body_timeout"' in answers[0] and closed_after < BODY_TIMEOUT_S + 2.0
    loaded = statistics.median(loaded_latencies)
    assert len(loaded_latencies) >= 5 and loaded <= 2 * idle, (loaded, idle, len(loaded_latencies))
    assert _rss_bytes() - rss_before < 64 * MIB
    deadline = time.monotonic() + 5
    while bodies_in_flight(app) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bodies_in_flight(app) == 0


def test_bodies_beyond_the_in_flight_bound_get_503_with_retry_after(app_index, app_encoder):
    settings = Settings(index_dir=app_index[1], max_bodies_in_flight=2, drain_timeout_s=0.5)
    app = create_app(settings, encoder=app_encoder)
    with serve(app) as base:
        holders = [raw_request(base, "Content-Type: image/png\r\nContent-Length: 100000\r\n", PNG[:8])
                   for _ in range(2)]
        try:
            deadline = time.monotonic() + 10
            while bodies_in_flight(app) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            with connect(base) as connection:
                status, headers, body = post(connection, PNG, "image/png")
            assert status == 503 and body["error"] == "busy" and headers["retry-after"] == "1", body
        finally:
            for sock in holders:
                sock.close()
        while bodies_in_flight(app) and time.monotonic() < deadline:
            time.sleep(0.02)
        with connect(base) as connection:
            assert post(connection, PNG, "image/png")[0] == 200


def _run_guarded(app, messages: list[dict], delay_s: float, timeout_s: float = 0.2) -> list[dict]:
    """``app`` behind a BodyGuard, fed ``messages`` with ``delay_s`` before each → what it sent."""
    sent: list[dict] = []
    feed = iter(messages)

    async def receive() -> dict:
        await asyncio.sleep(delay_s)
        return next(feed, {"type": "http.disconnect"})

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", b"4")]}
    guard = BodyGuard(app, BodyLimits(timeout_s=timeout_s, max_in_flight=4, drain_max_bytes=MIB, drain_timeout_s=1))
    asyncio.run(guard(scope, receive, send))
    assert guard.in_flight == 0
    return sent


def test_whatever_the_app_makes_of_a_body_timeout_the_answer_is_408():
    async def swallowing_app(scope, receive, send):
        try:
            await receive()
        except Exception:  # noqa: BLE001 - an app that turns every error into its own 500
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b"oops"})

    sent = _run_guarded(swallowing_app, [{"type": "http.request", "body": b"abcd"}], delay_s=0.5)
    assert sent[0]["status"] == 408 and (b"connection", b"close") in sent[0]["headers"]
    assert b"body_timeout" in sent[1]["body"] and len(sent) == 2


def test_after_the_body_the_app_may_wait_for_the_disconnect_past_the_deadline():
    async def waiting_app(scope, receive, send):
        assert (await receive())["body"] == b"abcd"
        assert (await receive())["type"] == "http.disconnect"  # arrives after the body deadline: no timeout
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent = _run_guarded(waiting_app, [{"type": "http.request", "body": b"abcd"}], delay_s=0.15)
    assert sent[0]["status"] == 204 and sent[0]["headers"] == []
