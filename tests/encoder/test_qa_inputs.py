"""Acceptance-run regressions of the encoder's input handling: bombs, transparent light ink, ndjson, extremes."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from encoder import decode_image, load_drawing_json, normalise_sketch, parse_strokes, rasterize_strokes
from encoder.errors import ImageTooLargeError, StrokeFormatError
from encoder.imaging import _flatten_lighting, to_rgb
from tests.imagegen import draw_sketch, png_declaring


def test_a_bomb_past_pillows_own_guard_names_our_limit_not_pillows():
    with pytest.raises(ImageTooLargeError) as caught:
        decode_image(png_declaring(100_000, 100_000), max_pixels=1_000_000)
    assert "1,000,000" in str(caught.value) and "178956970" not in str(caught.value)


def test_light_ink_on_a_transparent_background_is_found():
    ink = np.asarray(draw_sketch().convert("L")) < 128
    rgba = np.zeros((*ink.shape, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white strokes ...
    rgba[..., 3] = np.where(ink, 255, 0)  # ... on a fully transparent canvas
    out = np.asarray(normalise_sketch(Image.fromarray(rgba, "RGBA"), 64).convert("L"))
    assert (out < 128).mean() > 0.01 and out[0, 0] == 255  # dark ink on white paper


def test_dark_ink_on_transparent_is_unchanged_and_blank_transparency_is_still_blank():
    ink = np.asarray(draw_sketch().convert("L")) < 128
    rgba = np.zeros((*ink.shape, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(ink, 255, 0)
    assert (np.asarray(normalise_sketch(Image.fromarray(rgba, "RGBA"), 64).convert("L")) < 128).mean() > 0.01
    buffer = io.BytesIO()
    Image.new("RGBA", (50, 50), (0, 0, 0, 0)).save(buffer, "PNG")
    with pytest.raises(ValueError, match="blank"):
        normalise_sketch(decode_image(buffer.getvalue()), 64)


def test_ndjson_with_several_drawings_uses_the_first():
    first = '{"word": "cat", "drawing": [[[0, 50, 90], [0, 80, 10]]]}'
    assert load_drawing_json((first + "\n" + '{"drawing": [[[1], [2]]]}\n').encode())["word"] == "cat"
    assert len(parse_strokes(first + "\n{broken")) == 1
    assert load_drawing_json(b"\xef\xbb\xbf" + first.encode())["word"] == "cat"  # UTF-8 BOM
    assert load_drawing_json(first.encode("utf-16"))["word"] == "cat"  # json.loads accepts UTF-16/32 too
    assert load_drawing_json(first.encode("utf-32-le"))["word"] == "cat"


@pytest.mark.parametrize(("data", "words"), [
    (b"\xff\xfe\x00", "UTF-8"), (b"[" * 100_000, "nested"), (b"  ", "empty"), (b'{"a": 1} {', "Extra data"),
])
def test_unreadable_strokes_json_is_a_stroke_format_error(data, words):
    with pytest.raises(StrokeFormatError, match=words):
        parse_strokes(data)


@pytest.mark.parametrize("points", [[[-1e308, -1e308], [1e308, 1e308]], [[0, 0], [5e-324, 0]]])
def test_coordinates_too_far_apart_or_too_close_are_refused_with_a_clear_message(points):
    with pytest.raises(StrokeFormatError, match="too large or too small"):
        rasterize_strokes(parse_strokes({"strokes": [points]}), size=64)


def test_a_huge_but_finite_drawing_still_renders():
    image = rasterize_strokes(parse_strokes({"strokes": [[[1e300, 0], [1e308, 1e308]]]}), size=64)
    assert (np.asarray(image.convert("L")) < 128).any()


def test_a_long_thin_stroke_image_does_not_blow_up_into_a_huge_square():
    """5x400,000 px is 2 MP (under any pixel limit); padding its ink box square first meant a 400,000² canvas."""
    gray = np.full((5, 400_000), 255, dtype=np.uint8)
    gray[2] = 0
    tracemalloc.start()
    try:
        out = normalise_sketch(Image.fromarray(gray), 64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    ink_columns = (np.asarray(out.convert("L")) < 128).any(axis=0)
    assert ink_columns.sum() > 50  # the stroke spans the width of the output


def test_a_photo_of_a_sketch_under_uneven_light_comes_out_on_white_paper():
    """Paper lit from one side (grey 140 → 235) used to leave a grey wash over the dark half."""
    ink = np.asarray(draw_sketch((400, 400)).convert("L")) < 128
    light = np.linspace(140, 235, ink.shape[1], dtype=np.float32)[None, :].repeat(ink.shape[0], axis=0)
    noise = np.random.default_rng(0).normal(0, 4, ink.shape)
    photo = np.clip(np.where(ink, 50.0, light) + noise, 0, 255).astype(np.uint8)
    out = np.asarray(normalise_sketch(Image.fromarray(photo), 64).convert("L"))
    left, right = out[:, :16], out[:, -16:]
    assert np.median(left) > 235 and np.median(right) > 235  # white paper on both sides, no grey half
    assert (out < 100).mean() > 0.01  # the strokes are still there


def test_evenly_lit_sketches_are_untouched_by_the_lighting_correction():
    sketch = draw_sketch((300, 300))
    gray = np.asarray(sketch.convert("L"), dtype=np.float32)
    assert _flatten_lighting(gray) is gray


@pytest.mark.parametrize("mode", ["I;16", "F", "RGBA"])
def test_photos_of_any_depth_or_with_transparency_become_the_same_rgb(mode):
    """convert("RGB") clipped 16-bit photos to white, float 0..1 ones to black and showed transparency as black."""
    grey = np.asarray(draw_sketch((80, 60)).convert("L"))
    if mode == "I;16":
        image = Image.fromarray(grey.astype(np.uint16) * 257)
    elif mode == "F":
        image = Image.fromarray(grey.astype(np.float32) / 255.0, mode="F")
    else:
        rgba = np.zeros((*grey.shape, 4), dtype=np.uint8)
        rgba[..., 3] = 255 - grey  # black ink, transparent paper
        image = Image.fromarray(rgba, "RGBA")
    rgb = np.asarray(to_rgb(image).convert("L")).astype(int)
    assert np.abs(rgb - grey).max() <= 2
