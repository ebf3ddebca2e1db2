"""Request bodies under control: a read deadline, a bound on bodies read at once, a lingering drain.

Pure ASGI middleware (it wraps ``receive`` and ``send``), outermost in the app:

- **Deadline**: a request's whole body must arrive within ``timeout_s`` of its headers, however slowly
  it trickles; otherwise the answer is 408 and the connection closes.
- **Key first**: with API keys configured, a body comes only with a valid ``X-API-Key`` (every route that
  takes one needs it); a request without is answered 401 before it takes a slot.
- **Bound**: at most ``max_in_flight`` requests are reading a body at once (each at most the upload
  limit, so their memory is bounded), and, once half the slots are in use, at most ``max_per_client`` of
  them from one client (its API key when keys are set, else its source address), so one slow client cannot
  take every slot while a fast one from a single address is never refused on an idle service; one
  more is answered 503 with ``Retry-After``. A slot is freed as soon as its body is complete, or as
  soon as the answer starts without it (a refused body is drained without a slot), so neither slow
  searches nor refused uploads hold one.
- **Lingering drain**: a response that starts before the body has been read (413 on a declared
  Content-Length, 401, ...) first reads and discards the rest of the body, at most ``drain_max_bytes``
  within ``drain_timeout_s`` (and the body deadline), as nginx's lingering close does, then answers
  with ``Connection: close``.
  Closing a socket that still holds unread data makes the kernel reset it, and a client still sending
  (Python's http.client and urllib send the whole body before reading) loses the answer with it.
  Beyond the bounds the connection is closed regardless.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .access import Access
from .metrics import Metrics

RETRY_AFTER_S = 1


class BodyTimeoutError(Exception):
    """The body did not arrive within the deadline (raised from ``receive``; the middleware answers 408)."""


@dataclass(frozen=True)
class BodyLimits:
    timeout_s: float
    max_in_flight: int
    drain_max_bytes: int
    drain_timeout_s: float
    max_per_client: int | None = None  # None: only the overall bound


UNAUTHORIZED = b"A valid X-API-Key header is required."
BEYOND_ANY_LIMIT = 2**63  # a declared length of more digits than any body: compared, never converted whole


class BodyGuard:
    """The middleware; ``in_flight`` counts the requests reading a body now and ``per_client`` them by client
    (one event loop: plain counters). ``access``: the configured search keys (None: every body is welcome);
    ``admin``: the admin keys, whose bodies (uploads) are welcome too (a route refuses a key of the other set
    with 403 once the body is read)."""

    def __init__(self, app: ASGIApp, limits: BodyLimits, metrics: Metrics | None = None,
                 access: Access | None = None, admin: Access | None = None) -> None:
        self.app = app
        self.limits = limits
        self.metrics = metrics
        self.access = access
        self.admin = admin
        self.in_flight = 0
        self.per_client: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(self, scope, receive, send)
        if exchange.complete:  # no body: nothing to guard
            await self.app(scope, receive, send)
            return
        key = exchange.header(b"x-api-key")
        if not self._known(key):
            await exchange.drain()
            await exchange.refuse(401, "unauthorized", UNAUTHORIZED.decode(),
                                  [(b"www-authenticate", b"X-API-Key"), (b"cache-control", b"no-store")])
            return
        client = self._client(scope, key)
        crowded = self._over_fair_share(client)
        if crowded or self.in_flight >= self.limits.max_in_flight:
            await exchange.drain()
            whose = "from this client " if crowded else ""
            await exchange.refuse(503, "busy", f"Too many uploads {whose}in progress; retry shortly.",
                                  [(b"retry-after", str(RETRY_AFTER_S).encode())])
            return
        exchange.take_slot(client)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except BodyTimeoutError:
            if not exchange.answered:
                await exchange.refuse_timeout()
        finally:
            exchange.release_slot()

    def _over_fair_share(self, client: str) -> bool:
        """One client past ``max_per_client`` bodies while the slots are contended (half or more in use): a busy
        but fast client (a benchmark, a batch job behind one address) keeps the idle slots; a crowd cannot take
        the last half from the others."""
        cap = self.limits.max_per_client
        contended = self.in_flight * 2 >= self.limits.max_in_flight
        return cap is not None and contended and self.per_client[client] >= cap

    def _known(self, key: str | None) -> bool:
        """Whether a body sent with ``key`` may take a slot: any key when none is configured, else a key of
        either set."""
        if self.access is None or self.access.key_ok(key):
            return True
        return self.admin is not None and self.admin.required and self.admin.key_ok(key)

    def _client(self, scope: Scope, key: str | None) -> str:
        """Who holds a slot: the API key's id when keys are set (many clients may share an address behind a
        proxy), else the source address."""
        if self.access is not None and self.access.required and key is not None:
            return self.access.key_id(key)
        client = scope.get("client")
        return f"address {client[0]}" if client else "address unknown"

    def _count(self, client: str, delta: int) -> None:
        self.in_flight += delta
        self.per_client[client] += delta
        if self.per_client[client] <= 0:
            del self.per_client[client]
        if self.metrics is not None:
            self.metrics.bodies_in_flight.set(self.in_flight)


def declared_length(value: bytes | str) -> int | None:
    """A Content-Length header's value; None unless it is ASCII digits (str.isdigit takes '²'). Past 19 significant
    digits it is BEYOND_ANY_LIMIT: int() of thousands of digits raised ValueError (Python's 4300-digit cap)."""
    raw = value.encode("latin-1", "replace") if isinstance(value, str) else value
    digits = raw.strip()
    if not (digits.isascii() and digits.isdigit()):
        return None
    significant = digits.lstrip(b"0") or b"0"
    return int(significant) if len(significant) <= 19 else BEYOND_ANY_LIMIT


class _Exchange:
    """One request's body state between the server and the app."""

    def __init__(self, guard: BodyGuard, scope: Scope, receive: Receive, send: Send) -> None:
        self.guard, self.limits = guard, guard.limits
        self._receive, self._send = receive, send
        headers = {name.lower(): value for name, value in scope["headers"]}
        self._headers = headers
        self.declared = declared_length(headers.get(b"content-length", b""))
        self.expects_continue = headers.get(b"expect", b"").lower() == b"100-continue"
        self.complete = self.declared in (None, 0) and b"transfer-encoding" not in headers
        self.read = 0
        self.deadline = asyncio.get_running_loop().time() + self.limits.timeout_s
        self.timed_out = False
        self.answered = False  # a response has started (the app's, or one of ours)
        self.replaced = False  # the app's response is being dropped for ours
        self.slot: str | None = None  # the client whose slot this request holds

    def header(self, name: bytes) -> str | None:
        value = self._headers.get(name)
        return None if value is None else value.decode("latin-1")

    def take_slot(self, client: str) -> None:
        self.slot = client
        self.guard._count(client, +1)

    def release_slot(self) -> None:
        if self.slot is not None:
            client, self.slot = self.slot, None
            self.guard._count(client, -1)

    def _note(self, message: Message) -> None:
        if message["type"] == "http.request":
            self.read += len(message.get("body", b""))
            if message.get("more_body", False):
                return
        self.complete = True  # the last chunk, or the client left
        self.release_slot()

    async def receive(self) -> Message:
        if self.complete:  # afterwards the app may wait for http.disconnect as long as it likes
            return await self._receive()
        remaining = self.deadline - asyncio.get_running_loop().time()
        try:
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                message = await self._receive()
        except TimeoutError:
            self.timed_out = True
            raise BodyTimeoutError(f"the request body took longer than {self.limits.timeout_s:g} s") from None
        self._note(message)
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            if self.timed_out:  # whatever the app made of the timeout, the answer is 408
                self.replaced = True
                await self.refuse_timeout()
                return
            if not self.complete:  # the rest of the body is only discarded: it needs no slot
                self.release_slot()
                await self.drain()
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            self.answered = True
        elif self.replaced:
            return
        await self._send(message)

    async def drain(self) -> None:
        """Read and discard the rest of the body, within the drain bounds (size and time)."""
        if self.expects_continue and self.read == 0:
            return  # the client waits for "100 Continue" before sending: there is nothing to drain
        if self.declared is not None and self.declared - self.read > self.limits.drain_max_bytes:
            return
        start, loop = self.read, asyncio.get_running_loop()
        try:  # no body is read past its deadline, drained or not
            async with asyncio.timeout_at(min(loop.time() + self.limits.drain_timeout_s, self.deadline)):
                while not self.complete and self.read - start <= self.limits.drain_max_bytes:
                    self._note(await self._receive())
        except TimeoutError:
            pass

    async def refuse_timeout(self) -> None:
        await self.refuse(408, "body_timeout",
                          f"The request body did not arrive within {self.limits.timeout_s:g} seconds.")

    async def refuse(self, status: int, code: str, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        """Our own JSON error (the app's shape), then the connection closes."""
        self.answered = True
        body = json.dumps({"error": code, "detail": detail}).encode()
        await self._send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"), *headers]})
        await self._send({"type": "http.response.body", "body": body})
        if self.guard.metrics is not None:
            self.guard.metrics.errors.labels(code).inc()
