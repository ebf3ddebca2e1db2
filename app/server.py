"""The HTTP server around the app: uvicorn's HTTP/1.1 protocol plus what uvicorn lacks, and its options from the
settings. Either parser: httptools (C, less event-loop CPU per request) where installed, else the pure-Python h11
(``SBIR_HTTP_PARSER``); both get the same guard (:class:`_HeadGuard`).

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but that timer is armed only
after a response; a connection that never sends a byte, or sends half a request head and then stalls,
is held for ever (and each one counts against ``limit_concurrency``). The guard adds
the **header timeout**: a connection must deliver a complete request head within ``header_timeout_s``
of its first byte (or of being opened); otherwise it is closed.

It also answers a request head that the parser refuses in the API's JSON error shape instead of uvicorn's
plain-text 400: an over-long head that is mostly its request line is a 414 (a long query string), other over-long
heads a 431, anything else a 400. The client may still be sending its huge head when the answer goes
out; the rest is read and discarded for a short while (a lingering close), since closing a socket that
holds unread data resets it and the client would lose the answer.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

try:  # the C parser (uvicorn[standard]); the pure-Python h11 stands in where it is missing
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - depends on the environment
    HttpToolsProtocol = None

from .metrics import Metrics
from .settings import Settings

LINGER_S = 2.0  # longest a refused head's connection is read and discarded before it closes
LINGER_MAX_BYTES = 4 * 1024 * 1024


class _HeadGuard:
    """The header timeout and JSON answers to unreadable heads, for either of uvicorn's HTTP/1.1 protocols.

    The parser-specific part is `_in_head()` (the connection is between requests or inside a request head) and
    calling `_head_complete()` once the parser has a whole head."""

    header_timeout_s: float = 10.0
    metrics: Metrics | None = None  # the app's, to count refused heads with its other errors
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    config: Any

    @classmethod
    def configured(cls, header_timeout_s: float, metrics: Metrics | None = None) -> type:
        """This protocol with its header timeout and metrics (uvicorn builds protocols from a class)."""
        return type(cls.__name__, (cls,), {"header_timeout_s": header_timeout_s, "metrics": metrics})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # bytes of the request head received so far
        self._line_bytes: int | None = None  # its request line's length, once complete
        self._head_tail = b""  # the last bytes of the head so far
        self._linger_left: int | None = None  # set while discarding after a refused head
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def _in_head(self) -> bool:
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        if self._linger_left is not None:
            self._linger_left -= len(data)
            if self._linger_left <= 0:
                self.transport.close()
            return
        if self._in_head():  # (part of) a request head, perhaps followed by its body
            joined = self._head_tail + data
            end = _head_end(joined)
            head = data if end < 0 else data[:max(end - len(self._head_tail), 0)]
            if self._line_bytes is None and (newline := head.find(b"\n")) >= 0:
                self._line_bytes = self._head_bytes + newline
            self._head_bytes += len(head)
            self._head_tail = joined[-3:]  # a terminator may straddle two reads
            if self._head_bytes > self._head_limit():  # neither parser refuses a long head that arrives in one read
                self._refuse_head()
                return
            if self._head_timer is None:  # a keep-alive connection starts its next request
                self._start_head_timer()
        super().data_received(data)  # type: ignore[misc]

    def _head_complete(self) -> None:
        """The parser has the whole head (or refused it): its clock stops."""
        self._stop_head_timer()
        self._head_bytes, self._line_bytes, self._head_tail = 0, None, b""

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head() and not self.transport.is_closing():
            self.transport.close()

    def _head_limit(self) -> int:
        """h11's limit on a request head (16 KiB unless uvicorn's `h11_max_incomplete_event_size` says), for both
        parsers: httptools has none of its own."""
        return getattr(self.config, "h11_max_incomplete_event_size", None) or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE

    def send_400_response(self, msg: str) -> None:
        """The parser refused the request head: the API's JSON error instead of uvicorn's plain text."""
        self._refuse_head()

    def _refuse_head(self) -> None:
        """Answer an unreadable head in JSON (414, 431 or 400), then close after a short linger."""
        limit = self._head_limit()
        line = self._head_bytes if self._line_bytes is None else self._line_bytes
        if self._head_bytes > limit and line * 2 > self._head_bytes:  # the URL is most of what is too long
            status, code = 414, "uri_too_long"
            detail = f"The URL (path and query string) is longer than {limit:,} bytes; send long fields in the body."
        elif self._head_bytes > limit:
            status, code = 431, "headers_too_large"
            detail = f"The request headers are larger than {limit:,} bytes."
        else:
            status, code, detail = 400, "bad_request", "The request is not valid HTTP/1.1."
        if self.metrics is not None:
            self.metrics.errors.labels(code).inc()
        body = json.dumps({"error": code, "detail": detail}).encode()
        # written by hand: the parser may be in any state here, and the connection is done with HTTP
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, STATUS_PHRASES[status], len(body)) + body)
        self._stop_head_timer()
        self._linger_left = LINGER_MAX_BYTES
        self.loop.call_later(LINGER_S, self.transport.close)
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client reads the answer, then closes its side


class GuardedH11Protocol(_HeadGuard, H11Protocol):
    """uvicorn's h11 protocol (pure Python) with a header timeout and JSON answers to unreadable heads."""

    def _in_head(self) -> bool:
        return self.conn.their_state is h11.IDLE

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._linger_left is None and not self._in_head():
            self._head_complete()


PROTOCOLS: dict[str, type[_HeadGuard]] = {"h11": GuardedH11Protocol}

if HttpToolsProtocol is not None:
    class GuardedHttpToolsProtocol(_HeadGuard, HttpToolsProtocol):
        """uvicorn's httptools protocol (llhttp, in C) with the same header timeout and JSON answers."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._reading_head = True  # between requests or inside a head; false from its end to the message's
            super().connection_made(transport)

        def _in_head(self) -> bool:
            return self._reading_head

        def on_headers_complete(self) -> None:
            self._reading_head = False
            self._head_complete()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._reading_head = True  # the next bytes start the next request's head
            super().on_message_complete()

    PROTOCOLS["httptools"] = GuardedHttpToolsProtocol


def http_protocol(parser: str = "auto") -> type[_HeadGuard]:
    """The guarded protocol class for `parser` (h11, httptools, or auto: httptools where it is installed)."""
    if parser == "auto":
        parser = "httptools" if "httptools" in PROTOCOLS else "h11"
    if parser not in PROTOCOLS:
        raise ValueError(f"HTTP parser {parser!r} is not available here; one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[parser]


def _head_end(data: bytes) -> int:
    """Where the request head in `data` ends (after its blank line; h11 also takes bare LFs), or -1."""
    ends = [at + len(mark) for mark in (b"\r\n\r\n", b"\n\n") if (at := data.find(mark)) >= 0]
    return min(ends, default=-1)


def server_options(settings: Settings, metrics: Metrics | None = None) -> dict[str, Any]:
    """uvicorn's options for the service (besides host, port and logging): the protocol and its limits;
    ``metrics`` (the app's) count the heads the protocol refuses."""
    return {
        "http": http_protocol(settings.http_parser).configured(settings.header_timeout_s, metrics),
        "limit_concurrency": settings.limit_concurrency,
        "timeout_keep_alive": settings.timeout_keep_alive_s,
    }
