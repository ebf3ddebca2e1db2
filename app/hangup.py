"""A search stops when its client hangs up: nobody reads the answer, so it is neither decoded nor encoded.

uvicorn does not cancel a handler whose client went away; once the body is read, the only message ASGI's
``receive`` still yields is ``http.disconnect``. :class:`ClientWatch` waits for it beside the request's work and
cancels that work when it comes: a request still queued for the encoder is dropped from its batch (the batcher
skips cancelled requests), one still queued for decoding is not decoded. The page aborts its older search each
time the drawing changes, so under load this is most of what a busy encoder would otherwise do for nobody.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from .errors import APIError

T = TypeVar("T")


class ClientWatch:
    """Watches a request whose body has been read for its client hanging up (``close`` when done)."""

    def __init__(self, request: Request) -> None:
        self._gone = asyncio.ensure_future(_hang_up(request))

    async def unless_gone(self, work: Awaitable[T]) -> T:
        """``work``'s result, or a 400 ``client_disconnected`` (``work`` cancelled) when the client hangs up."""
        task = asyncio.ensure_future(work)
        await asyncio.wait({task, self._gone}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        task.add_done_callback(_retrieve)  # a result that races the cancel is nobody's: no "never retrieved" log
        raise APIError(400, "client_disconnected", "The client disconnected before the answer was ready.")

    def close(self) -> None:
        self._gone.cancel()


async def _hang_up(request: Request) -> None:
    """Returns when the client hangs up; waits for ever where the server says something else."""
    if (await request.receive())["type"] != "http.disconnect":
        await asyncio.Event().wait()


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()
