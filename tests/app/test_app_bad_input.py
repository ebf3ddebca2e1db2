"""Every class of bad /search input is refused with the right status and a clear message, never a 5xx."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.app.support import STROKES, app_client, sketch_png
from tests.imagegen import png_declaring

SECRET = "s3cret-key-do-not-echo"




def upload(client, data: bytes, name: str = "sketch.png", **form):
    return client.post("/search", files={"sketch": (name, data, "image/png")}, data=form)


def assert_refused(response, status: int, code: str, words: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and body["detail"]
    assert words.lower() in body["detail"].lower()
    assert "/tmp" not in response.text and "Traceback" not in response.text and SECRET not in response.text


@pytest.fixture()
def strict_client(app_index, app_encoder):
    """Small limits so the limits themselves can be tested cheaply."""
    with app_client(app_index[1], app_encoder, max_upload_bytes=64 * 1024, max_image_pixels=1_000_000,
                    max_stroke_points=100, max_k=20) as client:
        yield client


def test_body_over_the_declared_limit_is_413(strict_client):
    assert_refused(upload(strict_client, b"\x89PNG\r\n\x1a\n" + b"0" * 70_000), 413, "request_too_large", "limit")


def test_body_over_the_limit_is_413_while_streaming_without_content_length(strict_client):
    def chunks():
        for _ in range(100):
            yield b"x" * 4096
    response = strict_client.post("/search", content=chunks(), headers={"Content-Type": "image/png"})
    assert_refused(response, 413, "request_too_large")


@pytest.mark.parametrize("data", [b"%PDF-1.7 not an image", b"hello world", b"PK\x03\x04zip", b"<html><svg></svg>"])
def test_non_image_file_is_415_whatever_its_declared_type(client, data):
    assert_refused(upload(client, data), 415, "unsupported_type", "PNG")


def test_unsupported_request_content_type_is_415(client):
    assert_refused(client.post("/search", content=b"a sketch", headers={"Content-Type": "text/plain"}),
                   415, "unsupported_type")


def test_empty_upload_is_422(client):
    assert_refused(upload(client, b""), 422, "bad_image", "empty")


def test_truncated_image_is_422(client):
    assert_refused(upload(client, sketch_png()[:200]), 422, "bad_image")


def test_corrupt_image_with_a_valid_signature_is_422(client):
    assert_refused(upload(client, b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4), 422, "bad_image")


def test_decompression_bomb_is_refused_before_decoding(client):
    assert_refused(upload(client, png_declaring(100_000, 100_000)), 413, "image_too_large", "limit")


def test_image_over_the_pixel_limit_is_413(strict_client):
    out = io.BytesIO()
    Image.new("L", (1200, 1000), 255).save(out, "PNG")
    assert_refused(upload(strict_client, out.getvalue()), 413, "image_too_large", "1,000,000")


def test_blank_image_is_422(client):
    out = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(out, "PNG")
    assert_refused(upload(client, out.getvalue()), 422, "empty_sketch", "blank")


@pytest.mark.parametrize("payload, code, words", [
    ({"strokes": []}, "bad_strokes", "no strokes"),
    ({"strokes": [[]]}, "bad_strokes", "no points"),
    ({"strokes": [[[5, 5], [5, 5]]]}, "bad_strokes", "degenerate"),
    ({"strokes": [[["a", 1], [2, 3]]]}, "bad_strokes", "numbers"),
    ({"strokes": [[[10**400, 1], [2, 3]]]}, "bad_strokes", "numbers"),
    ({"strokes": "circle"}, "bad_strokes", "must be a list of strokes"),
    ({"lines": [[[0, 0], [1, 1]]]}, "bad_strokes", '"strokes"'),
])
def test_bad_strokes_are_422(client, payload, code, words):
    assert_refused(client.post("/search", json=payload), 422, code, words)


@pytest.mark.parametrize("text", ['{"strokes": [[[NaN, 1], [2, 3]]]}', '{"strokes": [[[Infinity, 1], [2, 3]]]}',
                                  '{"strokes": [[[1e400, 1], [2, 3]]]}'])
def test_non_finite_coordinates_are_422(client, text):
    response = client.post("/search", content=text, headers={"Content-Type": "application/json"})
    assert_refused(response, 422, "bad_strokes", "non-finite")


@pytest.mark.parametrize("text", ["{not json", "[" * 100_000, "[1, 2]", '"strokes"'])
def test_malformed_json_is_422(client, text):
    response = client.post("/search", content=text, headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["error"] in ("bad_json", "bad_strokes")


@pytest.mark.parametrize("text", ["", " \n", "{}", '{"text": null}', '{"text_weight": 0.5, "k": 3}',
                                  '{"strokes": null, "drawing": null}'])
def test_json_with_nothing_to_search_by_is_a_missing_sketch_and_the_query_string_may_say_it(client, text):
    headers = {"Content-Type": "application/json"}
    assert_refused(client.post("/search", content=text, headers=headers), 422, "missing_sketch", '"text"')
    response = client.post("/search?text=a+boat&k=2", content=text, headers=headers)
    assert response.status_code == 200 and response.json()["query"] == "text", response.text


def test_too_many_points_is_413(strict_client):
    many = {"strokes": [[[i, i % 7] for i in range(150)]]}
    assert_refused(strict_client.post("/search", json=many), 413, "too_many_points", "100")


@pytest.mark.parametrize("k", [0, -1, 21, "abc", 2.5, True, None, 10**30])
def test_bad_k_is_422(strict_client, k):
    if k is None:  # k absent: the default is used
        assert strict_client.post("/search", json=STROKES).status_code == 200
        return
    assert_refused(strict_client.post("/search", json={**STROKES, "k": k}), 422, "bad_k", "k must")
    form = upload(strict_client, sketch_png(), k=str(k))
    assert_refused(form, 422, "bad_k")


def test_an_empty_body_is_a_missing_sketch_not_a_broken_image(client):
    for headers in ({}, {"content-type": "image/png"}, {"content-type": "application/octet-stream"}):
        assert_refused(client.post("/search", content=b"", headers=headers), 422, "missing_sketch")
    assert client.post("/search?text=apple", content=b"").status_code == 200


def test_a_category_whose_folder_name_has_outer_spaces_can_be_asked_for():
    """A query's category is trimmed: a folder " cat " could never be chosen; an exact name still wins."""
    from app.index_holder import _Loaded

    loaded = _Loaded(reader=None, categories=frozenset({" leading space", "cat", " cat "}))
    assert loaded.by_nfc["leading space"] == " leading space"
    assert loaded.by_nfc["cat"] == "cat"


@pytest.mark.parametrize("category", ["giraffe", "x" * 500, 7])
def test_unknown_category_is_422(client, category):
    assert_refused(client.post("/search", json={**STROKES, "category": category}), 422, "unknown_category")


def test_multipart_without_a_sketch_is_422(client):
    response = client.post("/search", data={"k": "3"}, files={"other": ("a.txt", b"x", "text/plain")})
    assert_refused(response, 422, "missing_sketch", "sketch")


def test_malformed_multipart_is_422(client):
    response = client.post("/search", content=b"--nope\r\ngarbage",
                           headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert response.status_code == 422 and response.json()["error"] in ("bad_multipart", "missing_sketch")


def test_a_multipart_form_cut_before_its_closing_boundary_is_422_bad_multipart(client):
    boundary = "cut-here"
    whole = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\na boat\r\n"
             f"--{boundary}--\r\n").encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    assert client.post("/search", content=whole, headers=headers).status_code == 200
    for cut in (whole[:-4], whole[: whole.index(b"a boat") + 3]):  # no closing "--"; cut inside the last part
        assert_refused(client.post("/search", content=cut, headers=headers), 422, "bad_multipart", "truncated")


def test_api_key_is_required_when_configured_and_never_echoed(app_index, app_encoder):
    with app_client(app_index[1], app_encoder, api_key=SECRET) as client:
        assert_refused(client.post("/search", json=STROKES), 401, "unauthorized", "X-API-Key")
        assert_refused(client.post("/search", json=STROKES, headers={"X-API-Key": "wrong"}), 401, "unauthorized")
        assert client.post("/search", json=STROKES, headers={"X-API-Key": SECRET}).status_code == 200
        assert client.get("/healthz").status_code == 200
        info = client.get("/info")
        assert info.json()["api_key_required"] is True and SECRET not in info.text


def test_cors_allows_only_listed_origins(app_index, app_encoder):
    with app_client(app_index[1], app_encoder, cors_origins="https://ok.example, https://also.example") as client:
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "X-API-Key"}
        allowed = client.options("/search", headers={"Origin": "https://ok.example", **preflight})
        assert allowed.headers.get("access-control-allow-origin") == "https://ok.example"
        denied = client.options("/search", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in denied.headers


def test_random_garbage_never_causes_a_server_error(client):
    rng = np.random.default_rng(0)
    content_types = ["image/png", "application/json", "multipart/form-data; boundary=b", "application/octet-stream"]
    prefixes = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"RIFF\0\0\0\0WEBP", b"{", b'{"strokes":[[']
    for i in range(48):
        body = prefixes[i % len(prefixes)] + rng.bytes(int(rng.integers(0, 600)))
        response = client.post("/search", content=body, headers={"Content-Type": content_types[i % 4]})
        assert response.status_code < 500, (body[:40], response.text)
    fuzzed = json.dumps({"strokes": [[[float(x), float(y)] for x, y in rng.normal(0, 1e6, (5, 2))]]})
    assert client.post("/search", content=fuzzed, headers={"Content-Type": "application/json"}).status_code < 500


@pytest.mark.parametrize("size", [(10, 2_000_000), (1_000_000, 1), (1, 40_000)])
def test_a_photo_of_extreme_shape_is_searched_not_blown_up(client, size):
    data = io.BytesIO()
    Image.new("L", size, 128).save(data, "PNG")  # a few KB, under the pixel limit; resized whole it was gigabytes
    response = client.post("/search?as=photo", content=data.getvalue(), headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    assert response.json()["results"]


@pytest.mark.parametrize("body", [
    '{"strokes": [[[' + "9" * 4301 + ", 0], [1, 1]]]}",  # past Python's 4300-digit limit for reading an int
    '{"text": "cat", "k": ' + "1" * 5000 + "}",
])
def test_a_json_number_too_long_to_read_is_422(client, body):
    response = client.post("/search", content=body, headers={"Content-Type": "application/json"})
    assert_refused(response, 422, "bad_json", "too long")


def test_an_index_server_refusing_a_search_is_a_502_with_its_reason_in_the_log(client, monkeypatch, caplog):
    """Milvus refusing a read (BuildError from its client) was an 'internal' 500; the reason goes to the log only
    (it names the server and the collection)."""
    from photo_index import BuildError

    with client.app.state.services.index.lease() as reader:
        kind = type(reader)

    def refuse(*args, **kwargs):
        raise BuildError("Milvus at http://10.0.0.5:19530 refused search: invalid expression")

    monkeypatch.setattr(kind, "search", refuse)
    response = client.post("/search", json=STROKES)
    assert_refused(response, 502, "index_refused", "refused")
    assert "10.0.0.5" not in response.text and "invalid expression" in caplog.text
