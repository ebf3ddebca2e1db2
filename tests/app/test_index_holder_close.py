"""Shutting down while a poll opens a new version: the poll's reader is not served (nor left open) after close()."""

from __future__ import annotations

import asyncio
import contextlib
import time

from app.index_holder import IndexHolder
from photo_index import open_source
from tests.app.support import build_index, make_gallery


def test_a_poll_still_opening_a_version_at_shutdown_serves_nothing_after_close(tmp_path, app_encoder):
    build_index(make_gallery(tmp_path / "gallery"), tmp_path / "index", app_encoder)
    source = open_source(tmp_path / "index")
    holder = IndexHolder(source, fingerprint=app_encoder.fingerprint(), dim=app_encoder.embed_dim)
    assert holder.refresh()
    build_index(make_gallery(tmp_path / "gallery", per_category=5, seed=7), tmp_path / "index", app_encoder)
    opened = []
    real_open = source.open

    def slow_open(*args, **kwargs):  # the new version takes a while to open, in the poller's worker thread
        time.sleep(0.6)
        opened.append(real_open(*args, **kwargs))
        return opened[-1]

    source.open = slow_open

    async def shut_down_mid_poll():
        poller = asyncio.create_task(holder.poll_forever(0.05))
        await asyncio.sleep(0.25)
        poller.cancel()  # as the app's lifespan does: the worker thread goes on
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        await asyncio.to_thread(holder.close)
        await asyncio.sleep(1.0)

    asyncio.run(shut_down_mid_poll())
    # before: ready again 1 s after close(), serving a reader opened from a closed source
    assert not holder.ready and holder.version is None and holder.reason == "The service is shutting down."


def test_a_retired_reader_whose_last_lease_ends_on_the_event_loop_closes_in_another_thread(tmp_path, app_encoder):
    """/readyz and /info lease on the loop: the last one closed the retired reader there, stalling every request."""
    import threading

    build_index(make_gallery(tmp_path / "gallery"), tmp_path / "index", app_encoder)
    holder = IndexHolder(open_source(tmp_path / "index"), fingerprint=app_encoder.fingerprint(),
                         dim=app_encoder.embed_dim)
    assert holder.refresh()
    closed_in = []

    async def lease_across_a_swap():
        with holder.lease() as reader:
            real_close = reader.close
            reader.close = lambda: (closed_in.append(threading.current_thread()), real_close())
            await asyncio.to_thread(holder._retire, None)  # a swap while this request holds the reader
            assert not closed_in
        for _ in range(100):
            if closed_in:
                break
            await asyncio.sleep(0.01)

    asyncio.run(lease_across_a_swap())
    assert closed_in and closed_in[0] is not threading.main_thread()
