"""Every endpoint of the service, against a real index built by index_builder."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from tests.app.support import CATEGORIES, STROKES, app_client, sketch_png
from tests.imagegen import draw_sketch


def test_healthz_is_alive(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_reports_model_and_index_version(client, app_index):
    body = client.get("/readyz").json()
    assert body["ready"] and body["model_loaded"] and body["index_loaded"]
    assert body["index_version"] and body["index_size"] == 8


def test_readyz_and_search_say_503_without_an_index(tmp_path, app_encoder):
    with app_client(tmp_path / "nothing-here", app_encoder) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["index_loaded"] is False
        assert "no index" in ready.json()["detail"].lower()
        search = client.post("/search", json=STROKES)
        assert search.status_code == 503 and search.json()["error"] == "not_ready"
        assert str(tmp_path) not in search.text + ready.text


def test_info_names_encoder_index_and_warns_about_random_weights(client, app_encoder):
    info = client.get("/info").json()
    assert info["fingerprint"] == app_encoder.fingerprint()
    assert info["encoder"]["config"]["backbone"] == "sbir-tiny"
    assert info["random_weights"] is True and "meaningless" in info["warning"]
    assert info["index_size"] == 8 and info["index_version"]
    assert info["categories"] == sorted(CATEGORIES)
    assert info["device"] == "cpu" and info["api_key_required"] is False


def test_search_with_strokes_returns_ranked_photos_and_timings(client):
    body = client.post("/search", json={**STROKES, "k": 5}).json()
    assert body["input"] == "strokes" and body["k"] == 5 and len(body["results"]) == 5
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert len({r["id"] for r in body["results"]}) == 5
    first = body["results"][0]
    assert first["category"] in CATEGORIES
    assert re.fullmatch(r"/photos/\d+\?v=[0-9a-f]{16}", first["url"])
    assert "size=" in first["thumbnail_url"]
    assert {"read", "decode", "queue", "encode", "search", "metadata", "total"} <= set(body["timings_ms"])
    assert body["batch_size"] >= 1 and body["index_version"] == client.get("/readyz").json()["index_version"]


def test_search_accepts_quickdraw_strokes(client):
    drawing = {"drawing": [[[0, 50, 100], [0, 80, 10]], [[20, 90], [60, 60]]], "k": 3}
    assert len(client.post("/search", json=drawing).json()["results"]) == 3


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_search_with_an_uploaded_image_of_every_type(client, fmt):
    out = io.BytesIO()
    draw_sketch().convert("RGB" if fmt == "JPEG" else "L").save(out, fmt)
    # The declared type is deliberately wrong: the content decides.
    response = client.post("/search", files={"sketch": ("x.bin", out.getvalue(), "text/plain")}, data={"k": "4"})
    assert response.status_code == 200, response.text
    assert response.json()["input"] == "image" and len(response.json()["results"]) == 4


def test_search_with_a_raw_image_body_and_query_parameters(client):
    response = client.post("/search?k=2", content=sketch_png(), headers={"Content-Type": "image/png"})
    assert response.status_code == 200 and len(response.json()["results"]) == 2


def test_search_with_strokes_as_a_form_field(client):
    import json

    response = client.post("/search", data={"strokes": json.dumps(STROKES), "k": "3"},
                           files={"unused": ("a.txt", b"x", "text/plain")})
    assert response.status_code == 200 and response.json()["input"] == "strokes"
    # the field names what it holds: the strokes alone (a bare list) are read too, urlencoded or multipart
    bare = json.dumps(STROKES["strokes"])
    for files in (None, {"unused": ("a.txt", b"x", "text/plain")}):
        answer = client.post("/search", data={"strokes": bare, "k": "3"}, files=files)
        assert answer.status_code == 200 and answer.json()["results"] == response.json()["results"], answer.text


def test_category_filter_returns_only_that_category(client):
    body = client.post("/search", json={**STROKES, "k": 10, "category": "boat"}).json()
    assert body["results"] and {r["category"] for r in body["results"]} == {"boat"}
    assert len(body["results"]) == 4  # only 4 boats exist: k larger than the category is fine


def test_photo_is_served_with_cache_headers_and_etag(client):
    first = client.post("/search", json={**STROKES, "k": 1}).json()["results"][0]
    response = client.get(first["url"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(response.content)).size == (96, 72)
    assert "immutable" in response.headers["cache-control"]
    again = client.get(first["url"], headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304
    untagged = client.get(f"/photos/{first['id']}")
    assert untagged.status_code == 200 and "immutable" not in untagged.headers["cache-control"]
    tag = first["url"].split("v=")[1]
    for partial in ("", tag[:1], tag[:8]):  # only the tag results carry marks a URL as never changing
        shorter = client.get(f"/photos/{first['id']}?v={partial}")
        assert shorter.status_code == 200 and "immutable" not in shorter.headers["cache-control"], partial


def test_photo_byte_ranges_and_a_range_header_that_cannot_be_read_is_ignored(client):
    photo_id = client.post("/search", json={**STROKES, "k": 1}).json()["results"][0]["id"]
    whole = client.get(f"/photos/{photo_id}").content
    part = client.get(f"/photos/{photo_id}", headers={"Range": "bytes=2-9"})
    assert part.status_code == 206 and part.content == whole[2:10]
    for unreadable in ("bytes=9-2", "garbage", "bytes=", "items=0-5"):  # RFC 9110 14.2: ignored, the whole file
        response = client.get(f"/photos/{photo_id}", headers={"Range": unreadable})
        assert (response.status_code, response.content) == (200, whole), unreadable
    beyond = client.get(f"/photos/{photo_id}", headers={"Range": f"bytes={len(whole) + 10}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(whole)}"
    assert beyond.json()["error"] == "range_not_satisfiable"  # the API's error shape (it was empty text)


def test_thumbnail_fits_the_requested_size(client):
    photo_id = client.post("/search", json={**STROKES, "k": 1}).json()["results"][0]["id"]
    response = client.get(f"/photos/{photo_id}?size=32")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(response.content)).size) == 32
    assert client.get(f"/photos/{photo_id}?size=32").content == response.content  # cached copy


@pytest.mark.parametrize("path, status", [
    ("/photos/999999", 404), ("/photos/abc", 422), ("/photos/-1", 422), ("/photos/99999999999999999999999", 422),
    ("/photos/0?size=5000", 422), ("/photos/0?size=0", 422), ("/photos/..%2F..%2Fetc%2Fpasswd", 404),
])
def test_bad_photo_requests_are_refused(client, path, status):
    response = client.get(path)
    assert response.status_code == status and "detail" in response.json()


def test_photos_outside_the_configured_gallery_root_are_not_served(app_index, app_encoder):
    gallery, index_dir = app_index
    with app_client(index_dir, app_encoder, gallery_root=gallery / "apple") as client:
        results = client.post("/search", json={**STROKES, "k": 8}).json()["results"]
        by_category = {c: [r for r in results if r["category"] == c] for c in CATEGORIES}
        assert client.get(by_category["apple"][0]["url"]).status_code == 200
        refused = client.get(by_category["boat"][0]["url"])
        assert refused.status_code == 404 and str(gallery) not in refused.text


def test_metrics_expose_stages_batches_queue_index_and_errors(client):
    client.post("/search", json=STROKES)
    client.post("/search", json={**STROKES, "k": 0})
    text = client.get("/metrics").text
    for name in ('sbir_stage_seconds_bucket{le="0.001",stage="encode"}', "sbir_batch_size_count",
                 "sbir_queue_depth", "sbir_index_size 8.0", "sbir_index_version_info{version=",
                 'sbir_errors_total{type="bad_k"} 1.0', 'sbir_searches_total{input="strokes"}'):
        assert name in text, name


def test_page_is_served_without_any_external_resource(client):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        response = client.get(asset)
        assert response.status_code == 200
        assert not re.search(r"https?://", response.text), f"{asset} must not load anything from the network"
    assert not re.search(r"(src|href)=\"https?://", page.text)


def test_openapi_documents_every_endpoint(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/search", "/photos/{photo_id}", "/healthz", "/readyz", "/info", "/metrics"} <= set(paths)
    assert {"application/json", "multipart/form-data"} <= set(paths["/search"]["post"]["requestBody"]["content"])


def test_a_json_text_query_with_a_field_the_api_does_not_know_names_that_field(client):
    # It was read as strokes of some other format: "Strokes must be a JSON object with a strokes or drawing field".
    response = client.post("/search", json={"text": "cat", "tetx": 1})
    assert response.status_code == 422 and response.json()["error"] == "unknown_field"
    assert "'tetx'" in response.json()["detail"]
    assert client.post("/search", json={"foo": 1}).json()["error"] == "bad_strokes"  # no query of its own: strokes
