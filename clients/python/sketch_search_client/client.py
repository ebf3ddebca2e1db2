"""`Client` (blocking) and `AsyncClient` (asyncio): the same operations (app.protocol builds and reads every
request), sent over httpx's sync or async transport."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from . import protocol
from .errors import InputError, ServiceUnreachableError, UnexpectedAnswerError
from .models import BuildStatus, SearchPage, ServiceInfo

if TYPE_CHECKING:
    from typing import Self, Unpack

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 60.0
# The most an answer may hold once decoded: a photo is the largest (the gallery's own file); a server that streams
# without end, or a compressed bomb, is cut off here instead of filling the memory.
DEFAULT_MAX_ANSWER_BYTES = 512 * 2**20
# Sockets take timeouts up to ~292 years; far beyond that Python raises OverflowError from inside httpx.
MAX_TIMEOUT_S = 365 * 24 * 3600


def _in_seconds(timeout: Any) -> bool:
    """A timeout given as a number of seconds (not one of httpx's own forms: Timeout, a tuple, None)."""
    return isinstance(timeout, int | float) and not isinstance(timeout, bool)


def _options(url: str, api_key: str | None, timeout: Any, headers: dict[str, str] | None,
             max_answer_bytes: int) -> dict[str, Any]:
    api_key = api_key.strip() if api_key else api_key  # a pasted key's surrounding spaces (the service strips them)
    if api_key and not (api_key.isascii() and api_key.isprintable()):
        # a header holds printable ASCII: the service never hands out other keys (a pasted key with a stray
        # character or a newline would otherwise fail deep inside httpx, or split the header)
        raise InputError("the API key must be printable ASCII characters (check for a pasted line break or quote)")
    if _in_seconds(timeout) and not 0 < timeout <= MAX_TIMEOUT_S:  # httpx's own forms are its to check
        raise InputError(f"the timeout is a number of seconds above 0 and at most {MAX_TIMEOUT_S:,} (a year; None "
                         f"waits for ever), not {timeout!r}")
    if isinstance(max_answer_bytes, bool) or not isinstance(max_answer_bytes, int) or max_answer_bytes < 1:
        raise InputError(f"max_answer_bytes is a whole number of bytes above 0, not {max_answer_bytes!r}")
    merged = {**(headers or {}), **({"X-API-Key": api_key} if api_key else {})}
    return {"base_url": url.rstrip("/"), "headers": merged, "timeout": timeout}


def shown_url(url: str) -> str:
    """``url`` without the user:password it may carry (error messages are printed and logged)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host))


@contextlib.contextmanager
def _talking_to(url: str, secrets: Sequence[str]) -> Iterator[None]:
    """httpx's errors as the client's: no answer → ServiceUnreachableError; an answer that could not be read (a
    corrupt compressed body, a redirect loop) → UnexpectedAnswerError. The messages name the URL without its
    credentials and never carry a header's value (the API key)."""
    try:
        yield
    except httpx.TransportError as error:
        raise ServiceUnreachableError(f"cannot reach the service at {shown_url(url)}: "
                                      f"{_redacted(error, url, secrets)}") from error
    except httpx.RequestError as error:
        raise UnexpectedAnswerError(0, "unexpected_answer", f"the answer of {shown_url(url)} could not be read: "
                                    f"{_redacted(error, url, secrets)}") from error


def _redacted(error: Exception, url: str, secrets: Sequence[str]) -> str:
    text = f"{type(error).__name__}: {error}"
    for secret in [url, *secrets]:
        if secret:
            text = text.replace(secret, shown_url(url) if secret == url else "***")
    return text


class _Budget:
    """What one call may spend: seconds in all (a numeric timeout bounds the whole call, not each step, so a server
    that drip-feeds its answer cannot hold it; httpx's own timeout forms stay per step) and bytes of answer."""

    def __init__(self, timeout: Any, max_bytes: int, url: str) -> None:
        self.seconds = float(timeout) if _in_seconds(timeout) else None
        self._ends = None if self.seconds is None else time.monotonic() + self.seconds
        self._max_bytes = max_bytes
        self._url = shown_url(url)
        self._read = 0

    def left(self) -> float | None:
        """Seconds left (None: no total bound); out of time raises ServiceUnreachableError."""
        if self._ends is None:
            return None
        left = self._ends - time.monotonic()
        if left <= 0:
            raise self.out_of_time()
        return left

    def out_of_time(self) -> ServiceUnreachableError:
        return ServiceUnreachableError(f"the service at {self._url} did not answer within the timeout "
                                       f"({self.seconds:g} s in all)")

    def took(self, chunk: bytes, status: int) -> None:
        self._read += len(chunk)
        if self._read > self._max_bytes:
            raise UnexpectedAnswerError(status, "unexpected_answer", f"the answer of {self._url} is larger than "
                                        f"max_answer_bytes ({self._max_bytes} bytes); it was cut off")
        self.left()


def _whole(response: httpx.Response, body: bytes) -> httpx.Response:
    """The streamed answer as one response holding its decoded body (so it is not decoded a second time)."""
    headers = [(name, value) for name, value in response.headers.multi_items()
               if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
    return httpx.Response(response.status_code, headers=headers, content=body, request=response.request,
                          extensions=response.extensions, history=response.history)  # reason phrase, HTTP version


def _secrets(options: dict[str, Any]) -> list[str]:
    """Header values not to repeat in messages (the API key, an Authorization header given in ``headers``)."""
    return [str(value) for value in options["headers"].values() if len(str(value)) >= 4]


class Client:
    """A blocking client: `Client(url, api_key=...)`, best used as a context manager (closes its connections).

    `search(sketch=..., text=..., like=..., category=..., k=..., offset=...)` → SearchPage; `photo(id)` /
    `thumbnail(id)` → bytes; `info()` → ServiceInfo; `ready()` → bool. Refusals raise ServiceError (with the
    service's `code`); no answer raises ServiceUnreachableError. An admin key gives `upload_photos`,
    `start_build` and `build_status`.
    """

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S,
                 headers: dict[str, str] | None = None, transport: httpx.BaseTransport | None = None,
                 max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES) -> None:
        self.url = url
        options = _options(url, api_key, timeout, headers, max_answer_bytes)
        self._timeout, self._max_bytes = timeout, max_answer_bytes
        self._secrets = _secrets(options)
        self._http = httpx.Client(**options, transport=transport)

    def _call(self, call: protocol.Call[T]) -> T:
        # Blocking sockets cannot be interrupted from here: every wait is cut to the time left when the call
        # starts, and the budget is checked after each part of the answer's body (a server that drips its headers,
        # or reads an upload slowly, can hold the call longer: AsyncClient's bound is exact).
        budget = _Budget(self._timeout, self._max_bytes, self.url)
        left = budget.left()
        with _talking_to(self.url, self._secrets):
            request = self._http.build_request(call.method, call.path, **call.request,
                                               **({} if left is None else {"timeout": left}))
            with contextlib.closing(self._http.send(request, stream=True)) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    budget.took(chunk, response.status_code)
                    body += chunk
        return call.read(_whole(response, bytes(body)))

    def search(self, **query: Unpack[protocol.SearchArgs]) -> SearchPage:
        return self._call(protocol.search(**query))

    def photo(self, photo_id: int) -> bytes:
        return self._call(protocol.photo(photo_id))

    def thumbnail(self, photo_id: int, size: int = protocol.DEFAULT_THUMBNAIL) -> bytes:
        return self._call(protocol.photo(photo_id, size))

    def info(self) -> ServiceInfo:
        return self._call(protocol.info())

    def ready(self) -> bool:
        return self._call(protocol.ready())

    def upload_photos(self, photos: Sequence[str | os.PathLike | bytes]) -> list[dict[str, Any]]:
        return self._call(protocol.upload_photos(photos))

    def start_build(self) -> str:
        return self._call(protocol.start_build())

    def build_status(self, build_id: str) -> BuildStatus:
        return self._call(protocol.build_status(build_id))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncClient:
    """The asyncio twin of `Client`: the same methods, awaited (`async with AsyncClient(url) as client`)."""

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S,
                 headers: dict[str, str] | None = None, transport: httpx.AsyncBaseTransport | None = None,
                 max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES) -> None:
        self.url = url
        options = _options(url, api_key, timeout, headers, max_answer_bytes)
        self._timeout, self._max_bytes = timeout, max_answer_bytes
        self._secrets = _secrets(options)
        self._http = httpx.AsyncClient(**options, transport=transport)

    async def _call(self, call: protocol.Call[T]) -> T:
        budget = _Budget(self._timeout, self._max_bytes, self.url)
        deadline = asyncio.timeout(budget.left())  # exact here: the whole call is cancelled at the deadline
        try:
            async with deadline:
                with _talking_to(self.url, self._secrets):
                    request = self._http.build_request(call.method, call.path, **call.request)
                    async with contextlib.aclosing(await self._http.send(request, stream=True)) as response:
                        body = bytearray()
                        async for chunk in response.aiter_bytes():
                            budget.took(chunk, response.status_code)
                            body += chunk
        except TimeoutError:
            if not deadline.expired():  # some other TimeoutError: not this call's deadline
                raise
            raise budget.out_of_time() from None
        return call.read(_whole(response, bytes(body)))

    async def search(self, **query: Unpack[protocol.SearchArgs]) -> SearchPage:
        return await self._call(protocol.search(**query))

    async def photo(self, photo_id: int) -> bytes:
        return await self._call(protocol.photo(photo_id))

    async def thumbnail(self, photo_id: int, size: int = protocol.DEFAULT_THUMBNAIL) -> bytes:
        return await self._call(protocol.photo(photo_id, size))

    async def info(self) -> ServiceInfo:
        return await self._call(protocol.info())

    async def ready(self) -> bool:
        return await self._call(protocol.ready())

    async def upload_photos(self, photos: Sequence[str | os.PathLike | bytes]) -> list[dict[str, Any]]:
        return await self._call(protocol.upload_photos(photos))

    async def start_build(self) -> str:
        return await self._call(protocol.start_build())

    async def build_status(self, build_id: str) -> BuildStatus:
        return await self._call(protocol.build_status(build_id))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
