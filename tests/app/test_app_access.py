"""API keys and signed photo URLs: every route with and without a key, tampering, expiry, rotation, start-up."""

from __future__ import annotations

import hmac
import time
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from app.__main__ import main as app_main
from app.access import MIN_KEY_LENGTH, Access
from app.settings import Settings
from tests.app.support import STROKES, app_client

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-fedcba9876543210"
WRONG = "key-x-not-a-valid-key-at-all"
PHOTO_COUNT = 8  # the session gallery (tests/app/conftest.py)


@pytest.fixture(scope="module")
def open_client(app_index, app_encoder):
    with app_client(app_index[1], app_encoder) as client:
        yield client


@pytest.fixture(scope="module")
def locked(app_index, app_encoder):
    """A service with two keys (SBIR_API_KEY and SBIR_API_KEYS)."""
    with app_client(app_index[1], app_encoder, api_key=KEY_A, api_keys=f" {KEY_B} ,") as client:
        yield client


def search(client, key: str | None = KEY_A, **body):
    headers = {"X-API-Key": key} if key else {}
    return client.post("/search", json={**STROKES, **body}, headers=headers)


def results(client, key: str = KEY_A, k: int = 1) -> list[dict]:
    response = search(client, key, k=k)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def with_params(url: str, **changes) -> str:
    """`url` with query parameters changed (None removes one)."""
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    for name, value in changes.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = str(value)
    return f"{parts.path}?{urlencode(params)}"


def assert_unauthorized(response) -> None:
    assert response.status_code == 401, (response.status_code, response.headers.get("content-type"))
    assert response.headers["content-type"].startswith("application/json") or not response.content
    assert response.headers["cache-control"] == "no-store"
    if response.content:
        assert response.json()["error"] == "unauthorized" and KEY_A not in response.text


# (method, path, status when open, with a key configured but not sent, with the key sent)
ROUTES = [
    ("GET", "/", 200, 200, 200),
    ("HEAD", "/", 200, 200, 200),
    ("GET", "/static/app.js", 200, 200, 200),
    ("GET", "/healthz", 200, 200, 200),
    ("HEAD", "/healthz", 200, 200, 200),
    ("GET", "/readyz", 200, 200, 200),
    ("HEAD", "/readyz", 200, 200, 200),
    ("GET", "/metrics", 200, 200, 200),
    ("GET", "/docs", 200, 200, 200),
    ("GET", "/openapi.json", 200, 200, 200),
    ("GET", "/info", 200, 200, 200),  # without the key: only that one is needed (test below)
    ("POST", "/search", 200, 401, 200),
    ("GET", "/photos/0", 200, 401, 200),
    ("HEAD", "/photos/0", 200, 401, 200),
    ("GET", "/photos/0?size=32", 200, 401, 200),
    ("GET", f"/photos/{PHOTO_COUNT + 5}", 404, 401, 404),  # no key: not even which ids exist
]


@pytest.mark.parametrize(("method", "path", "open_status", "no_key_status", "key_status"), ROUTES,
                         ids=[f"{r[0]} {r[1]}" for r in ROUTES])
def test_every_route_with_and_without_a_key(open_client, locked, method, path, open_status, no_key_status,
                                            key_status):
    body = {"json": STROKES} if method == "POST" else {}
    assert open_client.request(method, path, **body).status_code == open_status
    assert locked.request(method, path, **body).status_code == no_key_status
    assert locked.request(method, path, headers={"X-API-Key": WRONG}, **body).status_code == no_key_status
    for key in (KEY_A, KEY_B):
        assert locked.request(method, path, headers={"X-API-Key": key}, **body).status_code == key_status


def test_info_without_the_key_says_only_that_one_is_needed(open_client, locked):
    for headers in ({}, {"X-API-Key": WRONG}):
        info = locked.get("/info", headers=headers).json()
        assert set(info) == {"api_key_required", "authorized", "detail"}
        assert info["api_key_required"] is True and info["authorized"] is False and "X-API-Key" in info["detail"]
    full = locked.get("/info", headers={"X-API-Key": KEY_B}).json()
    assert full["authorized"] is True and full["api_key_required"] is True
    assert full["categories"] and full["index_size"] == PHOTO_COUNT and full["fingerprint"]
    opened = open_client.get("/info").json()
    assert opened["authorized"] is True and opened["api_key_required"] is False and opened["categories"]


def test_a_loop_over_ids_without_a_key_gets_no_photo(locked):
    etag = locked.get("/photos/0", headers={"X-API-Key": KEY_A}).headers["etag"]
    fake = {"exp": str(int(time.time()) + 3600), "sig": "A" * 43}
    for photo_id in range(PHOTO_COUNT + 4):
        for query in ("", "?size=64", "?" + urlencode(fake), "?size=64&" + urlencode(fake)):
            for method in ("GET", "HEAD"):
                assert_unauthorized(locked.request(method, f"/photos/{photo_id}{query}"))
        # a cache validator does not turn into a 304 either
        assert_unauthorized(locked.get(f"/photos/{photo_id}", headers={"If-None-Match": etag}))


def test_signed_urls_from_a_search_serve_photos_privately(locked):
    for photo in results(locked, KEY_B, k=3):
        for url, kind in ((photo["url"], None), (photo["thumbnail_url"], "256")):
            params = dict(parse_qsl(urlsplit(url).query))
            assert {"v", "exp", "sig"} <= set(params) and params.get("size") == kind
            response = locked.get(url)  # no header: the signature alone
            assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
            cache = response.headers["cache-control"]
            assert cache.startswith("private, max-age=") and "public" not in cache and "immutable" not in cache
            assert 0 < int(cache.rsplit("=", 1)[1]) <= 3600 + 300  # never longer than the signature lives
            again = locked.get(url, headers={"If-None-Match": response.headers["etag"]})
            assert again.status_code == 304 and again.headers["cache-control"].startswith("private")


def test_a_key_header_also_serves_photos_privately(locked):
    response = locked.get("/photos/0?size=32", headers={"X-API-Key": KEY_A})
    assert response.status_code == 200 and response.headers["cache-control"] == "private, max-age=300"


def test_open_service_urls_and_caching_are_unchanged(open_client):
    photo = results(open_client, key=None)[0]
    assert "sig=" not in photo["url"] and "exp=" not in photo["thumbnail_url"]
    assert "public" in open_client.get(photo["url"]).headers["cache-control"]


def test_a_signed_url_fails_when_any_parameter_is_altered(locked):
    photo = results(locked)[0]
    full, thumb = photo["url"], photo["thumbnail_url"]
    params = dict(parse_qsl(urlsplit(thumb).query))
    other_id = (photo["id"] + 1) % PHOTO_COUNT
    sig, exp = params["sig"], int(params["exp"])
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    altered = [
        thumb.replace(f"/photos/{photo['id']}?", f"/photos/{other_id}?"),  # another photo
        with_params(thumb, size=128), with_params(thumb, size=None),  # another size, or the full photo
        with_params(full, size=256),  # a thumbnail from the full photo's signature
        with_params(thumb, exp=exp + 1), with_params(thumb, exp=exp - 1), with_params(thumb, exp=exp * 10),
        with_params(thumb, exp=f"{exp}.0"), with_params(thumb, exp="-1"), with_params(thumb, exp="²"),
        with_params(thumb, v="0" * 16), with_params(thumb, v=None),
        with_params(thumb, sig=flipped), with_params(thumb, sig=sig[:-1]), with_params(thumb, sig=sig + "A"),
        with_params(thumb, sig=sig.lower() if sig != sig.lower() else sig.upper()), with_params(thumb, sig=""),
        with_params(thumb, sig="é" * 43), with_params(thumb, sig="A" * 5000),
        with_params(thumb, sig=None), with_params(thumb, exp=None), with_params(thumb, sig=None, exp=None),
    ]
    for url in altered:
        assert_unauthorized(locked.get(url))
    assert locked.get(thumb).status_code == 200 and locked.get(full).status_code == 200  # the originals work


def test_signed_urls_expire(app_index, app_encoder):
    with app_client(app_index[1], app_encoder, api_key=KEY_A, photo_url_ttl_s=1) as client:
        url = results(client)[0]["thumbnail_url"]
        expires = int(dict(parse_qsl(urlsplit(url).query))["exp"])
        assert client.get(url).status_code == 200
        time.sleep(max(0.0, expires - time.time()) + 0.05)
        assert_unauthorized(client.get(url))
        assert client.get(url, headers={"X-API-Key": KEY_A}).status_code == 200  # the key still works


def test_expiry_boundary_and_url_reuse_with_a_fixed_clock():
    now = [1_000_000.0]
    access = Access([KEY_A], url_ttl_s=3600, clock=lambda: now[0])
    url = access.photo_url(3, 256, "abcd")
    assert url == access.photo_url(3, 256, "abcd")  # same URL within a step: the browser cache works
    params = dict(parse_qsl(urlsplit(url).query))
    expires = int(params["exp"])
    assert 3600 <= expires - now[0] <= 3600 + access.step_s
    now[0] = expires - 1
    assert access.signed_seconds_left(3, 256, "abcd", params["exp"], params["sig"]) == 1
    now[0] = expires
    assert access.signed_seconds_left(3, 256, "abcd", params["exp"], params["sig"]) is None


def test_two_keys_work_and_a_removed_key_stops_working_after_a_restart(app_index, app_encoder, monkeypatch):
    monkeypatch.setenv("SBIR_API_KEYS", f"{KEY_A},{KEY_B}")
    with app_client(app_index[1], app_encoder) as before:  # settings read from the environment at start
        for key in (KEY_A, KEY_B):
            assert search(before, key).status_code == 200
            assert before.get("/photos/0", headers={"X-API-Key": key}).status_code == 200
        url = results(before, KEY_B)[0]["thumbnail_url"]
        assert before.get(url).status_code == 200
    monkeypatch.setenv("SBIR_API_KEYS", KEY_A)  # KEY_B rotated out
    with app_client(app_index[1], app_encoder) as after:
        assert_unauthorized(search(after, KEY_B))
        assert_unauthorized(after.get("/photos/0", headers={"X-API-Key": KEY_B}))
        assert after.get("/info", headers={"X-API-Key": KEY_B}).json()["authorized"] is False
        assert_unauthorized(after.get(url))  # the secret derived from the key set changed with it
        assert search(after, KEY_A).status_code == 200


def test_a_configured_url_secret_keeps_signed_urls_across_a_key_rotation(app_index, app_encoder):
    secret = "url-secret-0123456789abcdef"
    with app_client(app_index[1], app_encoder, api_keys=f"{KEY_A},{KEY_B}", url_secret=secret) as before:
        url = results(before, KEY_A)[0]["thumbnail_url"]
    with app_client(app_index[1], app_encoder, api_keys=KEY_A, url_secret=secret) as after:
        assert after.get(url).status_code == 200
    with app_client(app_index[1], app_encoder, api_keys=KEY_A, url_secret=secret[::-1]) as other:
        assert_unauthorized(other.get(url))


def test_keys_and_signatures_are_compared_with_compare_digest(locked, monkeypatch):
    """Constant time: every check goes through hmac.compare_digest, on SHA-256 digests of equal length, so
    neither a matching prefix of a wrong signature or key nor its length changes what is compared."""
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr("app.access.hmac.compare_digest", spy)
    thumb = results(locked)[0]["thumbnail_url"]
    sig = dict(parse_qsl(urlsplit(thumb).query))["sig"]
    # the key header against both keys (no early exit), by the body guard (before a body slot) and the route
    assert calls == [(32, 32), (32, 32)] * 2
    for wrong in (sig[:-1] + "x", "x" + sig[1:], sig[:10], sig * 2):
        calls.clear()
        assert_unauthorized(locked.get(with_params(thumb, sig=wrong)))
        assert calls[0] == (32, 32)  # the signature check, whatever the wrong signature looks like
    calls.clear()
    assert locked.get(thumb).status_code == 200 and calls == [(32, 32)]


def test_metrics_can_require_the_key(app_index, app_encoder):
    with app_client(app_index[1], app_encoder, api_key=KEY_A, metrics_require_key=True) as client:
        assert_unauthorized(client.get("/metrics"))
        assert_unauthorized(client.get("/metrics", headers={"X-API-Key": WRONG}))
        assert client.get("/metrics", headers={"X-API-Key": KEY_A}).status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200


def test_metrics_behind_admin_keys_alone_need_an_admin_key(app_index, app_encoder):
    # Only admin keys configured: /metrics with SBIR_METRICS_REQUIRE_KEY was open to anyone.
    with app_client(app_index[1], app_encoder, admin_keys=KEY_B, metrics_require_key=True) as client:
        assert_unauthorized(client.get("/metrics"))
        assert_unauthorized(client.get("/metrics", headers={"X-API-Key": WRONG}))
        assert client.get("/metrics", headers={"X-API-Key": KEY_B}).status_code == 200
    with app_client(app_index[1], app_encoder, api_key=KEY_A, admin_keys=KEY_B, metrics_require_key=True) as client:
        assert all(client.get("/metrics", headers={"X-API-Key": key}).status_code == 200 for key in (KEY_A, KEY_B))


def test_metrics_require_key_without_any_key_is_refused_at_start_up(monkeypatch):
    monkeypatch.setenv("SBIR_METRICS_REQUIRE_KEY", "true")
    with pytest.raises(ValueError, match="SBIR_METRICS_REQUIRE_KEY is set but no key is configured"):
        Settings()


@pytest.mark.parametrize("variable", ["SBIR_API_KEY", "SBIR_API_KEYS", "SBIR_ADMIN_KEYS"])
@pytest.mark.parametrize("key", ["ключ-ключ-ключ-ключ-1", "key-with-é-0123456789", "key-with-tab\t0123456789"])
def test_a_key_an_http_header_cannot_carry_is_refused_at_start_up(monkeypatch, variable, key):
    # The header is read as Latin-1 bytes, the key was hashed as UTF-8: it started, and then never matched.
    monkeypatch.setenv(variable, key)
    with pytest.raises(ValueError, match="outside printable ASCII"):
        Settings()


def test_a_url_secret_may_hold_any_characters(monkeypatch):
    monkeypatch.setenv("SBIR_API_KEY", KEY_A)
    monkeypatch.setenv("SBIR_URL_SECRET", "секрет-секрет-секрет-секрет")
    assert Settings().url_secret is not None


@pytest.mark.parametrize("variable, value", [
    ("SBIR_API_KEY", "abc123xyz"), ("SBIR_API_KEYS", f"{KEY_A},tiny"), ("SBIR_URL_SECRET", "x" * (MIN_KEY_LENGTH - 1)),
])
def test_a_short_key_is_refused_at_start_up_with_a_clear_message(monkeypatch, capsys, tmp_path, variable, value):
    monkeypatch.setenv(variable, value)
    if variable == "SBIR_URL_SECRET":
        monkeypatch.setenv("SBIR_API_KEY", KEY_A)
    with pytest.raises(ValueError, match=f"shorter than {MIN_KEY_LENGTH} characters"):
        Settings()
    assert app_main(["--index-dir", str(tmp_path)]) == 2  # before any model is loaded
    err = capsys.readouterr().err
    assert variable in err and f"shorter than {MIN_KEY_LENGTH}" in err and "secrets.token_urlsafe" in err
    assert value.split(",")[-1] not in err  # the refused key is not printed


def test_keys_are_read_from_both_variables(monkeypatch):
    monkeypatch.setenv("SBIR_API_KEY", KEY_A)
    monkeypatch.setenv("SBIR_API_KEYS", f"{KEY_B}, {KEY_A} ,,")
    settings = Settings()
    assert settings.api_key_list == [KEY_A, KEY_B, KEY_A] and KEY_B not in repr(settings)
    access = Access.from_settings(settings)
    assert access.key_ok(KEY_A) and access.key_ok(KEY_B) and not access.key_ok(WRONG) and not access.key_ok(None)
    assert Access([]).key_ok(None) and not Access([]).required
