"""Strokes → raster: every supported format draws ink where the strokes are; bad strokes are refused."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from encoder import (
    StrokeFormatError,
    TooManyPointsError,
    iter_ndjson_drawings,
    parse_strokes,
    rasterize_strokes,
)
from encoder.errors import InputError
from encoder.strokes import strokes_from_object

# An "L": a vertical stroke down the left, then a horizontal stroke along the bottom.
L_SHAPE = [[(10, 10), (10, 200)], [(10, 200), (150, 200)]]


def quickdraw_simplified(shape=L_SHAPE) -> dict:
    return {"word": "thing", "drawing": [[[p[0] for p in s], [p[1] for p in s]] for s in shape]}


def quickdraw_raw(shape=L_SHAPE) -> dict:
    # Raw format: arbitrary coordinates (here scaled ×3.7 and shifted) and a time row.
    return {
        "drawing": [
            [[p[0] * 3.7 + 500 for p in s], [p[1] * 3.7 - 80 for p in s], [i * 16 for i in range(len(s))]]
            for s in shape
        ]
    }


def plain(shape=L_SHAPE) -> dict:
    return {"strokes": [[list(p) for p in s] for s in shape]}


def stroke3(shape=L_SHAPE) -> dict:
    """sketch-rnn's stroke-3: offsets from the previous point; 1 lifts the pen after a point."""
    rows, last = [], (0, 0)
    for stroke in shape:
        for index, (x, y) in enumerate(stroke):
            rows.append([x - last[0], y - last[1], int(index == len(stroke) - 1)])
            last = (x, y)
    return {"strokes": rows}


def stroke5(shape=L_SHAPE) -> dict:
    """stroke-5 [dx, dy, pen down, pen up, end], padded after the end as sketch-rnn's batches are."""
    rows = [[dx, dy, 1 - lifted, lifted, 0] for dx, dy, lifted in stroke3(shape)["strokes"]]
    rows[-1][2:] = [0, 0, 1]
    return {"strokes": rows + [[0, 0, 0, 0, 1]] * 3}


def ink_mask(image) -> np.ndarray:
    return np.asarray(image.convert("L")) < 128


@pytest.mark.parametrize("make", [quickdraw_simplified, quickdraw_raw, plain, stroke3, stroke5],
                         ids=["qd-simplified", "qd-raw", "plain", "stroke-3", "stroke-5"])
def test_every_format_draws_ink_where_the_strokes_are(make):
    image = rasterize_strokes(parse_strokes(json.dumps(make())), size=128)
    mask = ink_mask(image)
    assert image.size == (128, 128)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    # The L's box is 140 wide × 190 tall: fitted, it is taller than wide, centred horizontally.
    assert rows[-1] - rows[0] > cols[-1] - cols[0]
    left_column = mask[:, cols[0] : cols[0] + 4]
    bottom_row = mask[rows[-1] - 3 : rows[-1] + 1, :]
    assert left_column.sum(0).max() > 0.8 * (rows[-1] - rows[0]), "vertical stroke on the left"
    assert bottom_row.sum(1).max() > 0.8 * (cols[-1] - cols[0]), "horizontal stroke at the bottom"
    # No ink in the upper-right region, where the L has none.
    assert not mask[rows[0] : rows[0] + 20, cols[-1] - 20 : cols[-1]].any()


def test_the_formats_render_the_same_drawing():
    renders = [ink_mask(rasterize_strokes(parse_strokes(m()), size=96))
               for m in (quickdraw_simplified, plain, stroke3, stroke5)]
    raw = ink_mask(rasterize_strokes(parse_strokes(quickdraw_raw()), size=96))
    assert all((renders[0] != other).mean() == 0 for other in renders[1:])
    assert (renders[0] != raw).mean() < 0.01


def test_stroke3_keeps_its_strokes_apart_and_refuses_what_it_cannot_draw():
    assert [s.tolist() for s in parse_strokes(stroke3())] == [[[10, 10], [10, 200]], [[10, 200], [150, 200]]]
    refused = {
        "rows of two lengths": ([[1, 2, 0], [3, 4, 0, 1, 0]], StrokeFormatError),
        "offsets adding up past a float": ([[1e308, 0, 0], [1e308, 0, 1]], StrokeFormatError),
        "a boolean offset": ([[True, 2, 0], [1, 1, 1]], StrokeFormatError),
        "more rows than points allowed": ([[1, 1, 0]] * 101, TooManyPointsError),
    }
    for case, (rows, error) in refused.items():
        with pytest.raises(error):
            parse_strokes({"strokes": rows}, max_points=100)
            pytest.fail(case)


def test_ndjson_first_drawing_and_all_drawings(tmp_path):
    other = quickdraw_simplified([[(0, 0), (255, 255)]])
    text = json.dumps(quickdraw_simplified()) + "\n" + json.dumps(other) + "\n"
    assert len(parse_strokes(text.encode())) == 2  # the first drawing: two strokes
    path = tmp_path / "cats.ndjson"
    path.write_text(text)
    drawings = list(iter_ndjson_drawings(path))
    assert [len(d) for d in drawings] == [2, 1]


def test_line_width_is_configurable():
    strokes = parse_strokes(plain())
    thin = ink_mask(rasterize_strokes(strokes, size=128, line_width=1)).sum()
    thick = ink_mask(rasterize_strokes(strokes, size=128, line_width=6)).sum()
    assert thick > 3 * thin > 0


def test_lines_are_anti_aliased():
    gray = np.asarray(rasterize_strokes(parse_strokes({"strokes": [[[0, 0], [100, 37]]]}), size=128).convert("L"))
    assert ((gray > 30) & (gray < 225)).sum() > 20, "intermediate grey levels along a slanted line"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("", "empty"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"strokes": []}', "no strokes"),
        ('{"strokes": [[], []]}', "no points"),
        ('{"strokes": [[[1, 2], [3]]]}', "list of"),
        ('{"strokes": [[["a", 2], [3, 4]]]}', "only numbers"),
        ('{"strokes": [[[NaN, 2], [3, 4]]]}', "non-finite"),
        ('{"strokes": [[[Infinity, 2], [3, 4]]]}', "non-finite"),
        ('{"drawing": [[[1, 2, 3], [1, 2]]]}', "same length"),
        ('{"drawing": [[1, 2]]}', "same length"),
        ('{"strokes": [[[5, 5], [5, 5]]]}', "degenerate"),
        ('{"other": 1}', '"strokes" or "drawing"'),
    ],
)
def test_bad_strokes_are_refused_with_a_message(payload, message):
    with pytest.raises(StrokeFormatError, match=message):
        rasterize_strokes(parse_strokes(payload))


def test_point_limit_is_enforced_before_conversion():
    many = {"strokes": [[[i, i] for i in range(600)] for _ in range(10)]}
    with pytest.raises(TooManyPointsError, match="more than 5000 points"):
        parse_strokes(many, max_points=5000)
    assert len(parse_strokes(many, max_points=6000)) == 10


def test_strokes_become_a_model_input(tiny_encoder):
    tensor = tiny_encoder.preprocess.sketch_strokes(json.dumps(plain()))
    assert tensor.shape == (3, 64, 64)


@pytest.mark.parametrize("obj, said", [
    ({"strokes": "M 0 0 L 10 10"}, '"strokes" must be a list of strokes, [[x, y], ...] per stroke; got a string'),
    ({"drawing": {"x": [0, 1], "y": [0, 1]}}, '"drawing" must be a list of strokes, [[x, ...], [y, ...]] per stroke '
                                              "(QuickDraw); got an object"),
    ({"strokes": 7}, "got a number"),
])
def test_strokes_of_the_wrong_json_type_are_named_as_such(obj, said):
    with pytest.raises(StrokeFormatError, match=re.escape(said)):
        strokes_from_object(obj)


@pytest.mark.parametrize("obj", [{"strokes": [[[1e306, 0], [1e306, 1], [1e306, 2]]]},
                                 {"strokes": [[1e306, 0, 0], [0, 1, 0], [0, 1, 0]]},
                                 {"drawing": [[[1e306, 1e306], [0, 3]]]}])
def test_a_small_drawing_far_from_the_origin_draws_where_it_is(obj):
    """Scaling before moving to the origin overflowed to inf (a 500, or a blank canvas searched)."""
    mask = ink_mask(rasterize_strokes(parse_strokes(obj), size=64))
    assert mask.sum() > 100 and mask[:, 28:36].sum() > 0.9 * mask.sum()  # a vertical line in the middle


def test_a_bad_max_points_setting_is_one_error_naming_it_not_an_import_failure():
    """It was read at import: ``SBIR_MAX_STROKE_POINTS=abc`` stopped every command with a traceback."""
    import subprocess
    import sys

    env = {**os.environ, "SBIR_MAX_STROKE_POINTS": "abc"}
    imported = subprocess.run([sys.executable, "-c", "import encoder.strokes, app.settings"], env=env,
                              capture_output=True, text=True, timeout=120)
    assert imported.returncode == 0, imported.stderr
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SBIR_MAX_STROKE_POINTS", "abc")
        with pytest.raises(InputError, match="SBIR_MAX_STROKE_POINTS must be a whole number"):
            parse_strokes({"strokes": [[[0, 0], [1, 1]]]})
        patch.setenv("SBIR_MAX_STROKE_POINTS", "3")
        with pytest.raises(TooManyPointsError):
            parse_strokes({"strokes": [[[0, 0], [1, 1], [2, 2], [3, 3]]]})
