"""SVG drawing → strokes, so the vector sketches datasets ship (TU-Berlin, Sketchy, QMUL ShoeV2/ChairV2) and drawing
apps export are searched as what they are: lines, drawn by the same renderer as the page's strokes.

What counts as a line (as a browser would show it on white paper):

* a shape with a visible stroke (not ``none``, not transparent, not near-white) is drawn as its outline;
* a shape with no visible stroke but a visible fill (apps that export a brush stroke as a filled outline) is drawn
  as that outline;
* hidden (``display:none``, ``visibility:hidden``) and white shapes (a background) are left out, as are text and
  embedded raster images.

Curves and arcs are sampled into polylines finer than the model's input resolution. svgelements
(https://github.com/meerk40t/svgelements) parses paths, shapes, transforms, ``<use>`` and CSS; before it sees a
file, defusedxml refuses XML entities (billion laughs) and a check of the element tree refuses ``<use>`` cycles and
references that multiply into more elements than a drawing has (the same attack without entities).
"""

from __future__ import annotations

import io
import math
import re
import zlib
from xml.etree.ElementTree import Element, SubElement, tostring

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError
from defusedxml.ElementTree import iterparse as safe_iterparse

from .errors import StrokeFormatError, TooManyPointsError

GZIP_MAGIC = b"\x1f\x8b"
GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer around the deflate stream
MAX_SVGZ_BYTES = 4 * 2**20  # an .svgz's SVG, inflated: far above a drawing's (tens of KB), far below a gzip bomb's
MAX_DEPTH = 64  # nesting of SVG elements; drawings nest a few groups deep
SAMPLES_PER_SIDE = 256  # curve sampling step: the drawing's larger side / this (the model sees 224 px)
MAX_SAMPLES_PER_CURVE = 64
ROUGH_SAMPLES = np.linspace(0, 1, 5)
NEAR_WHITE = 235  # every channel at least this: invisible on white paper
INK_CONTRAST = 255 - NEAR_WHITE  # a colour this close to the paper's in every channel does not show on it
WHITE = (255, 255, 255)
PAPER_COVER = 0.9  # a first filled shape over this share of the canvas's width and height is its paper
_NUMBER = re.compile(rb"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_BRACES = re.compile(r"[{}]")
_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
SVG_NS = "http://www.w3.org/2000/svg"
NOT_RENDERED = frozenset({"mask", "marker", "symbol", "clipPath", "pattern"})
MAX_ATTRIBUTE_CHARS = 16 * 1024  # any attribute but path data (counted as points): a transform list is a few words
MAX_STYLE_CHARS = 64 * 1024  # all <style> sheets together: an exported drawing's are a few classes
MAX_CSS_RULES = 1000
# Not length-checked: path data (counted as points), and links (an embedded picture's data: URI, never read)
UNCHECKED_ATTRIBUTES = frozenset({"d", "points", "href"})
# Lengths in font units, as CSS resolves them with no font size set (the initial 16 px; an ex taken as half an em):
# svgelements reads "1em" on a shape as 1 and refuses it on the root's width. Only a whole attribute that is one
# such length is rewritten; inherited font sizes are not followed.
FONT_UNIT_PX = {"em": 16.0, "ex": 8.0}
NAMES = frozenset({"id", "class"})  # names that may look like lengths ("2em"), never to be rewritten
_FONT_LENGTH = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(em|ex)\s*", re.IGNORECASE)
# What svgelements spends reading an element, in path points (measured: a circle ~0.5 ms, a point ~0.02 ms)
PARSE_COST = {"circle": 24, "ellipse": 24, "rect": 12, "line": 8, "polyline": 8, "polygon": 8, "path": 4, "use": 4}


def looks_like_svg(data: bytes | str) -> bool:
    """The bytes are an SVG document (or one gzipped, .svgz): its root element is ``<svg`` (or ``<prefix:svg``),
    within the first 4 KiB, after any XML declaration, comments and DOCTYPE (a linear scan: a regular expression
    over hostile prologs can backtrack)."""
    head = (data[:4096].encode("utf-8", "replace") if isinstance(data, str) else bytes(data[:4096]))
    if head.startswith(GZIP_MAGIC):
        try:
            head = zlib.decompressobj(GZIP_WBITS).decompress(bytes(data[:65536]), 4096)
        except zlib.error:
            return False
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16, as some Windows tools write XML
        head = head.decode("utf-16", "replace").encode("utf-8", "replace")
    elif head.startswith((b"<\x00", b"\x00<")):  # UTF-16 without a byte-order mark (XML tells it by the first "<")
        head = head.decode("utf-16-le" if head[0] == 0x3C else "utf-16-be", "replace").encode("utf-8", "replace")
    at = 3 if head.startswith(b"\xef\xbb\xbf") else 0
    while at < len(head):
        if head[at:at + 1].isspace():
            at += 1
        elif head.startswith(b"<", at) and head[at + 1:at + 2].isalpha():  # the root element: <svg or <svg:svg
            name = re.match(rb"[\w.:-]*", head[at + 1:at + 200]).group()
            return (name == b"svg" or name.endswith(b":svg")) and head[at + 1 + len(name):at + 2 + len(name)] in (
                b" ", b"\t", b"\r", b"\n", b">", b"/")
        elif head.startswith(b"<?", at):
            at = _after(head, b"?>", at)
        elif head.startswith(b"<!--", at):
            at = _after(head, b"-->", at)
        elif head[at:at + 9].upper() == b"<!DOCTYPE":
            subset, close = head.find(b"[", at), head.find(b">", at)
            at = _after(head, b">", _after(head, b"]", subset)) if -1 < subset < close else _after(head, b">", at)
        else:
            return False
    return False


def _after(data: bytes, end: bytes, start: int) -> int:
    """The position after the first ``end`` from ``start`` (past the data when there is none)."""
    found = data.find(end, start)
    return len(data) if found < 0 else found + len(end)


def strokes_from_svg(data: bytes | str, *, max_points: int) -> list[np.ndarray]:
    """The lines of an SVG drawing as strokes (``[N, 2]`` arrays in the drawing's own units, y down).

    Raises :class:`StrokeFormatError` for XML that is malformed, hostile or holds no line, and
    :class:`TooManyPointsError` when the drawing needs more than ``max_points`` points.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else _gunzipped(bytes(data))
    root = _checked_tree(raw, max_elements=2 * max_points)
    _check_size(root, max_points)
    _check_text(root)
    _move_unrendered_to_defs(root)
    _size_used_symbols(root)
    from svgelements import SVG  # imported here: only SVG queries pay for it

    try:
        document = SVG.parse(io.BytesIO(tostring(root)), reify=True)
        paper, elements = _paper(list(document.elements()), document)
        shapes = [path for path in (_visible_outline(element, paper) for element in elements) if path is not None]
        if not shapes:
            raise StrokeFormatError("The SVG drawing has no visible lines (its text and embedded images are not "
                                    "read).")
        return _sample(shapes, max_points)
    except StrokeFormatError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, ZeroDivisionError, RecursionError) as error:
        # svgelements' own errors on values it cannot read (a transform, a length in em, a colour), when parsing
        # or when outlining and sampling a shape
        reason = str(error).rstrip(".") or "a value it cannot read (a length, a transform or a colour)"
        raise StrokeFormatError(f"The SVG drawing cannot be read: {type(error).__name__}: {reason}.") from None


def _gunzipped(data: bytes) -> bytes:
    """An .svgz's SVG (any other bytes as they are), refusing one that inflates past MAX_SVGZ_BYTES (a gzip bomb)."""
    if not data.startswith(GZIP_MAGIC):
        return data
    inflate = zlib.decompressobj(GZIP_WBITS)
    try:
        svg = inflate.decompress(data, MAX_SVGZ_BYTES)
    except zlib.error as error:
        raise StrokeFormatError(f"The compressed SVG (.svgz) is damaged: {error}.") from None
    if inflate.unconsumed_tail:
        raise TooManyPointsError(f"The compressed SVG (.svgz) inflates past {MAX_SVGZ_BYTES:,} bytes (the limit).")
    return svg


def _checked_tree(raw: bytes, *, max_elements: int) -> Element:
    """The element tree, parsed incrementally and refused once it holds more than ``max_elements`` (each costs at
    least 1 in :func:`_check_size`): a 4 KB .svgz of a million empty groups took a gigabyte to parse whole."""
    try:  # a DOCTYPE is common in exported SVGs; entities (and with them billion laughs) are not
        events = safe_iterparse(io.BytesIO(raw), events=("start",), forbid_dtd=False, forbid_entities=True,
                                forbid_external=True)
        for count, _ in enumerate(events, 1):
            if count > max_elements:
                raise TooManyPointsError(f"The SVG has more than {max_elements:,} elements (the limit for its "
                                         "points).")
        return events.root
    except DefusedXmlException:
        raise StrokeFormatError("The SVG declares XML entities, which are not accepted.") from None
    except ParseError as error:
        raise StrokeFormatError(f"The SVG is not well-formed XML: {error}.") from None
    except RecursionError:
        raise StrokeFormatError("The SVG is nested too deeply.") from None


def _check_text(root: Element) -> None:
    """Refuse attributes and style sheets longer than a drawing's, and rewrite each ``<style>`` as plain
    ``selector{declarations}`` rules: svgelements reads CSS with regular expressions that take quadratic time on
    a sheet with an unclosed rule or comment (30 KB took 7 s, holding the GIL) and joins repeated rules one string
    at a time."""
    styles = 0
    for element in root.iter():
        for name, value in element.attrib.items():
            if len(value) > MAX_ATTRIBUTE_CHARS and _local_name(name) not in UNCHECKED_ATTRIBUTES:
                raise StrokeFormatError(f"The SVG's {_local_name(name)!r} attribute is {len(value):,} characters "
                                        f"long; at most {MAX_ATTRIBUTE_CHARS:,} are read.")
            if _local_name(name) not in NAMES and (font_length := _FONT_LENGTH.fullmatch(value)) is not None:
                number, unit = font_length.groups()
                element.set(name, f"{float(number) * FONT_UNIT_PX[unit.lower()]:g}")
        if _local_name(element.tag) == "style":
            styles += len(element.text or "")
            if styles > MAX_STYLE_CHARS:
                raise StrokeFormatError(f"The SVG's style sheets are longer than {MAX_STYLE_CHARS:,} characters.")
            element.text = _plain_css(element.text or "")
            for child in list(element):  # CDATA is text already; any element inside a style sheet is not CSS
                element.remove(child)


def _plain_css(sheet: str) -> str:
    """``sheet`` as one ``selector{declarations}`` per line, comments and unclosed rules dropped (linear scans)."""
    text, at = [], 0
    while (start := sheet.find("/*", at)) >= 0:
        text.append(sheet[at:start])
        end = sheet.find("*/", start + 2)
        at = len(sheet) if end < 0 else end + 2
    text.append(sheet[at:])
    sheet, rules, at = "".join(text), [], 0
    while (brace := sheet.find("{", at)) >= 0:
        close = _block_end(sheet, brace)
        if close < 0:
            break
        selector, declarations = sheet[at:brace].strip(), sheet[brace + 1:close].strip()
        at = close + 1
        if selector and declarations and "{" not in declarations:  # an at-rule's block (@media) is left out
            rules.append(f"{selector}{{{declarations}}}")
            if len(rules) > MAX_CSS_RULES:
                raise StrokeFormatError(f"The SVG's style sheets hold more than {MAX_CSS_RULES} rules.")
    return "\n".join(rules)


def _block_end(sheet: str, brace: int) -> int:
    """The ``}`` closing the block opened at ``brace`` (nested blocks counted), or -1 when it is never closed."""
    depth = 0
    for match in _BRACES.finditer(sheet, brace):  # from ``brace`` in place: no copy of the sheet's rest per rule
        depth += 1 if match.group() == "{" else -1
        if depth == 0:
            return match.start()
    return -1


def _move_unrendered_to_defs(root: Element) -> None:
    """Move what a browser never draws by itself (masks, markers, symbols, clip paths, patterns) into ``<defs>``:
    svgelements would draw their shapes as lines, and still resolves a ``<use>`` of them there."""
    parents = {child: parent for parent in root.iter() for child in parent}
    defs = None
    for element in list(root.iter()):
        parent = parents.get(element)
        if _local_name(element.tag) in NOT_RENDERED and parent is not None and _local_name(parent.tag) != "defs":
            if defs is None:
                defs = SubElement(root, f"{{{SVG_NS}}}defs")
            parent.remove(element)
            defs.append(element)


def _size_used_symbols(root: Element) -> None:
    """Fit each ``<use>`` of a ``<symbol>`` that has a viewBox into the use's width x height, as a browser does
    (svgelements draws the symbol in its own units, so a sprite of viewBox 0 0 10 10 shown at 100 px came out 10 px):
    the use's x, y and the viewBox mapping become its transform. A size left out is 100 %, a percentage is of the
    outer viewport and CSS absolute units are converted, as browsers take them; a use sized in other units (10vw) is
    left as it is."""
    symbols = {element.get("id"): element for element in root.iter()
               if _local_name(element.tag) == "symbol" and element.get("id") and element.get("viewBox")}
    if not symbols:
        return
    viewport = _viewport(root)
    for use in root.iter():
        if _local_name(use.tag) != "use":
            continue
        symbol = symbols.get((use.get("href") or use.get(_XLINK_HREF) or "").removeprefix("#"))
        if symbol is None:
            continue
        box = _viewbox(symbol)
        width = _length(use.get("width", symbol.get("width")), viewport[0])
        height = _length(use.get("height", symbol.get("height")), viewport[1])
        if box is None or not (math.isfinite(width) and math.isfinite(height)):
            continue
        fit = _viewbox_fit(box, width, height, symbol.get("preserveAspectRatio", ""))
        x, y = _length(use.get("x") or "0", viewport[0]), _length(use.get("y") or "0", viewport[1])
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        use.set("transform", f"{use.get('transform', '')} translate({x} {y}) {fit}".strip())
        for name in ("x", "y", "width", "height"):
            use.attrib.pop(name, None)


def _viewbox(element: Element) -> list[float] | None:
    """``element``'s viewBox (min-x, min-y, width, height), or None when it has none that can be used."""
    box = [_number(v, math.nan) for v in (element.get("viewBox") or "").replace(",", " ").split()]
    return box if len(box) == 4 and all(map(math.isfinite, box)) and min(box[2:]) > 0 else None


def _viewport(root: Element) -> tuple[float, float]:
    """The outer ``<svg>``'s width and height in user units, which percentages refer to: its viewBox's, else its own
    (in CSS absolute units), else a browser's default 300 x 150."""
    box = _viewbox(root)
    if box is not None:
        return box[2], box[3]
    width, height = _length(root.get("width"), math.nan), _length(root.get("height"), math.nan)
    return (width if width > 0 else 300.0), (height if height > 0 else 150.0)


# CSS absolute units in px (user units of an outer <svg> without a viewBox)
CSS_UNIT_PX = {"": 1.0, "px": 1.0, "pt": 96 / 72, "pc": 16.0, "in": 96.0, "cm": 96 / 2.54, "mm": 96 / 25.4}
_LENGTH = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(%|[a-zA-Z]*)\s*")


def _length(value: str | None, side: float) -> float:
    """A length in user units: a percentage is of the viewport's ``side`` (left out: 100 %), CSS absolute units
    (px, pt, pc, in, cm, mm) are converted; NaN when unreadable."""
    match = _LENGTH.fullmatch(value if value is not None else "100%")
    if match is None:
        return math.nan
    number, unit = float(match.group(1)), match.group(2).lower()
    if unit == "%":
        return number / 100 * side
    return number * CSS_UNIT_PX[unit] if unit in CSS_UNIT_PX else math.nan


def _viewbox_fit(box: list[float], width: float, height: float, aspect: str) -> str:
    """The transform that maps viewBox ``box`` onto width x height under preserveAspectRatio ``aspect``."""
    min_x, min_y, box_w, box_h = box
    words = aspect.split()
    align = words[0] if words else "xMidYMid"
    if align == "none":
        sx, sy, dx, dy = width / box_w, height / box_h, 0.0, 0.0
    else:
        scale = (max if "slice" in words[1:] else min)(width / box_w, height / box_h)
        share = {"Min": 0.0, "Mid": 0.5, "Max": 1.0}
        dx = (width - box_w * scale) * share.get(align[1:4], 0.5)
        dy = (height - box_h * scale) * share.get(align[5:8], 0.5)
        sx = sy = scale
    return f"translate({dx} {dy}) scale({sx} {sy}) translate({-min_x} {-min_y})"


def _check_size(root: Element, max_points: int) -> None:
    """Refuse a tree whose ``<use>`` references loop, or whose parse would cost more than its points may (each
    element weighed by what svgelements spends on it: a circle about as much as 24 path points), before svgelements
    expands it (ten ``<use>`` of ten ``<use>``... is exponential; 10,000 circles took seconds)."""
    by_id = {element.get("id"): element for element in root.iter() if element.get("id")}
    sizes: dict[int, int] = {}
    visiting: set[int] = set()
    limit = 2 * max_points

    def size(element: Element, depth: int) -> int:
        key = id(element)
        if key in sizes:
            return sizes[key]
        if key in visiting:
            raise StrokeFormatError("The SVG's <use> references loop.")
        if depth > MAX_DEPTH:
            raise StrokeFormatError(f"The SVG nests elements more than {MAX_DEPTH} deep.")
        visiting.add(key)
        total = PARSE_COST.get(_local_name(element.tag), 1) + sum(
            len(_NUMBER.findall(element.get(name, "").encode())) // 2 for name in ("d", "points"))
        for child in element:
            total += size(child, depth + 1)
        href = element.get("href") or element.get(_XLINK_HREF) or ""
        if _local_name(element.tag) == "use" and href.startswith("#") and href[1:] in by_id:
            total += size(by_id[href[1:]], depth + 1)
        visiting.discard(key)
        if total > limit:
            raise TooManyPointsError(f"The SVG drawing has more than {max_points} points, or shapes that cost as "
                                     "much to read (the limit).")
        sizes[key] = total
        return total

    size(root, 0)


def _local_name(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _number(value: object, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def _visible(color: object, paper: tuple[int, int, int] = WHITE) -> bool:
    if not _painted(color):
        return False
    return max(abs(channel - ground) for channel, ground in zip((color.red, color.green, color.blue), paper,
                                                                strict=True)) > INK_CONTRAST


def _paper(elements: list, document: object) -> tuple[tuple[int, int, int], list]:
    """The paper's colour, and the elements without it: a first painted shape that is an opaque fill over the whole
    canvas is a background, not a drawn box (a coloured one became a frame round the drawing; a dark one hid its
    white ink). Drawing tools and exports write such a rectangle first."""
    from svgelements import Rect, Shape

    width, height = _number(getattr(document, "width", None), 0.0), _number(getattr(document, "height", None), 0.0)
    for position, element in enumerate(elements):
        if not isinstance(element, Shape) or not (_painted(element.fill) or _painted(element.stroke)):
            continue
        values = getattr(element, "values", {}) or {}
        if not isinstance(element, Rect) or width <= 0 or height <= 0 or not _opaque_fill(element, values):
            break  # only an unoutlined, opaque, square-cornered <rect>: a shape filled by default (black) is drawn
        box = element.bbox()
        # The share of the canvas [0, width] x [0, height] it covers (a rect moved half off the canvas is no paper)
        if box is None or min(box[2], width) - max(box[0], 0.0) < PAPER_COVER * width \
                or min(box[3], height) - max(box[1], 0.0) < PAPER_COVER * height:
            break
        return (element.fill.red, element.fill.green, element.fill.blue), elements[:position] + elements[position + 1:]
    return WHITE, elements


def _opaque_fill(rect: object, values: dict) -> bool:
    """Whether ``rect`` paints an opaque fill and nothing else: no outline, no transparency (an opacity svgelements
    does not read, "50%", counts as transparent), shown, and corners no rounder than a card's."""
    if not _painted(rect.fill) or rect.fill.alpha < 255 or _painted(rect.stroke):
        return False
    if _hidden(values):
        return False
    for name in ("opacity", "fill-opacity"):
        if _number(values.get(name), 1.0 if values.get(name) is None else 0.0) < 1:
            return False
    box_w, box_h = _number(getattr(rect, "width", 0), 0.0), _number(getattr(rect, "height", 0), 0.0)
    rounding = max(_number(getattr(rect, "rx", 0), 0.0), _number(getattr(rect, "ry", 0), 0.0))
    return rounding <= 0.05 * max(1e-9, min(box_w, box_h))


def _painted(color: object) -> bool:
    return getattr(color, "value", None) is not None and color.alpha > 0


def _hidden(values: dict) -> bool:
    """``visibility`` hides the shape (svgelements passes a group's down)."""
    return str(values.get("visibility", "")).strip().lower() in ("hidden", "collapse")


def _visible_outline(element: object, paper: tuple[int, int, int] = WHITE):
    """The element's outline as an svgelements Path when it shows as lines on `paper`, else None."""
    from svgelements import Path, Shape, SimpleLine

    if not isinstance(element, Shape):
        return None
    values = getattr(element, "values", {}) or {}
    if _hidden(values):
        return None
    if _number(values.get("opacity"), 1.0) <= 0:  # the shape's or its group's (svgelements passes it down)
        return None
    stroked = _visible(element.stroke, paper) and _number(getattr(element, "stroke_width", 1.0), 1.0) > 0
    filled = not isinstance(element, SimpleLine) and _visible(element.fill, paper)
    if not (stroked or filled):
        return None
    return element if isinstance(element, Path) else Path(element)


def _sample(shapes: list, max_points: int) -> list[np.ndarray]:
    """Polylines through every subpath; each curve sampled so that no chord is longer than the drawing's larger side
    / SAMPLES_PER_SIDE (its extent taken from a first, rough sampling: svgelements' exact bbox costs more)."""
    from svgelements import Close, Line, Move

    rough_subpaths: list[list[tuple[object, np.ndarray]]] = []
    for shape in shapes:
        for subpath in shape.as_subpaths():
            pieces = []
            for segment in subpath:
                if isinstance(segment, Move) or segment.start is None or segment.end is None:
                    continue
                if isinstance(segment, Line | Close):
                    ends = [[segment.start.x, segment.start.y], [segment.end.x, segment.end.y]]
                    pieces.append((None, np.array(ends, dtype=np.float64)))
                else:
                    pieces.append((segment, np.asarray(segment.npoint(ROUGH_SAMPLES), dtype=np.float64)))
            if pieces:
                rough_subpaths.append(pieces)
                if len(rough_subpaths) > max_points:
                    raise TooManyPointsError(f"The SVG drawing has more than {max_points} lines (the limit).")
    if not rough_subpaths:
        raise StrokeFormatError("The SVG drawing has no visible lines.")
    rough = np.concatenate([points for pieces in rough_subpaths for _, points in pieces])
    if not np.isfinite(rough).all():
        raise StrokeFormatError("The SVG drawing holds a non-finite or too large coordinate.")
    with np.errstate(over="ignore"):
        extent = float((rough.max(axis=0) - rough.min(axis=0)).max())
    step = extent / SAMPLES_PER_SIDE if 0 < extent < np.inf else np.inf

    strokes: list[np.ndarray] = []
    total = 0
    for pieces in rough_subpaths:
        points = []
        for segment, chunk in pieces:
            if segment is not None:  # a curve or arc: enough samples that no chord is longer than `step`
                with np.errstate(over="ignore", invalid="ignore"):
                    length = float(np.linalg.norm(np.diff(chunk, axis=0), axis=1).sum())
                wanted = int(min(MAX_SAMPLES_PER_CURVE, max(2, np.ceil(length / step) + 1))) if step < np.inf else 2
                if wanted > len(chunk):
                    chunk = np.asarray(segment.npoint(np.linspace(0, 1, wanted)), dtype=np.float64)
            points.append(chunk if not points else chunk[1:])
        stroke = np.concatenate(points)
        total += len(stroke)
        if total > max_points:
            raise TooManyPointsError(f"The SVG drawing needs more than {max_points} points (the limit).")
        strokes.append(stroke)
    if not all(np.isfinite(stroke).all() for stroke in strokes):
        raise StrokeFormatError("The SVG drawing holds a non-finite or too large coordinate.")
    return strokes
