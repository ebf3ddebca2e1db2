"""Acceptance-run regressions of /search request handling: ndjson bodies, curl defaults, form variants,
AVIF, and a client that disconnects mid-body."""

from __future__ import annotations

import asyncio
import io
import json
import unicodedata

import numpy as np
import pytest
from PIL import Image
from starlette.requests import Request

from app.errors import APIError
from app.inputs import read_limited
from tests.app.support import STROKES, app_client, build_index, make_gallery, sketch_png

QUICKDRAW = {"word": "apple", "drawing": [[[10, 50, 90], [10, 80, 10]], [[20, 80], [50, 50]]]}
NDJSON = (json.dumps(QUICKDRAW) + "\n" + json.dumps({"word": "boat", "drawing": [[[0, 9], [0, 9]]]}) + "\n").encode()


def assert_found(response, kind: str = "strokes") -> None:
    assert response.status_code == 200, response.text
    assert response.json()["input"] == kind and response.json()["results"]


@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
def test_a_quickdraw_ndjson_body_with_several_drawings_searches_the_first(client, content_type):
    assert_found(client.post("/search?k=3", content=NDJSON, headers={"Content-Type": content_type}))


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded"])
def test_a_body_without_a_real_content_type_is_judged_by_its_bytes(client, content_type):
    """`curl --data-binary @x` sends form-urlencoded (or, with -H 'Content-Type:', nothing)."""
    headers = {"Content-Type": content_type} if content_type else {}
    assert_found(client.post("/search", content=sketch_png(), headers=headers), "image")
    assert_found(client.post("/search", content=json.dumps(STROKES).encode(), headers=headers))
    response = client.post("/search", content=b"hello", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415 and "text/plain" in response.json()["detail"]


def test_an_urlencoded_form_with_a_strokes_field(client):
    response = client.post("/search", data={"strokes": json.dumps(STROKES), "k": "2"})
    assert_found(response)
    assert response.json()["k"] == 2


def test_strokes_sent_as_a_file_in_either_field(client):
    assert_found(client.post("/search", files={"strokes": ("s.json", json.dumps(STROKES).encode())}))
    assert_found(client.post("/search", files={"sketch": ("cat.ndjson", NDJSON, "application/x-ndjson")}))


def test_one_image_under_another_field_name_is_the_sketch(client):
    assert_found(client.post("/search", files={"file": ("a.png", sketch_png(), "image/png")}), "image")


@pytest.mark.parametrize("as_photo", [False, True])
def test_a_heic_sketch_or_photo_is_accepted(client, as_photo):
    buffer = io.BytesIO()
    Image.open(io.BytesIO(sketch_png())).convert("RGB").save(buffer, "HEIF", quality=90)
    query = "?as=photo" if as_photo else ""
    for response in (client.post(f"/search{query}", content=buffer.getvalue(), headers={"Content-Type": "image/heic"}),
                     client.post(f"/search{query}", files={"sketch": ("IMG_0001.HEIC", buffer.getvalue())})):
        assert_found(response, "image")


def test_an_avif_sketch_is_accepted(client):
    buffer = io.BytesIO()
    Image.open(io.BytesIO(sketch_png())).convert("RGB").save(buffer, "AVIF", quality=80)
    assert_found(client.post("/search", content=buffer.getvalue(), headers={"Content-Type": "image/avif"}), "image")


def test_a_client_disconnecting_mid_body_is_a_4xx_not_an_internal_error():
    messages = iter([{"type": "http.request", "body": b"\x89PNG", "more_body": True}, {"type": "http.disconnect"}])

    async def receive():
        return next(messages)

    scope = {"type": "http", "method": "POST", "path": "/search", "headers": [], "query_string": b""}
    with pytest.raises(APIError) as caught:
        asyncio.run(read_limited(Request(scope, receive), 1000))
    assert caught.value.status == 400 and caught.value.code == "client_disconnected"


def test_a_category_differing_only_in_unicode_normalisation_is_found(tmp_path, app_encoder):
    nfd = unicodedata.normalize("NFD", "crème brûlée")  # how macOS writes folder names
    gallery = make_gallery(tmp_path / "gallery", categories=(nfd, "boat"), per_category=2)
    build_index(gallery, tmp_path / "index", app_encoder)
    with app_client(tmp_path / "index", app_encoder) as client:
        response = client.post("/search", json={**STROKES, "category": unicodedata.normalize("NFC", nfd)})
        assert response.status_code == 200, response.text
        assert {photo["category"] for photo in response.json()["results"]} == {nfd}


def test_k_and_category_in_the_query_string_apply_to_json_bodies_too(client):
    response = client.post("/search?k=2&category=boat", json=STROKES)
    assert response.status_code == 200, response.text
    assert response.json()["k"] == 2 and {p["category"] for p in response.json()["results"]} == {"boat"}
    assert client.post("/search?k=2", json={**STROKES, "k": 3}).json()["k"] == 3  # the body wins


@pytest.mark.parametrize("k", [1e308, "9" * 4000])
def test_an_absurd_k_is_refused_without_echoing_it(client, k):
    response = client.post("/search", json={**STROKES, "k": k})
    assert response.status_code == 422 and response.json()["error"] == "bad_k"
    assert len(response.text) < 200


@pytest.mark.parametrize("path", ["/", "/healthz", "/readyz", "/photos/0", "/photos/0?size=32"])
def test_head_works_wherever_get_does(client, path):
    """Uptime monitors and link checkers send HEAD; it was 405 everywhere."""
    response = client.head(path)
    assert response.status_code == 200 and not response.content
    assert response.headers["content-type"] == client.get(path).headers["content-type"]


def test_a_sketch_file_takes_precedence_over_a_strokes_field(client):
    response = client.post("/search", files={"sketch": ("a.png", sketch_png(), "image/png")},
                           data={"strokes": json.dumps(STROKES)})
    assert_found(response, "image")


@pytest.mark.parametrize(("data", "words"), [
    (b"\x00\x00\x00\x18ftyphevc\x00\x00\x00\x00msf1hevc" + b"\x00" * 64, "video"),
    (b"%PDF-1.7\n", "PDF"),
    (b"\x00\x00\x01\x00\x01\x00" + b"\x00" * 64, "ICO"),
])
def test_a_refused_file_of_a_common_kind_is_named(client, data, words):
    for response in (client.post("/search", files={"sketch": ("x", data)}),
                     client.post("/search", content=data, headers={"Content-Type": "image/png"})):
        assert response.status_code == 415 and words in response.json()["detail"], response.text


def test_thumbnails_of_16_bit_and_transparent_gallery_photos(tmp_path, app_encoder):
    """A 16-bit PNG in the gallery made GET /photos/{id}?size=N a 500 (Pillow cannot resize mode I;16)."""
    gallery = make_gallery(tmp_path / "gallery", per_category=1)
    gradient = np.tile(np.linspace(0, 65535, 400).astype(np.uint16), (300, 1))
    Image.fromarray(gradient).save(gallery / "boat" / "deep.png")
    Image.new("RGBA", (40, 30), (0, 0, 0, 0)).save(gallery / "boat" / "clear.png")
    build_index(gallery, tmp_path / "index", app_encoder)
    with app_client(tmp_path / "index", app_encoder) as client:
        results = client.post("/search", json={**STROKES, "k": 4}).json()["results"]
        assert len(results) == 4  # both odd photos were indexed
        for result in results:
            response = client.get(f"/photos/{result['id']}?size=64")
            assert response.status_code == 200, response.text
            Image.open(io.BytesIO(response.content)).verify()
