"""The app on the Milvus engine, against the real server: an alias switch under 16 searching clients, the server
killed and restarted under the app (503 while down, 200 again after), missing collections and bad URIs."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from app.__main__ import main as app_main
from app.main import create_app
from app.settings import Settings
from tests.app.support import STROKES, hammer, make_gallery, serve

pytestmark = pytest.mark.slow  # one real server for the session; each test builds into it


def milvus_app(milvus, collection, encoder, **settings):
    return create_app(Settings(engine="milvus", milvus_uri=milvus.uri, collection=collection, reload_interval_s=0.1,
                               milvus_timeout_s=2, **settings), encoder=encoder)


def test_a_rebuild_switches_the_alias_under_16_searching_clients(milvus, milvus_build, collection, tmp_path,
                                                                  tiny_baseline):
    gallery = make_gallery(tmp_path / "gallery")
    milvus_build(gallery)
    outcomes: list[tuple[float, int, str | None]] = []
    stop = threading.Event()

    with serve(milvus_app(milvus, collection, tiny_baseline)) as base:
        old = httpx.get(f"{base}/readyz").json()["index_version"]
        first = httpx.post(f"{base}/search", json={**STROKES, "k": 3}).json()["results"][0]
        assert httpx.get(f"{base}/photos/{first['id']}").status_code == 200  # records come from Milvus
        body = {**STROKES, "k": 5, "category": "apple"}
        workers = [threading.Thread(target=hammer, args=(base, outcomes, stop, body, 0.02)) for _ in range(16)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 120
        while len(outcomes) < 16:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        make_gallery(gallery, categories=("cactus",), per_category=2, seed=50)
        milvus_build(gallery, rebuild=True)  # a new collection, then the alias switch
        while (ready := httpx.get(f"{base}/readyz").json())["index_version"] == old:
            assert time.monotonic() < deadline, "the new collection was never picked up"
            time.sleep(0.05)
        swapped_at = time.monotonic()
        while sum(1 for t, _, _ in outcomes if t > swapped_at) < 16:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        info = httpx.get(f"{base}/info").json()
    assert ready["index_version"] != old and ready["index_size"] == 10 and "cactus" in info["categories"]
    failures = [o for o in outcomes if o[1] != 200]
    assert not failures, failures[:5]
    assert {v for _, _, v in outcomes} == {old, ready["index_version"]}


def test_more_like_this_reads_the_stored_vector_from_milvus(milvus, milvus_build, collection, tmp_path,
                                                            tiny_baseline):
    milvus_build(make_gallery(tmp_path / "gallery"))
    with TestClient(milvus_app(milvus, collection, tiny_baseline)) as client:
        seed = client.post("/search", json={**STROKES, "k": 1}).json()["results"][0]["id"]
        liked = client.post("/search", json={"like": seed, "k": 3})
        assert liked.status_code == 200, liked.text
        body = liked.json()
        assert body["query"] == "like" and len(body["results"]) == 3
        assert seed not in [r["id"] for r in body["results"]]  # the liked photo is left out
        unknown = client.post("/search", json={"like": 10_000, "k": 3})
        assert unknown.status_code == 422 and "10000" in unknown.json()["detail"]


def test_milvus_killed_under_the_app_is_a_503_and_the_app_recovers_by_itself(milvus, milvus_build, collection,
                                                                              tmp_path, tiny_baseline):
    milvus_build(make_gallery(tmp_path / "gallery"))
    with TestClient(milvus_app(milvus, collection, tiny_baseline)) as client:
        assert client.post("/search", json=STROKES).status_code == 200
        milvus.kill()
        try:
            started = time.monotonic()
            down = client.post("/search", json=STROKES)
            assert down.status_code == 503 and "cannot be reached" in down.json()["detail"]
            assert time.monotonic() - started < 15  # bounded by the timeouts, never a hang
            time.sleep(0.5)  # a poll notices: not ready, with the reason
            ready = client.get("/readyz")
            assert ready.status_code == 503 and "cannot be reached" in ready.json()["detail"]
            assert client.get("/photos/0").status_code == 503
        finally:
            milvus.start()
        deadline = time.monotonic() + 150
        while (response := client.post("/search", json=STROKES)).status_code != 200:
            assert response.status_code == 503, response.text
            assert time.monotonic() < deadline, "the app never recovered"
            time.sleep(0.5)
        assert client.get("/readyz").status_code == 200


def test_missing_collections_and_unreachable_servers_leave_the_app_not_ready_with_the_reason(milvus, tiny_baseline):
    with TestClient(milvus_app(milvus, "never_built", tiny_baseline)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "No index version" in ready.json()["detail"]
        assert client.post("/search", json=STROKES).status_code == 503
    app = create_app(Settings(engine="milvus", milvus_uri="http://127.0.0.1:1", collection="x", milvus_timeout_s=1),
                     encoder=tiny_baseline)
    with TestClient(app) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "cannot be reached" in ready.json()["detail"]
    assert app_main(["--engine", "milvus"]) == 2  # no URI, no collection: a clear settings error
