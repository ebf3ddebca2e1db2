"""The service's precision: /info shows it, and an index embedded in another precision is served (noted once)."""

from __future__ import annotations

import logging
import threading

import numpy as np

from app.__main__ import build_parser
from app.index_holder import IndexHolder
from app.settings import Settings
from encoder import load_encoder
from tests.app.support import app_client, build_index, make_gallery, sketch_png


def bf16_encoder():
    return load_encoder(backbone="sbir-tiny", pretrained="none", device="cpu", precision="bf16")


def test_info_shows_the_precision_and_a_bf16_service_searches_an_fp32_index(app_index, app_encoder):
    _, index_dir = app_index  # built by the fp32 encoder
    files = {"sketch": ("s.png", sketch_png(), "image/png")}
    with app_client(index_dir, app_encoder) as client:
        assert client.get("/info").json()["precision"] == "fp32"
        fp32_hits = client.post("/search", files=files, data={"k": "5"}).json()["results"]
    with app_client(index_dir, bf16_encoder()) as client:
        info = client.get("/info").json()
        assert info["precision"] == "bf16" and info["encoder"]["precision"] == "bf16"
        assert info["fingerprint"] == app_encoder.fingerprint()  # same encoder, so the index is served
        response = client.post("/search", files=files, data={"k": "5"})
    assert response.status_code == 200
    bf16_hits = response.json()["results"]
    assert [hit["id"] for hit in bf16_hits][:1] == [hit["id"] for hit in fp32_hits][:1]
    assert np.allclose([hit["score"] for hit in bf16_hits], [hit["score"] for hit in fp32_hits], atol=0.01)


def test_an_index_of_another_precision_is_noted_once_across_versions(tmp_path, app_encoder, caplog):
    gallery, index_dir = make_gallery(tmp_path / "gallery"), tmp_path / "index"
    build_index(gallery, index_dir, app_encoder)  # fp32
    holder = IndexHolder(index_dir, fingerprint=app_encoder.fingerprint(), dim=app_encoder.embed_dim,
                         precision="bf16")
    with caplog.at_level(logging.INFO, logger="app.index"):
        assert holder.refresh()
        build_index(gallery, index_dir, app_encoder, rebuild=True)  # a second fp32 version
        assert holder.refresh()
    holder.close()
    notes = [r.getMessage() for r in caplog.records if "embedded in fp32" in r.getMessage()]
    assert len(notes) == 1 and "queries are embedded in bf16" in notes[0] and "search works" in notes[0]


def test_precision_flag_and_environment(monkeypatch):
    args = build_parser().parse_args(["--precision", "bf16"])
    assert args.precision == "bf16"
    monkeypatch.setenv("SBIR_PRECISION", "fp32")
    assert Settings().precision == "fp32"


def test_uploads_and_thumbnails_are_decoded_in_the_bounded_pool(app_index, app_encoder, monkeypatch):
    import app.routers.search as search_router

    threads: list[str] = []
    to_tensor = search_router.to_tensor
    monkeypatch.setattr(search_router, "to_tensor",
                        lambda *args: threads.append(threading.current_thread().name) or to_tensor(*args))
    with app_client(app_index[1], app_encoder, decode_threads=1) as client:
        body = client.post("/search", files={"sketch": ("s.png", sketch_png(), "image/png")}, data={"k": "2"}).json()
        thumbnails = client.app.state.services.thumbnails
        seen: list[str] = []
        get = thumbnails.get
        monkeypatch.setattr(thumbnails, "get", lambda *args: seen.append(threading.current_thread().name) or get(*args))
        assert client.get(body["results"][0]["thumbnail_url"]).status_code == 200
    assert threads and all(name.startswith("prepare") for name in threads + seen) and seen
