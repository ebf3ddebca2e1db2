"""Vector strokes → raster sketch.

Accepted formats (each parsed into a list of ``[N, 2]`` float arrays, one per stroke):

* QuickDraw ndjson, simplified: ``{"drawing": [[[x0, x1, ...], [y0, y1, ...]], ...]}`` (0–255 box);
* QuickDraw ndjson, raw: ``{"drawing": [[[x...], [y...], [t...]], ...]}`` (any coordinates, times ignored);
* plain JSON, what the web page sends: ``{"strokes": [[[x, y], [x, y], ...], ...]}``;
* sketch-rnn's offsets (stroke-3 ``{"strokes": [[dx, dy, pen_lifted], ...]}``, or stroke-5 ``[dx, dy, p1, p2, p3]``,
  the form of QuickDraw's ``.npz`` data): rows of numbers, not lists of points, so the two cannot be confused;
* an SVG drawing (bytes or text): its visible lines, curves sampled (:mod:`encoder.svg_strokes`).

A bytes/str argument may hold one JSON object or ndjson (first drawing is used by
:func:`parse_strokes`; :func:`iter_ndjson_drawings` walks all of them). Rendering is anti-aliased
by supersampling; the drawing is scaled to fit the canvas with its aspect ratio kept.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .config import env_number
from .errors import InputError, StrokeFormatError, TooManyPointsError
from .svg_strokes import looks_like_svg, strokes_from_svg

DEFAULT_MAX_POINTS = 20_000  # unless SBIR_MAX_STROKE_POINTS says otherwise (default_max_points)
ENV_MAX_POINTS = "SBIR_MAX_STROKE_POINTS"
DEFAULT_MAX_STROKES = 2000
SUPERSAMPLE = 4
Strokes = list[np.ndarray]


def default_max_points() -> int:
    """The most points in a drawing: ``SBIR_MAX_STROKE_POINTS`` or 20,000. Read when used (a bad value was a
    traceback at import that stopped every command)."""
    return env_number(ENV_MAX_POINTS, DEFAULT_MAX_POINTS, minimum=1, what="a whole number of points",
                      error=InputError)


def _points_limit(max_points: int | None) -> int:
    return default_max_points() if max_points is None else max_points


def _as_float_array(values: Any, what: str) -> np.ndarray:
    # numpy would read true/false and numeric strings as numbers: a coordinate must be a JSON number
    if any(isinstance(v, bool) or not isinstance(v, int | float | np.number) for row in values for v in row):
        raise StrokeFormatError(f"{what} must hold only numbers (not true/false, strings or null).")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as error:  # OverflowError: an integer too big for a float
        raise StrokeFormatError(f"{what} must hold only numbers.") from error
    if not np.isfinite(array).all():
        raise StrokeFormatError(f"{what} holds a non-finite coordinate (NaN or infinity).")
    return array


def _quickdraw_stroke(stroke: Any, index: int) -> np.ndarray:
    if not isinstance(stroke, list) or len(stroke) not in (2, 3):
        raise StrokeFormatError(f"QuickDraw stroke {index} must be [[x...], [y...]] or [[x...], [y...], [t...]].")
    xs, ys = stroke[0], stroke[1]
    if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys):
        raise StrokeFormatError(f"QuickDraw stroke {index}: x and y lists must have the same length.")
    return _as_float_array([xs, ys], f"QuickDraw stroke {index}").T.reshape(-1, 2)


def _plain_stroke(stroke: Any, index: int) -> np.ndarray:
    if not isinstance(stroke, list):
        raise StrokeFormatError(f"Stroke {index} must be a list of [x, y] points.")
    if not stroke:
        return np.empty((0, 2))
    if not all(isinstance(p, list | tuple) and len(p) >= 2 for p in stroke):
        raise StrokeFormatError(f"Stroke {index} must be a list of [x, y] points.")
    return _as_float_array([[p[0], p[1]] for p in stroke], f"Stroke {index}").reshape(-1, 2)


def _declared_points(stroke: Any, quickdraw: bool) -> int:
    if not isinstance(stroke, list) or not stroke:
        return 0
    if quickdraw:
        return len(stroke[0]) if isinstance(stroke[0], list) else 0
    return len(stroke)


def _is_offset_sequence(raw: Any) -> bool:
    """sketch-rnn's stroke-3/stroke-5: a list of rows of 3 or 5 numbers (plain strokes are lists of point lists)."""
    return isinstance(raw, list) and bool(raw) and all(
        isinstance(row, list) and len(row) in (3, 5) and all(isinstance(v, int | float) for v in row) for row in raw)


def _offset_strokes(rows: list, max_points: int) -> Strokes:
    """stroke-3 ``[dx, dy, p]`` (p = 1: the pen lifts after this point) or stroke-5 ``[dx, dy, p1, p2, p3]``
    (p2: the pen lifts, p3: the sketch ends; rows after it are padding) → absolute strokes."""
    if len(rows) > max_points:
        raise TooManyPointsError(f"The drawing has more than {max_points} points (the limit).")
    if len({len(row) for row in rows}) > 1:
        raise StrokeFormatError("A stroke-3/stroke-5 sequence needs rows of one length: [dx, dy, p] or "
                                "[dx, dy, p1, p2, p3].")
    table = _as_float_array(rows, "The stroke-3/stroke-5 sequence")
    if table.shape[1] == 5:
        ends = np.flatnonzero(table[:, 4] >= 0.5)
        table = table[: ends[0] + 1] if len(ends) else table
        lifted = (table[:, 3] >= 0.5) | (table[:, 4] >= 0.5)
    else:
        lifted = table[:, 2] >= 0.5
    with np.errstate(over="ignore", invalid="ignore"):
        points = np.cumsum(table[:, :2], axis=0)
    if not np.isfinite(points).all():
        raise StrokeFormatError("The stroke-3/stroke-5 offsets add up to a coordinate too large to draw.")
    strokes = [stroke for stroke in np.split(points, np.flatnonzero(lifted[:-1]) + 1) if len(stroke)]
    if len(strokes) > DEFAULT_MAX_STROKES:
        raise TooManyPointsError(f"The drawing has {len(strokes)} strokes; the limit is {DEFAULT_MAX_STROKES}.")
    return strokes


def strokes_from_object(obj: Any, *, max_points: int | None = None) -> Strokes:
    """Parse a decoded JSON object in any supported format into strokes; validate limits."""
    max_points = _points_limit(max_points)
    if not isinstance(obj, dict):
        raise StrokeFormatError('Strokes must be a JSON object with a "strokes" or "drawing" field.')
    if "strokes" in obj and _is_offset_sequence(obj["strokes"]):
        return _offset_strokes(obj["strokes"], max_points)
    if "strokes" in obj:
        raw, parse = obj["strokes"], _plain_stroke
    elif "drawing" in obj:
        raw, parse = obj["drawing"], _quickdraw_stroke
    else:
        raise StrokeFormatError('Strokes must be a JSON object with a "strokes" or "drawing" field.')
    field = "strokes" if parse is _plain_stroke else "drawing"
    if not isinstance(raw, list):
        shape = "[[x, y], ...] per stroke" if field == "strokes" else "[[x, ...], [y, ...]] per stroke (QuickDraw)"
        raise StrokeFormatError(f'"{field}" must be a list of strokes, {shape}; got {_json_type(raw)}.')
    if not raw:
        raise StrokeFormatError("The drawing has no strokes.")
    if len(raw) > DEFAULT_MAX_STROKES:
        raise TooManyPointsError(f"The drawing has {len(raw)} strokes; the limit is {DEFAULT_MAX_STROKES}.")
    quickdraw = parse is _quickdraw_stroke
    total = 0
    strokes: Strokes = []
    for index, stroke in enumerate(raw):
        # Count before converting, so an absurd payload is refused without building arrays from it.
        total += _declared_points(stroke, quickdraw)
        if total > max_points:
            raise TooManyPointsError(f"The drawing has more than {max_points} points (the limit).")
        points = parse(stroke, index)
        if len(points):
            strokes.append(points)
    if not strokes:
        raise StrokeFormatError("The drawing has no points.")
    return strokes


def _json_type(value: Any) -> str:
    return {dict: "an object", str: "a string", bool: "true or false", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


def load_drawing_json(data: bytes | str) -> Any:
    """Decode one drawing's JSON: a single JSON value, or ndjson (QuickDraw files), whose first line is used.

    Raises :class:`StrokeFormatError` for empty, non-UTF-8, invalid or absurdly nested text, or absurdly long numbers.
    """
    try:  # UTF-8 (with or without a BOM), or UTF-16/32 as JSON allows, detected the way json.loads does
        text = bytes(data).decode(json.detect_encoding(data)) if isinstance(data, bytes | bytearray) else data
    except UnicodeDecodeError:
        raise StrokeFormatError("The strokes are not UTF-8 text.") from None
    text = text.removeprefix("\ufeff")
    text = text.strip()
    if not text:
        raise StrokeFormatError("The strokes payload is empty.")
    try:
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            if error.msg != "Extra data":
                raise
            return json.loads(text.splitlines()[0])  # ndjson: one drawing per line
    except json.JSONDecodeError as error:
        raise StrokeFormatError(f"The strokes are not valid JSON: {error.msg} (line {error.lineno}).") from None
    except RecursionError:
        raise StrokeFormatError("The strokes JSON is nested too deeply.") from None
    except ValueError:  # Python refuses to read an integer of more than 4300 digits (int_max_str_digits)
        raise StrokeFormatError("The strokes JSON holds a number too long to read.") from None


def parse_strokes(data: bytes | str | dict, *, max_points: int | None = None) -> Strokes:
    """Parse one drawing from JSON text/bytes (object or ndjson: first line), a decoded object, or an SVG document."""
    max_points = _points_limit(max_points)
    if isinstance(data, bytes | bytearray | str) and looks_like_svg(data):
        return strokes_from_svg(data, max_points=max_points)
    obj = data if isinstance(data, dict) else load_drawing_json(data)
    return strokes_from_object(obj, max_points=max_points)


def iter_ndjson_drawings(path: str | Path, *, max_points: int | None = None) -> Iterator[Strokes]:
    """Every drawing of a QuickDraw ndjson file; unparsable lines raise with their line number."""
    max_points = _points_limit(max_points)
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield strokes_from_object(json.loads(line), max_points=max_points)
            except (ValueError, RecursionError) as error:  # invalid JSON or strokes, too long a number, too deep
                raise StrokeFormatError(f"{path}:{number}: {error}") from error


def rasterize_strokes(
    strokes: Strokes,
    size: int = 256,
    *,
    line_width: float = 3.0,
    margin: float = 0.06,
) -> Image.Image:
    """Draw strokes black on white, fitted into ``size``×``size`` with the aspect ratio kept.

    ``line_width`` is in output pixels. Raises :class:`StrokeFormatError` for a drawing with zero extent.
    """
    if not strokes:
        raise StrokeFormatError("The drawing has no strokes.")
    points = np.concatenate(strokes, axis=0)
    low, high = points.min(axis=0), points.max(axis=0)
    with np.errstate(over="ignore"):
        extent = float((high - low).max())
    if extent <= 0:
        raise StrokeFormatError("The drawing is degenerate: all its points are at the same place.")
    if not math.isfinite(extent) or not math.isfinite(size / extent):
        raise StrokeFormatError("The drawing's coordinates span a range too large or too small to draw.")
    if line_width <= 0 or not math.isfinite(line_width):
        raise StrokeFormatError("line_width must be a positive number.")

    canvas_side = size * SUPERSAMPLE
    usable = canvas_side * (1 - 2 * margin)
    scale = usable / extent
    # Scaled after moving to the origin: a drawing far away (x = 1e306) with a small extent would overflow to inf
    padding = (canvas_side - (high - low) * scale) / 2
    pen = max(1, round(line_width * SUPERSAMPLE))

    canvas = Image.new("L", (canvas_side, canvas_side), 255)
    draw = ImageDraw.Draw(canvas)
    for stroke in strokes:
        xy = (stroke - low) * scale + padding
        if not np.isfinite(xy).all():
            raise StrokeFormatError("The drawing's coordinates are too large to draw.")
        coords = [tuple(p) for p in xy.tolist()]
        if len(coords) > 1:
            draw.line(coords, fill=0, width=pen, joint="curve")
        # Round caps at every point (and single-point strokes become dots).
        radius = pen / 2
        for x, y in (coords if len(coords) < 64 else [coords[0], coords[-1]]):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=0)
    return canvas.resize((size, size), Image.Resampling.LANCZOS).convert("RGB")
