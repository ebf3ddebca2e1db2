"""The build records its precision (manifest, report); an incremental build in another precision says so once."""

from __future__ import annotations

import json
import logging

import numpy as np

from index_builder.cli import main
from index_builder.distributors import DISTRIBUTORS, EMBED_IN_PROCESS, build_encoder_placement
from photo_index.backends.folder import IndexReader
from tests.index_builder.conftest import live_manifest, write_photo


def build(gallery, index_dir, *extra: str) -> int:
    return main(["build", "--gallery", str(gallery), "--out", str(index_dir), "--workers", "0", "--no-progress",
                 "--json", *extra])


def test_manifest_and_report_record_the_precision_and_mixing_is_logged(make_gallery, tmp_path, capsys, caplog):
    gallery = make_gallery({"cat": 3, "dog": 2})
    index_dir = tmp_path / "index"
    assert build(gallery, index_dir, "--precision", "fp32") == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "fp32"
    assert live_manifest(index_dir)["encoder"]["precision"] == "fp32"

    write_photo(gallery / "dog" / "new.jpg", 4242)  # something to embed (a moved photo would keep its vector)
    with caplog.at_level(logging.INFO, logger="encoder.precision"):
        assert build(gallery, index_dir, "--precision", "bf16") == 0  # the same encoder: incremental mode is fine
    report = json.loads(capsys.readouterr().out)
    assert report["precision"] == "bf16" and report["embedded"] == 1 and report["unchanged"] == 5
    manifest = live_manifest(index_dir)
    assert manifest["encoder"]["precision"] == "bf16" and manifest["build"]["precision"] == "bf16"
    assert json.loads((index_dir / manifest["report"]).read_text())["precision"] == "bf16"
    notes = [r.getMessage() for r in caplog.records if "embedded in fp32" in r.getMessage()]
    assert len(notes) == 1 and "new photos are embedded in bf16" in notes[0]


def test_a_build_that_only_removes_photos_keeps_the_precision_its_vectors_were_computed_in(make_gallery, tmp_path,
                                                                                           capsys):
    gallery = make_gallery({"cat": 3, "dog": 2})
    index_dir = tmp_path / "index"
    assert build(gallery, index_dir, "--precision", "bf16") == 0
    capsys.readouterr()
    (gallery / "cat" / "cat_0.jpg").unlink()  # nothing to embed: every vector left is a bf16 one
    assert build(gallery, index_dir, "--precision", "fp32") == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["removed"], report["embedded"], report["precision"]) == (1, 0, "bf16")
    assert live_manifest(index_dir)["encoder"]["precision"] == "bf16"


def test_an_unknown_precision_in_the_environment_is_a_clean_error(make_gallery, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SBIR_PRECISION", "fp8")
    assert build(make_gallery({"cat": 1}), tmp_path / "index") == 2
    assert "precision must be one of auto, fp32, bf16" in capsys.readouterr().err


def test_the_build_embeds_in_the_lanes_asked_for_and_reports_them(make_gallery, tmp_path, capsys):
    gallery = make_gallery({"cat": 3, "dog": 3})
    fp32 = ("--precision", "fp32", "--batch-size", "4")  # fp32: a split batch gives one call's vectors exactly
    assert build(gallery, tmp_path / "one", "--encoder-lanes", "1", *fp32) == 0
    one_team = json.loads(capsys.readouterr().out)
    assert build(gallery, tmp_path / "lanes", "--encoder-lanes", "2", *fp32) == 0
    in_lanes = json.loads(capsys.readouterr().out)
    assert (one_team["lanes"], in_lanes["lanes"], in_lanes["embedded"]) == (1, 2, 6)
    with IndexReader.open(tmp_path / "one") as first, IndexReader.open(tmp_path / "lanes") as second:
        assert np.allclose(first.vectors()[1], second.vectors()[1], atol=1e-5)


def test_a_bad_lane_count_is_a_clean_error(make_gallery, tmp_path, capsys, monkeypatch):
    assert build(make_gallery({"cat": 1}), tmp_path / "index", "--encoder-lanes", "zero") == 2
    assert "encoder lanes must be 'auto' or a positive integer, got 'zero'" in capsys.readouterr().err
    monkeypatch.setenv("SBIR_ENCODER_LANES", "-1")
    assert build(make_gallery({"cat": 1}), tmp_path / "index2") == 2
    assert "encoder lanes must be" in capsys.readouterr().err


def test_only_a_distributor_that_embeds_in_the_build_process_gets_its_device_lanes_and_precision():
    assert build_encoder_placement("local", "cuda", "auto", "auto") == ("cuda", "auto", "auto")
    # The actors load their own copy, from the driver's fp32 weights, and resolve the precision on their device
    assert build_encoder_placement("ray", "cuda", "auto", "bf16") == ("cpu", "1", "fp32")
    assert EMBED_IN_PROCESS.issubset(DISTRIBUTORS)
