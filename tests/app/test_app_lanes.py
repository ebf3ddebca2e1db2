"""The service's encoder lanes (encoder/lanes.py): configured by SBIR_ENCODER_LANES / --encoder-lanes, shown by
/info, and concurrent searches batched through the lanes answer as one team would."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from pydantic import ValidationError

from app.__main__ import build_parser
from app.main import create_app, load_configured_encoder
from app.settings import Settings
from encoder import load_encoder
from tests.app.support import serve, sketch_png


def test_lanes_setting_flag_and_environment(monkeypatch):
    assert Settings().encoder_lanes == "auto"
    assert build_parser().parse_args(["--encoder-lanes", "2"]).encoder_lanes == "2"
    monkeypatch.setenv("SBIR_ENCODER_LANES", "1")
    assert Settings().encoder_lanes == "1"
    for bad in ("0", "-2", "two", "1.5"):
        monkeypatch.setenv("SBIR_ENCODER_LANES", bad)
        with pytest.raises(ValidationError, match="encoder_lanes"):
            Settings()
    monkeypatch.setenv("SBIR_ENCODER_LANES", "")  # set but empty (an .env's `KEY=`): the default
    assert Settings().encoder_lanes == "auto"


def test_the_configured_encoder_runs_in_the_lanes_asked_for(two_threads):
    settings = {"backbone": "sbir-tiny", "pretrained": "none", "device": "cpu"}
    assert load_configured_encoder(Settings(**settings, encoder_lanes="2")).lanes == 2
    assert load_configured_encoder(Settings(**settings, encoder_lanes="1")).lanes == 1
    assert load_configured_encoder(Settings(**settings)).lanes == 2  # auto on a CPU with 2 threads


def test_concurrent_searches_go_through_the_lanes_and_answer_as_one_team(app_index, app_encoder, two_threads):
    _, index_dir = app_index
    in_lanes = load_encoder(backbone="sbir-tiny", pretrained="none", device="cpu", lanes=2)
    split_batches: list[int] = []
    lanes = in_lanes._lanes
    encode = lanes.encode

    def counted(images, modality):
        split_batches.append(len(images))
        return encode(images, modality)

    lanes.encode = counted
    sketches = [sketch_png(seed) for seed in range(12)]

    def search(base: str, sketch: bytes) -> list[tuple[int, float]]:
        response = httpx.post(f"{base}/search", files={"sketch": ("s.png", sketch, "image/png")},
                              data={"k": "5"}, timeout=60)
        assert response.status_code == 200, response.text
        return [(hit["id"], hit["score"]) for hit in response.json()["results"]]

    app = create_app(Settings(index_dir=index_dir, max_wait_ms=200, reload_interval_s=60), encoder=in_lanes)
    with serve(app) as base:
        assert httpx.get(f"{base}/info").json()["encoder"]["lanes"] == 2
        with ThreadPoolExecutor(len(sketches)) as pool:
            answers = list(pool.map(lambda sketch: search(base, sketch), sketches))
    assert split_batches and max(split_batches) > 1  # batches of several sketches were split over the lanes

    one_team = create_app(Settings(index_dir=index_dir, reload_interval_s=60), encoder=app_encoder)
    with serve(one_team) as base:
        expected = [search(base, sketch) for sketch in sketches]
    for got, want in zip(answers, expected, strict=True):
        assert [photo for photo, _ in got] == [photo for photo, _ in want]
        assert [score for _, score in got] == pytest.approx([score for _, score in want], abs=1e-5)
