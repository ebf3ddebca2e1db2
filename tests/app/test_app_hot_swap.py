"""Hot reload: searches running while index_builder publishes a new version all succeed, later ones see it."""

from __future__ import annotations

import json
import threading
import time

import httpx

from app.main import create_app
from app.settings import Settings
from photo_index import current_version
from tests.app.support import STROKES, app_client, build_index, hammer, make_gallery, serve


def test_requests_during_an_index_swap_all_succeed_and_later_ones_see_the_new_version(tmp_path, app_encoder):
    gallery, index_dir = make_gallery(tmp_path / "gallery"), tmp_path / "index"
    build_index(gallery, index_dir, app_encoder)
    app = create_app(Settings(index_dir=index_dir, reload_interval_s=0.1), encoder=app_encoder)
    outcomes: list[tuple[float, int, str | None]] = []  # (start time, status, index version)
    stop = threading.Event()

    with serve(app) as base:
        old = httpx.get(f"{base}/readyz").json()["index_version"]
        workers = [threading.Thread(target=hammer, args=(base, outcomes, stop, {**STROKES, "k": 20}))
                   for _ in range(4)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 60
        while len(outcomes) < 8:  # searches are running on the old version
            assert time.monotonic() < deadline
            time.sleep(0.01)
        make_gallery(gallery, categories=("cactus",), per_category=3, seed=50)  # new photos arrive
        build_index(gallery, index_dir, app_encoder)  # publishes a new version while searches run
        while (ready := httpx.get(f"{base}/readyz").json())["index_version"] == old:
            assert time.monotonic() < deadline, "the new version was never picked up"
            time.sleep(0.05)
        swapped_at = time.monotonic()
        while sum(1 for t, _, _ in outcomes if t > swapped_at) < 12:
            assert time.monotonic() < deadline + 30
            time.sleep(0.05)
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        info = httpx.get(f"{base}/info").json()

    new = ready["index_version"]
    assert new != old and ready["index_size"] == 11 and info["index_size"] == 11
    assert "cactus" in info["categories"]
    failures = [o for o in outcomes if o[1] != 200]
    assert not failures, failures[:5]
    assert {v for _, _, v in outcomes} == {old, new}
    assert all(v == new for t, _, v in outcomes if t > swapped_at)


def test_an_index_built_with_another_encoder_is_refused_and_the_served_one_stays(tmp_path, app_encoder, tiny_encoder):
    gallery, index_dir = make_gallery(tmp_path / "gallery"), tmp_path / "index"
    build_index(gallery, index_dir, app_encoder)
    with app_client(index_dir, app_encoder) as client:
        served = client.get("/readyz").json()["index_version"]
        # A retrained model's index (prompted encoder: another fingerprint) is published under the service.
        build_index(gallery, index_dir, tiny_encoder, rebuild=True)
        deadline = time.monotonic() + 30
        while 'sbir_index_reloads_total{outcome="refused"}' not in client.get("/metrics").text:
            assert time.monotonic() < deadline, "the incompatible version was never looked at"
            time.sleep(0.05)
        assert client.get("/readyz").json()["index_version"] == served
        assert client.post("/search", json=STROKES).status_code == 200


def test_a_service_started_on_an_index_of_another_encoder_is_not_ready(tmp_path, app_encoder, tiny_encoder):
    gallery, index_dir = make_gallery(tmp_path / "gallery"), tmp_path / "index"
    build_index(gallery, index_dir, tiny_encoder)
    with app_client(index_dir, app_encoder) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "another encoder" in ready.json()["detail"]
        assert client.post("/search", json=STROKES).status_code == 503


def test_a_service_started_on_an_index_of_an_older_photo_preprocessing_is_not_ready(tmp_path, app_encoder):
    gallery, index_dir = make_gallery(tmp_path / "gallery"), tmp_path / "index"
    build_index(gallery, index_dir, app_encoder)
    manifest_path = index_dir / "versions" / current_version(index_dir) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["encoder"]["preprocessing"]  # built before photo preprocessing was versioned
    manifest_path.write_text(json.dumps(manifest))
    with app_client(index_dir, app_encoder) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "rebuild with --rebuild" in ready.json()["detail"]
        assert client.post("/search", json=STROKES).status_code == 503
