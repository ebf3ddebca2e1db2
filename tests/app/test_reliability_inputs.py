"""Strict inputs (issue 19, items 2 and 3): a key setting that holds no key stops the service; numbers in photo
URLs, ids and k are accepted only in their canonical spelling; booleans are no coordinates; control characters
are no text; every refusal is the API's JSON error naming the field."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from app.__main__ import main
from app.access import Access
from app.settings import Settings
from tests.app.support import STROKES, app_client

KEY = "reliab-key-0123456789abcdef"


def refused(response, status: int, code: str, field: str) -> dict:
    """The API's error shape, naming the field."""
    assert response.status_code == status, response.text[:300]
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    assert field in body["detail"], body
    return body


# ---- item 2: a key setting present but holding no key ----------------------------------------------------------

@pytest.mark.parametrize("variable, value", [
    ("SBIR_API_KEY", " "), ("SBIR_API_KEY", ""), ("SBIR_API_KEYS", ",,,"), ("SBIR_API_KEYS", " , "),
    ("SBIR_URL_SECRET", "   "), ("SBIR_API_KEY", "Zq7-tiny"), ("SBIR_API_KEYS", f"{KEY},Zq7-tiny"),
])
def test_a_key_setting_without_a_usable_key_stops_the_start_with_one_line(monkeypatch, capsys, variable, value):
    import app.__main__ as entry

    started = []  # a service that got as far as serving (it must not)
    monkeypatch.setattr(entry.uvicorn, "run", lambda app, **options: started.append(app))
    monkeypatch.setenv(variable, value)
    assert main(["--port", "0", "--backbone", "sbir-tiny", "--pretrained", "none"]) == 2 and not started
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert variable in err and "Traceback" not in err and "pydantic" not in err and "validation error" not in err
    assert "Zq7" not in err and KEY not in err  # a refused key is never printed


def test_keys_beside_blank_list_entries_still_count(monkeypatch):
    monkeypatch.setenv("SBIR_API_KEYS", f" {KEY} ,, ")
    assert Settings().api_key_list == [KEY]


# ---- item 2: canonical numbers in signed URLs and ids -----------------------------------------------------------

def test_a_signature_holds_only_for_the_expiry_as_it_was_signed():
    access = Access([KEY], url_ttl_s=3600, clock=lambda: 1_000_000.0)
    query = dict(parse_qsl(urlsplit(access.photo_url(7, 128, "abc")).query))
    exp, sig = query["exp"], query["sig"]
    assert access.signed_seconds_left(7, 128, "abc", exp, sig) is not None
    for variant in ("0" + exp, " " + exp, "+" + exp, exp + " ", "".join(chr(0x660 + int(d)) for d in exp)):
        assert access.signed_seconds_left(7, 128, "abc", variant, sig) is None, variant


@pytest.fixture(scope="module")
def locked(app_index, app_encoder):
    with app_client(app_index[1], app_encoder, api_key=KEY, max_k=20) as client:
        yield client


def test_photo_ids_and_sizes_only_in_plain_digits(locked):
    result = locked.post("/search", json={**STROKES, "k": 1}, headers={"X-API-Key": KEY}).json()["results"][0]
    photo_id, url = result["id"], urlsplit(result["thumbnail_url"])
    query = dict(parse_qsl(url.query))
    assert locked.get(f"{url.path}?{url.query}").status_code == 200
    for spelling in (f"%20{photo_id}", f"+{photo_id}", f"0{photo_id}", f"{photo_id}%20"):
        refused(locked.get(f"/photos/{spelling}", headers={"X-API-Key": KEY}), 422, "invalid_request", "photo_id")
    for size in (f"0{query['size']}", f"+{query['size']}", f" {query['size']}"):
        refused(locked.get(f"{url.path}?{urlencode({**query, 'size': size})}"), 422, "invalid_request", "size")
    for exp in ("0" + query["exp"], "+" + query["exp"], " " + query["exp"]):
        refused(locked.get(f"{url.path}?{urlencode({**query, 'exp': exp})}"), 401, "unauthorized", "signed URL")


# ---- item 3: lenient inputs become strict -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def open_client(app_index, app_encoder):
    with app_client(app_index[1], app_encoder, max_k=20) as client:
        yield client


@pytest.mark.parametrize("strokes", [
    [[[True, False], [10, 20]]],  # plain points
    [[[0, 1], [True, 5]]],
    [[[10, 20, 30], [False, 5, 6]]],  # QuickDraw [[x...], [y...]]
    [[["10", "20"], [30, 40]]],  # strings are no numbers either
])
def test_booleans_and_strings_are_no_stroke_coordinates(open_client, strokes):
    refused(open_client.post("/search", json={"strokes": strokes}), 422, "bad_strokes", "numbers")


@pytest.mark.parametrize("text", ["boat\x00", "a\x1b[31mred", "bell\x07", "del\x7f", "c1\x85x", "sep\x1fx"])
def test_control_characters_in_the_text_are_refused_not_echoed(open_client, text):
    for response in (open_client.post("/search", json={"text": text}),
                     open_client.post("/search", data={"text": text}),
                     open_client.post(f"/search?{urlencode({'text': text})}")):
        body = refused(response, 422, "bad_text", "text")
        assert text not in body["detail"] and "U+" in body["detail"]


def test_tabs_and_line_breaks_in_the_text_are_still_spaces(open_client):
    assert open_client.post("/search", json={"text": "a\tboat\r\non water", "k": 2}).status_code == 200


@pytest.mark.parametrize("k", ["", "٣", " 3", "+3", "03", "3 ", "3.0", "1e1"])
def test_k_only_in_plain_digits_and_never_empty(open_client, k):
    for response in (open_client.post(f"/search?{urlencode({'k': k})}", json=STROKES),
                     open_client.post("/search", data={"k": k, "strokes": '{"strokes": [[[0, 0], [9, 9]]]}'}),
                     open_client.post("/search", json={**STROKES, "k": k})):
        refused(response, 422, "bad_k", "k ")


@pytest.mark.parametrize("like", ["٣", " 3", "+3", "03"])
def test_like_only_in_plain_digits(open_client, like):
    refused(open_client.post(f"/search?{urlencode({'like': like})}"), 422, "bad_like", "like")


def test_plain_numbers_still_work(open_client):
    assert open_client.post("/search?k=3", json=STROKES).json()["k"] == 3
    assert open_client.post("/search", json={**STROKES, "k": 3}).status_code == 200
    assert open_client.post("/search", json={**STROKES, "k": 3.0}).status_code == 200
