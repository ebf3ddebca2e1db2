"""Admin routes (SBIR_ADMIN_KEYS): key roles, photo uploads, and builds run in a child process, against the real
service on a loopback uvicorn."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import pytest
from pydantic import ValidationError
from sketch_search_client import AuthError, Client, ServiceError

from app.main import create_app
from app.settings import Settings
from tests.app.support import STROKES, TINY_ENV, app_client, build_index, make_gallery, serve
from tests.imagegen import random_photo

SEARCH_KEY = "admin-test-search-key"
ADMIN_KEY = "admin-test-admin-key-0"


def _jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    random_photo((80, 60), seed=seed).save(out, "JPEG")
    return out.getvalue()


def test_admin_and_search_keys_never_cross(app_index, app_encoder, tmp_path):
    with app_client(app_index[1], app_encoder, api_key=SEARCH_KEY, admin_keys=ADMIN_KEY) as client:
        search = {"X-API-Key": SEARCH_KEY}
        admin = {"X-API-Key": ADMIN_KEY}
        assert client.post("/search", json=STROKES, headers=search).status_code == 200
        as_search = client.post("/search", json=STROKES, headers=admin)
        assert as_search.status_code == 403 and as_search.json()["error"] == "wrong_key"
        for method in ("GET", "HEAD"):  # photos are a search key's too: an admin key is refused the same way
            assert client.request(method, "/photos/0", headers=search).status_code == 200
            assert client.request(method, "/photos/0?size=32", headers=admin).status_code == 403, method
        assert client.get("/photos/0", headers=admin).json()["error"] == "wrong_key"
        for path in ("/admin/query-sample", "/admin/builds", "/admin/photos"):
            as_admin = client.post(path, headers=search)
            assert as_admin.status_code == 403 and as_admin.json()["error"] == "wrong_key", path
            assert client.post(path).status_code == 401
            assert client.post(path, headers={"X-API-Key": "a-wrong-key-of-any-kind"}).status_code == 401
        assert client.post("/admin/query-sample", headers=admin).json()["error"] == "query_sample_off"
        # an admin key's upload is a body the slow-client guard lets through (it checks keys of both sets first)
        upload = client.post("/admin/photos", headers=admin, content=b"%PDF-1.4 not a photo")
        assert upload.status_code == 415, upload.text
        assert client.post("/admin/photos", headers=search, content=b"%PDF").json()["error"] == "wrong_key"
    with app_client(app_index[1], app_encoder, admin_keys=ADMIN_KEY) as client:  # an open search service
        assert client.post("/search", json=STROKES).status_code == 200
        assert client.post("/search", json=STROKES, headers={"X-API-Key": ADMIN_KEY}).status_code == 403
        assert client.get("/photos/0", headers={"X-API-Key": ADMIN_KEY}).status_code == 403
    with app_client(app_index[1], app_encoder, api_key=SEARCH_KEY) as client:  # no admin keys: admin is off
        off = client.post("/admin/builds", headers={"X-API-Key": SEARCH_KEY})
        assert off.status_code == 403 and "SBIR_ADMIN_KEYS" in off.json()["detail"]


def test_admin_keys_must_be_long_and_apart_from_the_search_keys():
    with pytest.raises(ValidationError, match="SBIR_ADMIN_KEYS is also a search key"):
        Settings(api_keys=f"other-search-key-1,{ADMIN_KEY}", admin_keys=ADMIN_KEY)
    with pytest.raises(ValidationError, match="key 2 of SBIR_ADMIN_KEYS is shorter"):
        Settings(admin_keys=f"{ADMIN_KEY},short")


@pytest.fixture()
def own_index(tmp_path, app_encoder):
    """A gallery and index of its own (the builds change them)."""
    gallery = make_gallery(tmp_path / "gallery")
    build_index(gallery, tmp_path / "index", app_encoder)
    return gallery, tmp_path / "index"


def _settings(gallery, index_dir, **more) -> Settings:
    return Settings(index_dir=index_dir, gallery_root=gallery, admin_keys=ADMIN_KEY, reload_interval_s=0.2,
                    backbone="sbir-tiny", pretrained="none", device="cpu", **more)


def test_uploads_are_checked_whole_and_stored_by_content_hash(own_index, app_encoder):
    gallery, index_dir = own_index
    with app_client(index_dir, app_encoder, gallery_root=gallery, admin_keys=ADMIN_KEY,
                    max_upload_bytes=64 * 1024) as client:
        key = {"X-API-Key": ADMIN_KEY}
        good, truncated = _jpeg(1), _jpeg(2)[:200]
        refused = client.post("/admin/photos", headers=key, files=[("a", ("a.jpg", good)), ("b", ("b.jpg", truncated))])
        assert refused.status_code == 422 and refused.json()["error"] == "bad_image"
        assert not (gallery / "uploads").exists()  # one bad photo: none stored
        assert client.post("/admin/photos", headers=key, content=b"%PDF-1.4 not a photo").status_code == 415
        big = client.post("/admin/photos", headers=key, content=b"\xff\xd8\xff" + bytes(70 * 1024))
        assert big.status_code == 413
        stored = client.post("/admin/photos", headers=key, files={"photo": ("../../escape.jpg", good)})
        assert stored.status_code == 201, stored.text
        (photo,) = stored.json()["photos"]
        assert photo["created"] and photo["path"] == f"uploads/{photo['sha256']}.jpg"
        assert (gallery / photo["path"]).read_bytes() == good
        again = client.post("/admin/photos", headers=key, content=good)  # a raw body; the same content
        assert again.json()["photos"][0] | {"created": True} == photo and not again.json()["photos"][0]["created"]
        assert sorted(p.name for p in (gallery / "uploads").iterdir()) == [f"{photo['sha256']}.jpg"]


def test_a_heic_photo_is_stored_as_heic(own_index, app_encoder):
    gallery, index_dir = own_index
    heic = io.BytesIO()
    random_photo((64, 48), seed=9).save(heic, "HEIF", quality=90)
    with app_client(index_dir, app_encoder, gallery_root=gallery, admin_keys=ADMIN_KEY) as client:
        stored = client.post("/admin/photos", headers={"X-API-Key": ADMIN_KEY},
                             files={"photo": ("IMG_0002.HEIC", heic.getvalue())})
    assert stored.status_code == 201, stored.text
    assert stored.json()["photos"][0]["path"].endswith(".heic")


def test_every_file_of_an_upload_is_stored_and_a_truncated_form_is_refused(own_index, app_encoder):
    gallery, index_dir = own_index
    with app_client(index_dir, app_encoder, gallery_root=gallery, admin_keys=ADMIN_KEY) as client:
        key = {"X-API-Key": ADMIN_KEY}
        photos = [_jpeg(seed) for seed in (11, 12, 13)]
        # one field name for every file, as the Python client and browsers' multiple-file inputs send them
        stored = client.post("/admin/photos", headers=key, files=[("photo", (f"{i}.jpg", data))
                                                                  for i, data in enumerate(photos)])
        assert stored.status_code == 201, stored.text
        assert len(stored.json()["photos"]) == 3 and len(list((gallery / "uploads").iterdir())) == 3

        boundary = "cut-here"
        parts = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"{i}.jpg\"\r\n"
                         f"Content-Type: image/jpeg\r\n\r\n".encode() + _jpeg(20 + i) + b"\r\n" for i in range(3))
        cut = parts[: -len(_jpeg(22)) // 2]  # the third photo cut off, and no closing boundary
        refused = client.post("/admin/photos", content=cut,
                              headers={**key, "Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert refused.status_code == 422 and refused.json()["error"] == "bad_multipart", refused.text
        assert "truncated" in refused.json()["detail"]
        assert len(list((gallery / "uploads").iterdir())) == 3  # nothing of the cut form stored


def _hold_build_lock(index_dir) -> subprocess.Popen:
    """Another process holding the index folder's build lock, as a CLI build does (index_builder.layout)."""
    code = ("import fcntl, sys; h = open(sys.argv[1], 'a+'); fcntl.lockf(h.fileno(), fcntl.LOCK_EX); "
            "print('locked', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(index_dir / ".lock")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def _wait(client: Client, build_id: str, timeout_s: float = 240):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.build_status(build_id)
        if status.done:
            return status
        time.sleep(0.2)
    raise AssertionError(f"build {build_id} did not finish in {timeout_s} s")


@pytest.mark.slow
def test_an_uploaded_photo_becomes_searchable_after_a_build_started_through_the_api(own_index, app_encoder,
                                                                                     monkeypatch):
    gallery, index_dir = own_index
    for name, value in TINY_ENV.items():
        monkeypatch.setenv(name, value)
    app = create_app(_settings(gallery, index_dir), encoder=app_encoder)
    with serve(app) as base, Client(base, api_key=ADMIN_KEY) as admin, Client(base) as user:
        before = user.info().index_version
        (photo,) = admin.upload_photos([_jpeg(7)])
        holder = _hold_build_lock(index_dir)
        try:
            with pytest.raises(ServiceError) as busy:
                admin.start_build()
            assert (busy.value.status, busy.value.code) == (409, "build_running")
        finally:
            holder.stdin.close()
            holder.wait(10)
        build = admin.start_build()
        with pytest.raises(ServiceError) as second:
            admin.start_build()
        assert second.value.code == "build_running" and build in second.value.detail
        status = _wait(admin, build)
        assert status.state == "finished", status
        assert status.result["added"] == 1 and status.result["size"] == 9 and status.progress["stage"]
        deadline = time.monotonic() + 30
        while user.info().index_version in (before, None) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert user.info().index_size == 9
        paths = {r.path for r in user.search(sketch=STROKES, k=9).results}
        assert photo["path"] in paths
        with pytest.raises(AuthError):
            user.build_status(build)
        with pytest.raises(ServiceError) as unknown:
            admin.build_status("no-such-build")
        assert unknown.value.status == 404


@pytest.mark.slow
def test_a_build_that_fails_reports_why_and_the_served_version_stays(own_index, app_encoder, monkeypatch, tmp_path):
    gallery, index_dir = own_index
    for name, value in TINY_ENV.items():
        monkeypatch.setenv(name, value)
    app = create_app(_settings(gallery, index_dir, checkpoint=tmp_path / "missing.safetensors"), encoder=app_encoder)
    with serve(app) as base, Client(base, api_key=ADMIN_KEY) as admin, Client(base) as user:
        before = user.info().index_version
        status = _wait(admin, admin.start_build())
        assert status.state == "failed" and "missing.safetensors" in status.error and status.result is None
        assert user.info().index_version == before and len(user.search(sketch=STROKES, k=3).results) == 3
        assert _wait(admin, admin.start_build()).state == "failed"  # the failed build left no lock behind
