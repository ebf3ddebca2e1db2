"""``tune``: recalibration on real query vectors, published as a new version; bad query files refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from index_builder.cli import main
from photo_index import current_version
from photo_index.backends.folder import IndexReader
from photo_index.checks import verify as verify_source
from photo_index.format import CALIBRATION_QUERIES
from photo_index.registry import open_source
from tests.index_builder.conftest import write_photo


def verify(index_dir):
    """The folder index's problems (what ``python -m index_builder verify`` prints)."""
    return verify_source(open_source(index_dir))


def _queries(path, dim: int, n: int = 64, seed: int = 0):
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    np.save(path, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    return path


def _manifest(index_dir):
    return json.loads((index_dir / "versions" / current_version(index_dir) / "manifest.json").read_text())


@pytest.fixture()
def ivf_index(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 20, "dog": 20})
    build(gallery=gallery, index_factory="IVF4,Flat")
    return gallery, tmp_path / "index"


def test_tune_recalibrates_on_query_vectors_as_a_new_version_while_the_old_one_serves(ivf_index, tmp_path, capsys):
    gallery, index_dir = ivf_index
    before = _manifest(index_dir)
    assert before["index"]["calibration"]["source"].startswith("stored vectors")
    queries = _queries(tmp_path / "queries.npy", before["dim"])
    with IndexReader.open(index_dir) as served:
        expected = served.search(np.load(queries)[:3], 5)
        assert main(["tune", str(index_dir), "--queries", str(queries), "--recall-target", "1.0", "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["status"] == "tuned" and result["previous"] == before["version"]
        assert np.array_equal(served.search(np.load(queries)[:3], 5)[1], expected[1])  # the served one still works
    after = _manifest(index_dir)
    assert current_version(index_dir) == result["version"] != before["version"]
    calibration = after["index"]["calibration"]
    assert calibration["source"] == "query vectors" and calibration["queries"] == 64
    assert calibration["recall_at_10"] == 1.0 and after["index"]["search_params"]["nprobe"] == calibration["nprobe"]
    old_dir, new_dir = (index_dir / "versions" / v for v in (before["version"], result["version"]))
    assert (new_dir / "vectors.npy").stat().st_ino == (old_dir / "vectors.npy").stat().st_ino  # linked, not copied
    assert np.array_equal(np.load(new_dir / CALIBRATION_QUERIES), np.load(queries))
    assert verify(index_dir) == []
    with IndexReader.open(index_dir) as reader:
        assert reader.vector_index.knob_value == calibration["nprobe"]

    # A later build keeps calibrating on the tuned version's queries.
    write_photo(gallery / "cat" / "new.jpg", 4242)
    assert main(["build", "--gallery", str(gallery), "--out", str(index_dir), "--workers", "0", "--no-progress",
                 "--recall-target", "1.0"]) == 0
    rebuilt = _manifest(index_dir)
    assert rebuilt["size"] == 41 and rebuilt["index"]["calibration"]["source"] == "query vectors"
    assert (index_dir / "versions" / rebuilt["version"] / CALIBRATION_QUERIES).is_file()


@pytest.mark.parametrize(("content", "message"), [
    ("wrong-dim", "expected numbers of shape"),
    ("not-npy", "Cannot read query vectors"),
    ("nan", "not finite"),
])
def test_bad_query_files_are_refused_and_the_index_is_unchanged(ivf_index, tmp_path, capsys, content, message):
    _, index_dir = ivf_index
    before = current_version(index_dir)
    path = tmp_path / "queries.npy"
    dim = _manifest(index_dir)["dim"]
    if content == "wrong-dim":
        _queries(path, dim + 1)
    elif content == "not-npy":
        path.write_bytes(b"these are not vectors")
    else:
        np.save(path, np.full((4, dim), np.nan, dtype=np.float32))
    assert main(["tune", str(index_dir), "--queries", str(path)]) == 2
    assert message in capsys.readouterr().err
    assert current_version(index_dir) == before


def test_an_exact_index_has_nothing_to_tune(make_gallery, build, tmp_path, capsys):
    build(gallery=make_gallery({"cat": 3}))
    before = current_version(tmp_path / "index")
    queries = _queries(tmp_path / "q.npy", _manifest(tmp_path / "index")["dim"])
    assert main(["tune", str(tmp_path / "index"), "--queries", str(queries)]) == 0
    assert "nothing to tune" in capsys.readouterr().out and current_version(tmp_path / "index") == before


def test_hnsw_efsearch_is_calibrated_at_build_and_by_tune(make_gallery, build, tmp_path, capsys):
    build(gallery=make_gallery({"cat": 15, "dog": 15}), index_factory="HNSW8")
    index_dir = tmp_path / "index"
    built = _manifest(index_dir)["index"]
    assert built["calibration"]["param"] == "efSearch" and "efSearch" in built["search_params"]
    queries = _queries(tmp_path / "q.npy", _manifest(index_dir)["dim"])
    assert main(["tune", str(index_dir), "--queries", str(queries), "--json"]) == 0
    tuned = _manifest(index_dir)["index"]
    assert tuned["calibration"]["source"] == "query vectors" and tuned["calibration"]["reached"]
    with IndexReader.open(index_dir) as reader:
        ids, vectors = reader.vectors()
        _, found = reader.search(np.asarray(vectors[:5]), 1)
        assert (found[:, 0] == ids[:5]).all()
        assert reader.vector_index.knob_value == tuned["search_params"]["efSearch"]
