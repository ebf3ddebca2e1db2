"""An SVG sketch (as TU-Berlin, Sketchy and drawing apps save them) is searched as its lines, however it is sent;
hostile SVG is a 4xx."""

from __future__ import annotations

import gzip

import pytest

from tests.app.support import STROKES

NS = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'


def _svg(strokes) -> bytes:
    """The JSON strokes as an SVG drawing, in other units (×3, shifted), on a white background."""
    lines = "".join('<polyline points="' + " ".join(f"{x},{y}" for x, y in stroke) + '"/>' for stroke in strokes)
    return (f'<?xml version="1.0"?>\n<svg {NS} viewBox="0 0 900 900"><rect width="900" height="900" fill="#fff"/>'
            f'<g transform="translate(50 20) scale(3)" stroke="#000" fill="none">{lines}</g></svg>').encode()


SVG = _svg(STROKES["strokes"])


def _same_answer(response, want) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["input"] == "strokes"
    got = [(hit["id"], hit["score"]) for hit in body["results"]]
    assert [i for i, _ in got] == [i for i, _ in want]
    assert all(abs(a - b) < 0.02 for (_, a), (_, b) in zip(got, want, strict=True))


@pytest.mark.parametrize("send", [
    lambda c: c.post("/search?k=4", files={"sketch": ("cat.svg", SVG, "image/svg+xml")}),
    lambda c: c.post("/search?k=4", files={"file": ("cat.svg", SVG, "application/octet-stream")}),
    lambda c: c.post("/search?k=4", content=SVG, headers={"Content-Type": "image/svg+xml"}),
    lambda c: c.post("/search?k=4", content=SVG, headers={"Content-Type": "application/x-www-form-urlencoded"}),
    lambda c: c.post("/search?k=4", content=SVG),
    lambda c: c.post("/search?k=4", content=SVG, headers={"Content-Type": "application/xml"}),
    lambda c: c.post("/search?k=4", content=SVG, headers={"Content-Type": "text/xml; charset=utf-8"}),
    lambda c: c.post("/search?k=4", data={"strokes": SVG.decode()}),
    lambda c: c.post("/search?k=4", files={"strokes": ("cat.svg", SVG)}),
    lambda c: c.post("/search?k=4", files={"sketch": ("cat.svgz", gzip.compress(SVG))}),
], ids=["sketch-field", "other-field", "svg-body", "curl-data-binary", "no-content-type", "application-xml",
        "text-xml", "strokes-field", "strokes-file", "svgz"])
def test_an_svg_sketch_finds_what_its_strokes_find(client, send):
    want = client.post("/search", json={**STROKES, "k": 4}).json()["results"]
    _same_answer(send(client), [(hit["id"], hit["score"]) for hit in want])


BOMB = f'<svg {NS}><defs><g id="g0"><line x2="1" y2="1" stroke="black"/></g>' + "".join(
    f'<g id="g{i}">' + f'<use xlink:href="#g{i - 1}"/>' * 10 + "</g>" for i in range(1, 9)) + \
    '</defs><use xlink:href="#g8"/></svg>'


@pytest.mark.parametrize(("svg", "status", "code"), [
    (BOMB, 413, "too_many_points"),
    ('<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaa">]>' f'<svg {NS}><text>&a;</text></svg>', 422,
     "bad_strokes"),
    (f'<svg {NS}><text>a cat</text></svg>', 422, "bad_strokes"),
    (f'<svg {NS}><path d="M0 0', 422, "bad_strokes"),
    (f'<svg {NS} viewBox="0 0 100 100"><circle cx="3" r="3" stroke="black" transform="rotate(x)"/></svg>', 422,
     "bad_strokes"),
    (f'<svg {NS}>' + '<circle cx="5" cy="5" r="3" stroke="black"/>' * 19_000 + "</svg>", 413, "too_many_points"),
])
def test_hostile_or_empty_svg_is_a_4xx(client, svg, status, code):
    for response in (client.post("/search", files={"sketch": ("x.svg", svg.encode())}),
                     client.post("/search", content=svg.encode(), headers={"Content-Type": "image/svg+xml"})):
        assert response.status_code == status, response.text
        assert response.json()["error"] == code and "Traceback" not in response.text


def test_an_svg_is_a_sketch_not_a_photo(client):
    response = client.post("/search?as=photo", files={"sketch": ("x.svg", SVG)})
    assert response.status_code == 422 and response.json()["error"] == "photo_from_strokes"
