"""The reader contract: open the live version, exact search, category filter, metadata, version polling."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from photo_index import IndexNotFoundError, current_version
from photo_index.backends.folder import IndexReader
from tests.tolerance import assert_same_top_k


def brute_force(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int):
    scores = queries @ vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


def test_open_without_index_raises(tmp_path):
    with pytest.raises(IndexNotFoundError):
        IndexReader.open(tmp_path / "nothing")
    assert current_version(tmp_path / "nothing") is None


def test_reader_matches_brute_force_over_stored_vectors(make_gallery, build, tmp_path, tiny_baseline):
    gallery = make_gallery({"cat": 6, "dog": 5, "owl": 4})
    report = build(gallery=gallery)
    assert report.status == "built" and report.added == 15

    reader = IndexReader.open(tmp_path / "index")
    assert reader.version == report.version == current_version(tmp_path / "index")
    assert (reader.size, len(reader), reader.dim) == (15, 15, tiny_baseline.embed_dim)
    assert reader.fingerprint == tiny_baseline.fingerprint()
    assert reader.encoder_config == tiny_baseline.config.to_dict()
    assert reader.gallery_root == str(gallery.absolute())
    assert reader.categories() == ["cat", "dog", "owl"]

    ids, vectors = reader.vectors()
    queries = np.random.default_rng(1).normal(size=(4, reader.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    scores, found = reader.search(queries, 5)
    want_scores, want_ids = brute_force(np.asarray(vectors), ids, queries, 5)
    assert found.dtype == np.int64 and scores.dtype == np.float32
    assert_same_top_k(scores, found, want_scores, want_ids)

    # Category filter: exactly the brute force restricted to that category.
    dog_ids = np.array([r.id for r in reader.records(ids) if r.category == "dog"])
    mask = np.isin(ids, dog_ids)
    scores, found = reader.search(queries, 3, category="dog")
    assert_same_top_k(scores, found, *brute_force(np.asarray(vectors)[mask], ids[mask], queries, 3))

    # k larger than the category: -1 padding.
    _, found = reader.search(queries[:1], 8, category="owl")
    assert (found[0, :4] >= 0).all() and (found[0, 4:] == -1).all()
    _, found = reader.search(queries[:1], 3, category="no-such-category")
    assert (found == -1).all()


def test_reader_gives_the_stored_vector_of_an_id(make_gallery, build, tmp_path):
    build(gallery=make_gallery({"cat": 3, "dog": 2}))
    with IndexReader.open(tmp_path / "index") as reader:
        ids, vectors = reader.vectors()
        for row, photo_id in enumerate(ids):
            vector = reader.vector(int(photo_id))
            assert vector.dtype == np.float32 and vector.shape == (reader.dim,)
            np.testing.assert_array_equal(vector, vectors[row])
        assert reader.vector(int(ids.max()) + 1) is None and reader.vector(-1) is None
        vector[:] = 0  # a copy: the memory-mapped version is read-only and stays intact
        assert np.linalg.norm(reader.vector(int(ids[-1]))) > 0.99


def test_reader_notices_a_new_current_version(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 2})
    first = build(gallery=gallery)
    reader = IndexReader.open(tmp_path / "index")
    assert current_version(tmp_path / "index") == reader.version  # what the service polls
    (gallery / "cat" / "cat_0.jpg").unlink()
    second = build(gallery=gallery)
    assert current_version(tmp_path / "index") == second.version != first.version
    # the old reader still serves its own version
    assert current_version(tmp_path / "index") != reader.version and reader.size == 2
    assert IndexReader.open(tmp_path / "index").size == 1


def test_records_carry_metadata_in_order(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 2, "dog": 1})
    build(gallery=gallery)
    with IndexReader.open(tmp_path / "index") as reader:
        ids, _ = reader.vectors()
        records = reader.records([ids[2], -1, ids[0], 10**9])
        assert records[1] is None and records[3] is None
        assert [r.id for r in (records[0], records[2])] == [ids[2], ids[0]]
        record = reader.record(int(ids[0]))
        assert record.path.startswith(str(gallery)) and record.category == "cat"
        assert len(record.sha256) == 64 and record.size > 0 and record.added_at


def test_reader_is_safe_to_share_between_threads(make_gallery, build, tmp_path):
    build(gallery=make_gallery({"cat": 4, "dog": 4}))
    reader = IndexReader.open(tmp_path / "index")
    ids, vectors = reader.vectors()
    expected = reader.search(np.asarray(vectors), 3)[1]
    errors = []

    def worker():
        try:
            for _ in range(20):
                assert np.array_equal(reader.search(np.asarray(vectors), 3)[1], expected)
                assert reader.records(expected[0])[0].id == expected[0, 0]
                reader.search(np.asarray(vectors[:1]), 2, category="dog")
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def test_bad_query_shape_is_a_value_error(make_gallery, build, tmp_path):
    build(gallery=make_gallery({"cat": 2}))
    reader = IndexReader.open(tmp_path / "index")
    with pytest.raises(ValueError, match="shape"):
        reader.search(np.zeros((1, reader.dim + 1), np.float32), 3)
    with pytest.raises(ValueError, match="k must"):
        reader.search(np.zeros((1, reader.dim), np.float32), 0)
