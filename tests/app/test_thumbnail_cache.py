"""The thumbnail cache counts each thumbnail once, however many requests rendered it at the same time."""

from __future__ import annotations

import threading

from PIL import Image

from app.photos import ThumbnailCache


def test_thumbnails_rendered_at_once_are_counted_once(tmp_path, monkeypatch):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(photo)
    cache = ThumbnailCache(max_bytes=4000, max_pixels=10_000_000)
    render = cache._render
    both_rendering = threading.Barrier(4)

    def slow_render(path, size):  # every thread renders before any stores: the race, every time
        data = render(path, size)
        both_rendering.wait(timeout=10)
        return data

    monkeypatch.setattr(cache, "_render", slow_render)
    threads = [threading.Thread(target=cache.get, args=("same", photo, 32)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache._items) == 1 and cache._bytes == len(cache._items["same", 32])

    monkeypatch.setattr(cache, "_render", render)
    cache.get("other", photo, 32)  # before the fix the drifted count evicted every new thumbnail at once
    assert ("other", 32) in cache._items and cache._bytes == sum(map(len, cache._items.values()))


def test_a_grey_photo_with_a_colour_key_is_shown_on_white_as_it_is_embedded(tmp_path):
    """An L-mode PNG's transparent grey was left as it is: black where the embedding saw white."""
    import io

    import numpy as np

    photo = tmp_path / "keyed.png"
    grey = Image.new("L", (64, 48), 0)
    grey.paste(200, (0, 20, 64, 28))
    grey.save(photo, transparency=0)
    shown = Image.open(io.BytesIO(ThumbnailCache(max_bytes=10**6, max_pixels=10**7).get("k", photo, 32)))
    assert np.asarray(shown.convert("L")).mean() > 200
