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
