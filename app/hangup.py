"""A search stops when its client hangs up: nobody reads the answer, so it is neither decoded nor encoded.

uvicorn does not cancel a handler whose client went away; once the body is read, the only message ASGI's
``receive`` still yields is ``http.disconnect``. :class:`ClientWatch` waits for it in one task beside the handler
and, when it comes, cancels the handler's task where it waits: a request queued for the encoder is then dropped
from its batch (the batcher skips cancelled requests), one queued for decoding is not decoded. The page aborts its
older search each time the drawing changes, so under load this is most of what a busy encoder would otherwise do
for nobody. (uvicorn's httptools parser tells only the newest request of a connection that the client left: a
search with another request pipelined behind it runs to the end.)
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from .errors import APIError


class ClientWatch:
    """Use around the awaits of a request whose body has been read::

        with ClientWatch(request) as watch:
            try:
                result = await work()
            except asyncio.CancelledError:
                watch.raise_if_gone()  # the 400 client_disconnected, when the hang-up cancelled it
                raise
    """

    def __init__(self, request: Request) -> None:
        self._handler = asyncio.current_task()
        self._closed = False
        self.gone = False
        self._watcher = asyncio.ensure_future(_hang_up(request))
        self._watcher.add_done_callback(self._hung_up)

    def _hung_up(self, watcher: asyncio.Task) -> None:
        if watcher.cancelled() or watcher.exception() is not None or self._closed:  # the exception is retrieved
            return  # closed, or receive() failed: not a hang-up
        self.gone = True
        if self._handler is not None:
            self._handler.cancel()  # where it waits, inside the watch: close() had not run yet

    def raise_if_gone(self) -> None:
        """Turn the cancellation this watch caused into a 400 (the handler's task is no longer cancelling)."""
        if self.gone and self._handler is not None and self._handler.uncancel() == 0:
            raise APIError(400, "client_disconnected", "The client disconnected before the answer was ready.")

    def close(self) -> None:
        self._closed = True
        self._watcher.cancel()

    def __enter__(self) -> ClientWatch:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


async def _hang_up(request: Request) -> None:
    """Returns when the client hangs up; waits for ever where the server says something else."""
    if (await request.receive())["type"] != "http.disconnect":
        await asyncio.Event().wait()
