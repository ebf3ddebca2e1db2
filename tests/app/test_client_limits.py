"""What one client call may spend: a numeric `timeout` bounds the whole call (a server that drip-feeds its answer
cannot hold it), and `max_answer_bytes` cuts off an answer that never ends or a compressed bomb."""

from __future__ import annotations

import asyncio
import gzip
import http.server
import threading
import time

import httpx
import pytest
from sketch_search_client import (
    AsyncClient,
    Client,
    InputError,
    ServiceError,
    ServiceUnreachableError,
    UnexpectedAnswerError,
)

from tests.app.support import loopback_http


@pytest.fixture()
def endless_server():
    """A loopback server whose 200 answers never end: `/drip` sends a byte every 0.1 s (each read waits far less than
    any timeout), `/flood` sends 64 KB chunks as fast as it can. Both stop when the client goes."""
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802 - http.server's name
            short = "/short" in self.path  # 15 bytes over 1.5 s, then the end
            self.send_response(200)
            self.send_header("Content-Type", "image/png" if short else "application/json")
            self.send_header("Content-Length", str(15 if short else 10**12))
            self.end_headers()
            piece, pause = (b" ", 0.1) if self.path.startswith(("/drip", "/short")) else (b" " * 65536, 0)
            try:
                for _ in range(15) if short else iter(int, 1):
                    if stop.is_set():
                        break
                    self.wfile.write(piece)
                    self.wfile.flush()
                    time.sleep(pause)
            except OSError:  # the client hung up: what it should do
                pass

        def log_message(self, *args):
            pass

    try:
        with loopback_http(Handler) as url:
            yield url
    finally:
        stop.set()


def _timed(call):
    started = time.monotonic()
    with pytest.raises(ServiceUnreachableError, match=r"did not answer within the timeout \(1 s in all\)"):
        call()
    return time.monotonic() - started


def test_a_drip_fed_answer_ends_at_the_timeout_in_all(endless_server):
    """Each byte came within the per-step timeout, so the call used to run as long as the server liked."""
    # /drip: a byte every 0.1 s (at the root the server floods, and a fast box passed max_answer_bytes within 1 s)
    with Client(endless_server + "/drip", timeout=1) as client:
        assert _timed(lambda: client.photo(1)) < 2.5  # the blocking client checks after each part of the answer

    async def run():
        async with AsyncClient(endless_server + "/drip", timeout=1) as client:
            await client.photo(1)

    assert _timed(lambda: asyncio.run(run())) < 1.8  # the async call is cancelled at the deadline itself


def test_an_answer_without_end_is_cut_off_at_max_answer_bytes(endless_server):
    with Client(endless_server, timeout=30, max_answer_bytes=2**20) as client, \
            pytest.raises(UnexpectedAnswerError, match=r"larger than max_answer_bytes \(1048576 bytes\)"):
        client.info()

    async def run():
        async with AsyncClient(endless_server, timeout=30, max_answer_bytes=2**20) as client:
            await client.info()

    with pytest.raises(UnexpectedAnswerError, match="max_answer_bytes"):
        asyncio.run(run())


def test_a_compressed_bomb_is_measured_decoded():
    bomb = gzip.compress(b" " * 64 * 2**20)  # 64 MB of spaces in ~64 KB
    transport = httpx.MockTransport(lambda request: httpx.Response(
        200, headers={"content-encoding": "gzip", "content-type": "application/json"}, content=bomb))
    with Client("http://sketch.test", transport=transport, max_answer_bytes=2**20) as client, \
            pytest.raises(UnexpectedAnswerError, match="max_answer_bytes"):
        client.info()


def test_answers_within_the_limits_read_as_before_and_compressed_ones_are_decoded_once():
    page = (b'{"results": [{"id": 4, "score": 0.5, "path": "cat/a.jpg", "url": "/photos/4", "thumbnail_url": '
            b'"/photos/4?size=256", "category": "cat"}], "k": 1, "query": "text", "index_version": "v1"}')
    transport = httpx.MockTransport(lambda request: httpx.Response(
        200, headers={"content-encoding": "gzip", "content-type": "application/json"}, content=gzip.compress(page)))
    with Client("http://sketch.test", transport=transport, max_answer_bytes=len(page)) as client:
        assert [result.id for result in client.search(text="a cat").results] == [4]


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "1000"])
def test_max_answer_bytes_is_a_whole_number_above_0(bad):
    with pytest.raises(InputError, match="max_answer_bytes"):
        Client("http://sketch.test", max_answer_bytes=bad)


def test_httpx_timeout_forms_stay_per_step(endless_server):
    """An httpx.Timeout (or None) is httpx's own per-step setting: no total bound is added to it."""
    with Client(endless_server + "/short", timeout=httpx.Timeout(1.0)) as client:
        assert client.photo(1) == b" " * 15  # 1.5 s in all, each byte within the second
    with Client(endless_server + "/short", timeout=1.0) as client, pytest.raises(ServiceUnreachableError):
        client.photo(1)


def test_a_refusal_keeps_the_reason_phrase_it_came_with():
    """Rebuilt from the streamed body, the answer lost its extensions: an empty 520's reason became ''."""
    transport = httpx.MockTransport(lambda request: httpx.Response(
        520, content=b"", extensions={"reason_phrase": b"Origin Is Unreachable"}))
    with Client("http://sketch.test", transport=transport) as client, \
            pytest.raises(ServiceError, match="520 http_520: Origin Is Unreachable"):
        client.info()
