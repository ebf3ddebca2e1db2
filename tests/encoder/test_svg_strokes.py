"""SVG sketches (TU-Berlin, Sketchy, QMUL and drawing apps ship them) are read as their visible lines and drawn by
the strokes renderer; hostile SVG is refused quickly with a clear InputError."""

from __future__ import annotations

import time

import numpy as np
import pytest

from encoder import looks_like_svg, parse_strokes, rasterize_strokes
from encoder.errors import StrokeFormatError, TooManyPointsError
from encoder.svg_strokes import strokes_from_svg

NS = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
# A cat's head in a QuickDraw-like 0..255 box: two ears, a face, whiskers.
STROKES = [[[40, 120], [70, 40], [100, 100]], [[150, 100], [185, 40], [215, 120]],
           [[30, 130], [60, 220], [190, 225], [225, 130]], [[90, 170], [20, 160]], [[160, 170], [240, 165]]]


def _polyline(points) -> str:
    return " ".join(f"{x},{y}" for x, y in points)


def _as_svg(strokes, *, transform: str = "translate(40,30) scale(2.5)") -> bytes:
    """The strokes as an exported drawing: a DOCTYPE, a white background, a transformed group of paths and
    polylines, plus what a browser does not show as lines (hidden, white and text elements)."""
    paths = [f'<path d="M {a[0]} {a[1]} ' + " ".join(f"L {x} {y}" for x, y in rest) + '"/>'
             for a, *rest in strokes[:2]]
    lines = [f'<polyline points="{_polyline(stroke)}"/>' for stroke in strokes[2:]]
    return f'''<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">
<!-- exported by a drawing app -->
<svg {NS} width="800" height="800" viewBox="0 0 800 800">
  <rect x="0" y="0" width="800" height="800" fill="#ffffff"/>
  <g transform="{transform}" fill="none" stroke="#000" stroke-width="2" stroke-linecap="round">
    {"".join(paths + lines)}
    <path d="M 0 0 L 700 700" style="display:none"/>
    <path d="M 0 700 L 700 0" visibility="hidden"/>
    <path d="M 0 300 L 700 300" stroke="white"/>
  </g>
  <text x="10" y="790">cat</text>
</svg>'''.encode()


def _ink(image) -> np.ndarray:
    return 255 - np.asarray(image.convert("L"), dtype=np.float64)


def test_an_svg_drawing_draws_as_its_strokes_would():
    """Same lines, other units: after fitting to the canvas, the SVG and the JSON strokes are the same picture."""
    from_svg = parse_strokes(_as_svg(STROKES))
    assert len(from_svg) == len(STROKES)
    want = _ink(rasterize_strokes([np.array(s, dtype=float) for s in STROKES], 256))
    got = _ink(rasterize_strokes(from_svg, 256))
    assert np.abs(got - want).mean() < 0.5 and np.abs(got - want).max() < 64
    assert got.sum() > 0.02 * 255 * 256 * 256  # real ink, not an empty page


@pytest.mark.parametrize("transform", ["matrix(0,1,-1,0,800,0)", "rotate(90 400 400)"])
def test_transforms_are_applied(transform):
    """A rotated group is drawn rotated: compare with the strokes rotated by hand."""
    rotated = [[[-y, x] for x, y in stroke] for stroke in STROKES]
    got = _ink(rasterize_strokes(parse_strokes(_as_svg(STROKES, transform=transform)), 256))
    want = _ink(rasterize_strokes([np.array(s, dtype=float) for s in rotated], 256))
    assert np.abs(got - want).mean() < 0.5


def test_curves_arcs_and_shapes_are_sampled_finely():
    svg = f'''<svg {NS} viewBox="0 0 100 100"><g stroke="black" fill="none">
      <circle cx="50" cy="50" r="40"/>
      <path d="M 10 50 A 40 40 0 0 1 90 50"/>
      <path d="M 10 90 C 30 60, 70 60, 90 90"/></g></svg>'''.encode()
    circle, arc, cubic = parse_strokes(svg)
    radius = np.linalg.norm(circle - 50, axis=1)
    assert np.allclose(radius, 40, atol=1e-6) and len(circle) >= 64
    assert np.allclose(np.linalg.norm(arc - 50, axis=1), 40, atol=1e-6)
    # the polyline stays within 0.05 units (0.15 px once drawn at 256 px) of the circle between its samples
    for stroke in (circle, arc):
        middles = (stroke[1:] + stroke[:-1]) / 2
        assert np.abs(np.linalg.norm(middles - 50, axis=1) - 40).max() < 0.05
    assert len(cubic) > 16


def test_a_brush_stroke_exported_as_a_filled_outline_is_drawn():
    svg = f'<svg {NS}><path d="M 0 0 L 100 2 L 100 6 L 0 4 Z" fill="#333"/></svg>'.encode()
    (outline,) = parse_strokes(svg)
    assert len(outline) >= 4


def test_css_and_use_are_resolved():
    svg = f'''<svg {NS}><style>.ink {{ stroke: #222; fill: none }}</style>
      <defs><path id="ear" class="ink" d="M 0 0 L 10 -20 L 20 0"/></defs>
      <use xlink:href="#ear"/><use href="#ear" transform="translate(40 0)"/></svg>'''.encode()
    left, right = parse_strokes(svg)
    assert np.allclose(right - left, [40, 0])


@pytest.mark.parametrize("head", [b"<svg", b"  \n<?xml version='1.0'?>\n<!-- hi -->\n<svg ",
                                  b"\xef\xbb\xbf<svg>", "<svg viewBox='0 0 1 1'/>".encode("utf-16")])
def test_svg_is_recognised(head):
    assert looks_like_svg(head + b" ")


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("prolog", ['<?xml version="1.0" encoding="UTF-16"?>', ""])
def test_utf16_without_a_byte_order_mark_is_read(encoding, prolog):
    """Recognised by its first "<" (XML's own rule); such files were sent on to the JSON reader and refused."""
    svg = f'{prolog}<svg {NS} width="100" height="100"><path d="M10 10 L90 90" stroke="black"/></svg>'
    data = svg.encode(encoding)
    assert looks_like_svg(data)
    assert parse_strokes(data)[0][[0, -1]].tolist() == [[10, 10], [90, 90]]


@pytest.mark.parametrize("data", [b"<html><body><svg></svg>", b"{\"strokes\": []}", b"\x89PNG", b"", b"<svgx>",
                                  b" " * 5000 + b"<svg>", b"<!--" * 1000, b"<?" * 2000, b"<!DOCTYPE [" * 400,
                                  b"<?xml?><!DOCTYPE a [" + b"<!-- ]>" * 500])
def test_other_files_are_not_svg(data):
    """... also hostile prologs, at once (a regular expression over them had backtracked for minutes)."""
    started = time.monotonic()
    assert not looks_like_svg(data)
    assert time.monotonic() - started < 0.5


LOOP = f'<svg {NS}><g id="a"><use xlink:href="#b"/></g><g id="b"><use href="#a"/>' \
       '<line x2="1" y2="1" stroke="black"/></g></svg>'
# ten <use> of ten <use> of ...: 10^8 lines once expanded, in 2 KB, without any XML entity
USE_BOMB = f'<svg {NS}><defs><g id="g0"><line x2="1" y2="1" stroke="black"/></g>' + "".join(
    f'<g id="g{i}">' + f'<use xlink:href="#g{i - 1}"/>' * 10 + "</g>" for i in range(1, 9)) + \
    '</defs><use xlink:href="#g8"/></svg>'


@pytest.mark.parametrize(("svg", "error", "words"), [
    ('<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
     f'<svg {NS}><text>&b;</text></svg>', StrokeFormatError, "entities"),
    ('<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
     f'<svg {NS}><text>&x;</text></svg>', StrokeFormatError, "entities"),
    (LOOP, StrokeFormatError, "loop"),
    (USE_BOMB, TooManyPointsError, "limit"),
    (f'<svg {NS}>' + "<g>" * 300 + "</g>" * 300 + "</svg>", StrokeFormatError, "deep"),
    (f'<svg {NS}><path stroke="black" d="M0 0 ' + "L 1 1 " * 30_000 + '"/></svg>', TooManyPointsError, "limit"),
    (f'<svg {NS}><path d="M0 0 L 1 1"', StrokeFormatError, "well-formed"),
    (f'<svg {NS}></svg>', StrokeFormatError, "no visible lines"),
    (f'<svg {NS}><text>a cat</text><image href="data:image/png;base64,AAAA" width="5" height="5"/></svg>',
     StrokeFormatError, "text"),
    (f'<svg {NS}><rect width="100%" height="100%" fill="white"/></svg>', StrokeFormatError, "no visible lines"),
    (f'<svg {NS}><path stroke="black" d="M0 0 L 1e400 5"/></svg>', StrokeFormatError, "too large"),
    (f'<svg {NS}><circle r="1e308" stroke="black"/></svg>', StrokeFormatError, "too large"),
    (f'<svg {NS}><path stroke="black" transform="matrix(1,2)" d="M0 0 L5 5"/></svg>', StrokeFormatError, "SVG"),
])
def test_hostile_or_empty_svg_is_refused_quickly(svg, error, words):
    started = time.monotonic()
    with pytest.raises(error, match=f"(?i){words}"):
        parse_strokes(svg.encode(), max_points=20_000)
    assert time.monotonic() - started < 5


def test_the_point_limit_counts_sampled_curves():
    many = f'<svg {NS}><path stroke="black" fill="none" d="M0 0 ' + "c 5 5 10 -5 15 0 " * 400 + '"/></svg>'
    assert sum(len(s) for s in parse_strokes(many.encode(), max_points=20_000)) > 400
    with pytest.raises(TooManyPointsError):
        parse_strokes(many.encode(), max_points=300)


def test_what_a_browser_does_not_draw_is_left_out():
    """Masks, markers, clip paths and symbols are not drawn by themselves (a <use> of a symbol is); nor are shapes
    of opacity 0 (or in a group of opacity 0) and strokes of width 0."""
    svg = f'''<svg {NS}><symbol id="s"><line x2="10" y2="10" stroke="black"/></symbol>
      <mask id="m"><rect width="500" height="500" stroke="black"/></mask>
      <g><marker id="k"><path d="M0 0 L 300 0" stroke="black"/></marker></g>
      <clipPath id="c"><circle r="400" stroke="black"/></clipPath>
      <g opacity="0"><path d="M0 0 L 900 900" stroke="black"/></g>
      <path d="M0 0 L 800 0" stroke="black" opacity="0"/><path d="M0 0 L 0 800" stroke="black" stroke-width="0"
      fill="none"/><use href="#s" x="50"/><path d="M 50 0 L 20 30" stroke="black"/></svg>'''.encode()
    assert [stroke.tolist() for stroke in parse_strokes(svg)] == [[[50, 0], [60, 10]], [[50, 0], [20, 30]]]


def test_costly_shapes_and_unreadable_lengths_are_refused_quickly():
    circles = f'<svg {NS}>' + '<circle cx="5" cy="5" r="3" stroke="black"/>' * 19_000 + "</svg>"  # 5 s to read
    started = time.monotonic()
    with pytest.raises(TooManyPointsError):
        parse_strokes(circles.encode(), max_points=20_000)
    assert time.monotonic() - started < 2
    with pytest.raises(StrokeFormatError, match="cannot be read"):
        parse_strokes(f'<svg {NS}><circle cx="3" r="3" stroke="black" transform="rotate(x)"/></svg>'.encode())


def test_lengths_in_em_and_ex_are_read_at_the_initial_font_size():
    """svgelements read x1="1em" as 1 (another shape when ex is used beside it) and refused width="2em"."""
    line = f'<svg {NS} width="2em" height="1em"><line x1="1em" y1="1EM" x2="5em" y2="5ex" stroke="black"/></svg>'
    assert parse_strokes(line.encode())[0][[0, -1]].tolist() == [[16, 16], [80, 40]]
    scaled = f'<svg {NS} width="2em" height="1em" viewBox="0 0 4 2"><path d="M0 0 L4 2" stroke="black"/></svg>'
    assert parse_strokes(scaled.encode())[0][[0, -1]].tolist() == [[0, 0], [32, 16]]
    named = f'<svg {NS}><path id="2em" class="1ex" d="M0 0 L4 2" stroke="black"/><use href="#2em" x="1"/></svg>'
    assert len(parse_strokes(named.encode())) == 2  # an id or class that looks like a length stays a name


def test_a_compressed_svgz_and_a_prefixed_root_are_read():
    import gzip

    plain = _as_svg(STROKES)
    assert looks_like_svg(gzip.compress(plain))
    assert [s.tolist() for s in parse_strokes(gzip.compress(plain))] == [s.tolist() for s in parse_strokes(plain)]
    prefixed = b'<svg:svg xmlns:svg="http://www.w3.org/2000/svg"><svg:path d="M0 0 L 5 5" stroke="#000"/></svg:svg>'
    assert looks_like_svg(prefixed) and [s.tolist() for s in parse_strokes(prefixed)] == [[[0, 0], [5, 5]]]
    assert not looks_like_svg(gzip.compress(b"not a drawing"))


def test_a_gzip_bomb_is_refused_without_inflating_it():
    import gzip

    bomb = gzip.compress(b"<svg>" + b" " * 100_000_000)  # 100 MB in 100 KB
    started = time.monotonic()
    with pytest.raises(TooManyPointsError, match="inflates past"):
        parse_strokes(bomb)
    assert time.monotonic() - started < 2
    packed = gzip.compress(_as_svg(STROKES))
    with pytest.raises(StrokeFormatError, match="damaged"):
        strokes_from_svg(packed[:10] + b"\xff" * 8 + packed[18:], max_points=20_000)


def test_a_small_svgz_of_a_million_elements_is_refused_while_parsed_not_after():
    """4 KB that inflate to a million empty groups: parsed whole, the tree took a gigabyte and seconds before the
    size check; counted while parsing, it stops at the element budget (twice the points limit)."""
    import gzip
    import resource

    flood = gzip.compress(f"<svg {NS}>".encode() + b"<g/>" * 1_000_000 + b"</svg>")
    assert len(flood) < 10_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(TooManyPointsError, match="more than 40,000 elements"):
        strokes_from_svg(flood, max_points=20_000)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB: well under the 1 GB


@pytest.mark.parametrize("sheet", [b"a" * 60_000, b"a{" + b"b" * 60_000, b"/*a" * 20_000],
                         ids=["no-brace", "unclosed-rule", "unclosed-comments"])
def test_a_style_sheet_svgelements_reads_in_quadratic_time_is_read_at_once(sheet):
    """svgelements' CSS expressions backtrack over an unclosed rule or comment: 30 KB took 7 s and held the GIL (the
    service's health checks waited). Each sheet is rewritten as plain rules first; the drawing still reads."""
    started = time.monotonic()
    drawing = f"<svg {NS}><style>".encode() + sheet + b'</style><path d="M0 0 L10 10" stroke="black"/></svg>'
    assert [s.tolist() for s in strokes_from_svg(drawing, max_points=20_000)] == [[[0, 0], [10, 10]]]
    assert time.monotonic() - started < 1


def test_style_sheets_and_attributes_longer_than_a_drawings_are_refused_and_exported_classes_still_apply():
    repeated = f"<svg {NS}><style>".encode() + b"path{stroke:red} " * 240_000 + b'</style><path d="M0 0 L9 9"/></svg>'
    with pytest.raises(StrokeFormatError, match="style sheets are longer"):
        strokes_from_svg(repeated, max_points=20_000)
    many = f"<svg {NS}><style>".encode() + b"".join(b".c%d{stroke:red}" % i for i in range(1001)) + b"</style></svg>"
    with pytest.raises(StrokeFormatError, match="more than 1000 rules"):
        strokes_from_svg(many, max_points=20_000)
    turned = f'<svg {NS}><g transform="'.encode() + b"rotate(1) " * 5000 + b'"><path d="M0 0 L9 9"/></g></svg>'
    with pytest.raises(StrokeFormatError, match="'transform' attribute is 50,000 characters"):
        strokes_from_svg(turned, max_points=20_000)
    exported = (f'<svg {NS}><style><![CDATA[ /* Illustrator */ .st0{{fill:none;stroke:#000;stroke-width:2}}\n'
                '.st1{fill:none;stroke:#FFFFFF} ]]></style><path class="st0" d="M0 0 L10 10"/>'
                '<path class="st1" d="M0 5 L10 5"/></svg>').encode()
    assert [s.tolist() for s in strokes_from_svg(exported, max_points=100)] == [[[0, 0], [10, 10]]]


def test_an_embedded_picture_is_passed_over_and_an_at_rule_does_not_swallow_the_next_rule():
    picture = "data:image/png;base64," + "A" * 40_000  # exported drawings often carry their bitmap
    drawing = (f'<svg {NS}><style>@media screen {{ .a{{stroke:red}} }} .b{{stroke:black;fill:none}}</style>'
               f'<image xlink:href="{picture}" width="10" height="10"/><path class="b" d="M0 0 L10 10"/></svg>')
    assert [s.tolist() for s in strokes_from_svg(drawing.encode(), max_points=100)] == [[[0, 0], [10, 10]]]


def test_a_used_symbol_is_placed_by_lengths_in_units_and_percentages_of_the_drawing():
    """The drawing's size in inches and the use's x in % (of 3.125in = 300 px): read as a browser reads them."""
    svg = (f'<svg {NS} width="3.125in" height="300px"><defs><symbol id="s" viewBox="0 0 10 10">'
           '<path d="M0 0 L10 10" stroke="black"/></symbol></defs>'
           '<use xlink:href="#s" x="25%" width="50%" height="50%"/><path d="M0 300 L300 0" stroke="black"/></svg>')
    assert parse_strokes(svg.encode())[0][[0, -1]].tolist() == [[75, 0], [225, 150]]


@pytest.mark.parametrize(("use", "aspect", "ends"), [
    ('x="10" y="20" width="200" height="100"', "", [[60, 20], [160, 120]]),  # meet, centred: scale 10
    ('width="200" height="100"', 'preserveAspectRatio="none"', [[0, 0], [200, 100]]),
    ('width="200" height="100"', 'preserveAspectRatio="xMinYMin slice"', [[0, 0], [200, 200]]),
    ("", "", [[0, 0], [300, 300]]),  # no size on the use: 100 % of the drawing, as browsers draw it
    ('width="50%" height="20%"', "", [[45, 0], [105, 60]]),  # a percentage of the drawing's 300 x 300
    ('width="5em" height="5em"', "", [[0, 0], [80, 80]]),  # an em is 16 px, as elsewhere in a drawing
])
def test_a_used_symbol_is_fitted_into_the_uses_size(use, aspect, ends):
    """svgelements drew a symbol in its viewBox units: a sprite of viewBox 0 0 10 10 shown at 200 px was 10 px."""
    svg = (f'<svg {NS} width="300" height="300"><defs><symbol id="s" viewBox="0 0 10 10" {aspect}>'
           f'<path d="M0 0 L10 10" stroke="black"/></symbol></defs><use xlink:href="#s" {use}/>'
           '<path d="M0 300 L300 0" stroke="black"/></svg>')
    assert parse_strokes(svg.encode())[0][[0, -1]].tolist() == ends


LINE = '<path d="M30 30 L70 70 L30 70" stroke="{ink}" fill="none"/>'


@pytest.mark.parametrize(("paper", "ink"), [("#e0e0e0", "black"), ("#fdf6e3", "#333"), ("#ffffcc", "black"),
                                            ("black", "white"), ("#1e1e1e", "#e0e0e0")])
def test_a_background_rectangle_is_paper_not_a_frame_and_ink_is_what_differs_from_it(paper, ink):
    """A coloured background was drawn as a frame round a shrunken drawing; on a dark one the white ink vanished."""
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100"><rect width="100%" height="100%" '
           f'fill="{paper}"/>{LINE.format(ink=ink)}</svg>')
    strokes = strokes_from_svg(svg, max_points=20_000)
    assert [stroke.tolist() for stroke in strokes] == [[[30, 30], [70, 70], [30, 70]]]


@pytest.mark.parametrize("first", [
    '<rect x="20" y="20" width="60" height="60" fill="#e0e0e0"/>',  # a drawn box, not the whole canvas
    '<rect width="100" height="100" fill="#e0e0e0" fill-opacity="0.5"/>',  # see-through: drawn over the paper
    '<rect width="100" height="100" fill="#e0e0e0" stroke="black"/>',  # outlined: a drawn frame
    '<rect x="50" y="50" width="100" height="100" fill="black"/>',  # as large as the canvas, but half off it
    '<rect x="0" y="60" width="100" height="95" fill="black"/>',  # a ground strip
    '<rect width="100" height="100" fill="black" visibility="hidden"/>',  # not shown: the paper stays white
    '<rect width="100" height="100" fill="black" fill-opacity="50%"/>',  # an opacity svgelements does not read
    '<rect width="100" height="100" rx="50" fill="black"/>',  # a disc
])
def test_a_shape_that_is_not_the_whole_opaque_paper_stays_drawn(first):
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100">{first}{LINE.format(ink="black")}</svg>'
    assert [[30, 30], [70, 70], [30, 70]] in [stroke.tolist() for stroke in strokes_from_svg(svg, max_points=20_000)]
