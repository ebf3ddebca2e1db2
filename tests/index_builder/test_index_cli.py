"""The CLI: build summary, a changed encoder refusing incremental mode, info, and verify catching tampering."""

from __future__ import annotations

import json
import shutil
import sqlite3

import faiss
import numpy as np
import pytest

from encoder import PREPROCESSING_VERSION, save_checkpoint
from index_builder.cli import main
from photo_index import current_version

from .conftest import data_folder, live_manifest
from .conftest import manifest_path as live_manifest_path


@pytest.fixture()
def built(make_gallery, tmp_path, capsys):
    gallery = make_gallery({"cat": 4, "dog": 3})
    index_dir = tmp_path / "index"
    code = main(["build", "--gallery", str(gallery), "--out", str(index_dir), "--workers", "0", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "added 7" in out and "photos/s" in out
    return gallery, index_dir




def test_changed_encoder_refuses_incremental_mode(built, tmp_path, tiny_encoder, capsys):
    gallery, index_dir = built
    before = current_version(index_dir)
    checkpoint = save_checkpoint(tiny_encoder, tmp_path / "trained.safetensors")
    args = ["build", "--gallery", str(gallery), "--out", str(index_dir), "--workers", "0", "--no-progress",
            "--checkpoint", str(checkpoint)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "incremental mode is refused" in err and "--rebuild" in err and tiny_encoder.fingerprint() in err
    assert current_version(index_dir) == before

    assert main([*args, "--rebuild", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["embedded"] == 7 and report["previous"] == before
    manifest = live_manifest(index_dir)
    assert manifest["encoder"]["fingerprint"] == tiny_encoder.fingerprint()
    assert manifest["encoder"]["checkpoint"] == str(checkpoint)


@pytest.mark.parametrize("recorded", [None, PREPROCESSING_VERSION - 1])
def test_an_index_of_another_photo_preprocessing_is_refused_until_rebuilt(built, capsys, recorded):
    gallery, index_dir = built
    before = current_version(index_dir)
    manifest_path = live_manifest_path(index_dir)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["encoder"]["preprocessing"] == PREPROCESSING_VERSION
    if recorded is None:
        del manifest["encoder"]["preprocessing"]  # an index built before preprocessing was versioned
    else:
        manifest["encoder"]["preprocessing"] = recorded
    manifest_path.write_text(json.dumps(manifest))
    args = ["build", "--gallery", str(gallery), "--out", str(index_dir), "--workers", "0", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "rebuild with --rebuild" in err and f"version {PREPROCESSING_VERSION}" in err
    assert current_version(index_dir) == before and not (index_dir / "staging").exists()

    assert main([*args, "--rebuild", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["embedded"] == 7
    rebuilt = live_manifest(index_dir)
    assert rebuilt["encoder"]["preprocessing"] == PREPROCESSING_VERSION


def test_another_activation_is_another_encoder_for_the_index(built, capsys):
    gallery, index_dir = built
    before = current_version(index_dir)
    args = ["build", "--gallery", str(gallery), "--out", str(index_dir), "--workers", "0", "--no-progress",
            "--activation", "quick_gelu"]
    assert main(args) == 2
    assert "incremental mode is refused" in capsys.readouterr().err
    assert current_version(index_dir) == before
    assert main([*args, "--rebuild"]) == 0
    manifest = live_manifest(index_dir)
    assert manifest["encoder"]["config"]["activation"] == "quick_gelu"


def test_info_describes_the_current_version(built, capsys):
    _, index_dir = built
    assert main(["info", str(index_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["size"] == 7 and data["categories"] == 2 and data["index"]["factory"] == "Flat"
    assert data["version"] == data["current"] == current_version(index_dir)
    assert main(["info", str(index_dir)]) == 0
    assert "7 photos" in capsys.readouterr().out
    assert main(["info", str(index_dir.parent / "nothing")]) == 2


def _nan_vector(folder):
    vectors = np.load(folder / "vectors.npy", mmap_mode="r+")
    vectors[1] = np.nan
    vectors.flush()


def _scaled_vector(folder):
    vectors = np.load(folder / "vectors.npy", mmap_mode="r+")
    vectors[2] *= 2
    vectors.flush()


def _deleted_metadata_row(folder):
    with sqlite3.connect(folder / "metadata.sqlite") as conn:
        conn.execute("DELETE FROM photos WHERE id = (SELECT max(id) FROM photos)")


def _index_missing_a_vector(folder):
    index = faiss.read_index(str(folder / "index.faiss"))
    index.remove_ids(np.array([0], dtype=np.int64))
    faiss.write_index(index, str(folder / "index.faiss"))


def _index_with_other_vector(folder):
    index = faiss.read_index(str(folder / "index.faiss"))
    vectors = np.load(folder / "vectors.npy")
    index.remove_ids(np.array([3], dtype=np.int64))
    index.add_with_ids(vectors[4:5], np.array([3], dtype=np.int64))  # normalised, but the wrong photo's vector
    faiss.write_index(index, str(folder / "index.faiss"))


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_nan_vector, "not finite"),
        (_scaled_vector, "not unit-norm"),
        (_deleted_metadata_row, "without metadata"),
        (_index_missing_a_vector, "ids differ"),
        (_index_with_other_vector, "differ from vectors.npy"),
    ],
)
def test_verify_catches_a_tampered_index(built, tmp_path, capsys, tamper, message):
    _, index_dir = built
    assert main(["verify", str(index_dir)]) == 0
    assert "OK" in capsys.readouterr().out
    copy = tmp_path / "tampered"
    shutil.copytree(index_dir, copy)
    tamper(data_folder(copy))
    assert main(["verify", str(copy)]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and message in captured.err


def test_bad_arguments_exit_with_a_message(tmp_path, capsys):
    assert main(["build", "--gallery", str(tmp_path / "missing"), "--out", str(tmp_path / "i"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["build", "--gallery", str(tmp_path), "--out", str(tmp_path / "i"), "--batch-size", "0"]) == 2


def test_an_index_inside_the_gallery_named_with_a_tilde_is_left_out_of_the_scan(make_gallery, tmp_path, monkeypatch,
                                                                                capsys):
    # The lock and staging expanded "~", the scan's exclusion did not: the second build listed the index's own
    # files (segments, current) as skipped photos.
    monkeypatch.setenv("HOME", str(tmp_path))
    make_gallery({"cat": 2}, root=tmp_path / "g")
    for _ in range(2):
        assert main(["build", "--gallery", "~/g", "--out", "~/g/idx", "--workers", "0", "--no-progress",
                     "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["skipped"] == [] and report["size"] == 2


def test_a_factory_faiss_cannot_read_is_refused_before_any_photo_is_embedded(make_gallery, tmp_path, capsys):
    gallery = make_gallery({"cat": 3})
    assert main(["build", "--gallery", str(gallery), "--out", str(tmp_path / "index"), "--workers", "0",
                 "--no-progress", "--index-factory", "Bogus"]) == 2
    assert "not a valid FAISS factory string" in capsys.readouterr().err
    assert not (tmp_path / "index").exists()  # before: every photo embedded and staged first
