"""`index_builder tune` on Milvus, against the real standalone server: the search parameter (HNSW/AUTOINDEX ``ef``,
IVF ``nprobe``) calibrated on query vectors against exact search, recorded in the collection's manifest, taken up
by the service's open reader at its next poll and kept by later in-place builds; FLAT and bad input change nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.search import mixture, publish_vectors
from index_builder.cli import main as cli_main
from photo_index import MilvusLocation, PublishOptions, open_source, open_writer
from photo_index.backends.milvus.client import MilvusConnection

pytestmark = pytest.mark.slow  # each test fills a collection of a few thousand vectors and waits for its index

DIM, SIZE = 32, 4000


def _data(tmp_path):
    """Clustered vectors (spread wide, so a small search breadth misses neighbours) and held-out queries."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, DIM))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    vectors = mixture(SIZE, DIM, centers, noise=3.0, seed=1)
    queries = tmp_path / "queries.npy"
    np.save(queries, mixture(300, DIM, centers, noise=3.0, seed=2))
    return vectors, queries


def _recall(reader, queries: np.ndarray, vectors: np.ndarray) -> float:
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]  # ids are rows: the collection was filled 0..N-1
    found = reader.search(queries, 10)[1]
    return float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)]))


def _tune(milvus, collection, queries, *extra) -> dict:
    flags = ["--engine", "milvus", "--milvus-uri", milvus.uri, "--collection", collection]
    return cli_main(["tune", *flags, "--queries", str(queries), *extra])


@pytest.mark.parametrize(("factory", "index_params", "knob", "smallest_misses"), [
    ("HNSW", {"M": 4, "efConstruction": 16}, "ef", True),  # a sparse graph: ef 16 misses neighbours
    ("IVF_FLAT", {"nlist": 64}, "nprobe", True),
    ("AUTOINDEX", {}, "ef", False),  # an HNSW index on the Milvus 2.3 of the dev extra
])
def test_tune_calibrates_records_and_the_service_reader_takes_it_up(milvus, collection, tmp_path, capsys,
                                                                     factory, index_params, knob, smallest_misses):
    location = MilvusLocation(milvus.uri, collection)
    vectors, queries = _data(tmp_path)
    version = publish_vectors(open_writer(location, PublishOptions(index_params=index_params)), vectors,
                              factory=factory)
    source = open_source(location)
    serving = source.open()  # the service's reader, opened before the tune
    assert serving.search_params == {}

    assert _tune(milvus, collection, queries, "--json") == 0
    result = json.loads(capsys.readouterr().out)
    calibration = result["calibration"]
    assert result["status"] == "tuned" and result["version"] == version and calibration["param"] == knob
    assert calibration["index_served"] and calibration["reached"] and calibration["queries"] == 300
    chosen = result["after"][knob]
    assert calibration["tried"][str(chosen)] >= 0.95 and all(
        recall < 0.95 for value, recall in calibration["tried"].items() if int(value) < chosen)
    # The index is searched, not the unindexed copies a fresh collection is served from for a while (exact).
    assert not smallest_misses or len(calibration["tried"]) > 1

    manifest = MilvusConnection(milvus.uri).read_manifest(version)
    assert manifest["index"]["search_params"] == {knob: chosen} and manifest["tuned"]["queries"] == 300
    assert source.current().startswith(version + "@")  # the service's poll: a new revision of the same collection
    assert serving.search_params == {knob: chosen}  # ... and a reader not reopened searches with the tuned value
    assert source.open().search_params == {knob: chosen}
    sample = np.load(queries)
    assert _recall(serving, sample, vectors) >= 0.95  # measured independently of the calibration

    # A later in-place build keeps the tuned value; explicit --milvus-search-params replace it.
    publish_vectors(open_writer(location, PublishOptions(index_params=index_params)), vectors[:3], factory=factory)
    assert source.open().search_params == {knob: chosen}
    publish_vectors(open_writer(location, PublishOptions(index_params=index_params, search_params={knob: 32})),
                    vectors[:3], factory=factory)
    assert source.open().search_params == {knob: 32}


def test_tune_leaves_flat_and_refuses_bad_queries_without_changing_the_manifest(milvus, collection, tmp_path,
                                                                                capsys):
    location = MilvusLocation(milvus.uri, collection)
    vectors, queries = _data(tmp_path)
    version = publish_vectors(open_writer(location, PublishOptions()), vectors[:500], factory="FLAT")
    before = MilvusConnection(milvus.uri).read_manifest(version)
    assert _tune(milvus, collection, queries) == 0
    assert "nothing to tune" in capsys.readouterr().out

    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.ones((4, DIM + 1), np.float32))
    assert _tune(milvus, collection, wrong) == 2
    assert "expected numbers of shape" in capsys.readouterr().err
    assert _tune(milvus, "no_such_alias", queries) == 2
    assert "alias does not exist" in capsys.readouterr().err
    assert MilvusConnection(milvus.uri).read_manifest(version) == before
