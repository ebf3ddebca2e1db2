"""Regressions of the Milvus audit (chaos): an outage while a version is checked is retried, not a refusal; stale
rows of a build killed between its upsert and its delete are deleted by the next build; a served collection
dropped with its alias makes the service not ready; `--keep 1` keeps the
collection a service may still search; two first builds racing for the alias; a manifest that is not JSON."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from pymilvus import MilvusClient

from app.index_holder import IndexHolder
from app.metrics import Metrics
from bench.search import publish_vectors
from photo_index import IndexCorruptError, MilvusLocation, PublishOptions, open_source, open_writer
from photo_index.backends.milvus.client import MilvusConnection, _manifest_json
from photo_index.backends.milvus.reader import to_row
from tests.app.support import make_gallery

pytestmark = pytest.mark.slow  # one real server for the session; each test writes into it

DIM = 8


def _vectors(count: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_a_version_checked_while_its_collection_is_not_loaded_is_served_once_it_is(milvus, milvus_build, collection,
                                                                                   tmp_path, tiny_baseline):
    """After a Milvus restart a collection is released until it is loaded again: the check of the version failed as
    'unavailable', and the version stayed refused until the next build."""
    built = milvus_build(make_gallery(tmp_path / "gallery", categories=("apple", "boat"), per_category=2))
    client = MilvusClient(uri=milvus.uri)
    try:
        client.release_collection(built.version)
        holder = IndexHolder(open_source(MilvusLocation(milvus.uri, collection)),
                             fingerprint=tiny_baseline.fingerprint(), dim=tiny_baseline.embed_dim)
        served, deadline = holder.refresh(), time.monotonic() + 60
        while not served and time.monotonic() < deadline:
            assert holder.refusal is None, holder.refusal  # never refused for the server's state
            if holder.unavailable is not None:  # as the restarted server would, in time
                client.load_collection(built.version)
            time.sleep(0.2)
            served = holder.refresh()
        assert served and holder.version == built.version and holder.refusal is None
        holder.close()
    finally:
        client.close()


def test_a_served_collection_dropped_with_its_alias_makes_the_service_not_ready(milvus, milvus_build, collection,
                                                                                tmp_path, tiny_baseline):
    """/readyz said 200 while every search answered that the index server could not be reached."""
    built = milvus_build(make_gallery(tmp_path / "gallery", categories=("apple",), per_category=2))
    metrics = Metrics()
    holder = IndexHolder(open_source(MilvusLocation(milvus.uri, collection)), fingerprint=tiny_baseline.fingerprint(),
                         dim=tiny_baseline.embed_dim, metrics=metrics)
    assert holder.refresh() and holder.ready
    assert metrics.registry.get_sample_value("sbir_index_size") == 2
    client = MilvusClient(uri=milvus.uri)
    try:
        client.drop_alias(collection)
        client.drop_collection(built.version)
    finally:
        client.close()
    for _ in range(2):  # said until a build publishes again, not only at the poll that found it
        assert not holder.refresh() and not holder.ready
        assert holder.reason == f"The served index version {built.version} was deleted, and no version is published."
    # /metrics no longer reports the dropped version as served
    assert metrics.registry.get_sample_value("sbir_index_size") == 0
    assert metrics.registry.get_sample_value("sbir_index_version_info", {"version": built.version}) is None
    holder.close()


def test_a_photos_stale_row_left_by_a_killed_build_is_deleted_by_the_next(milvus, collection):
    location = MilvusLocation(milvus.uri, collection)
    version = publish_vectors(open_writer(location, PublishOptions()), _vectors(3), factory="AUTOINDEX")
    connection = MilvusConnection(milvus.uri)
    first = open_writer(location, PublishOptions()).previous(rebuild=False)
    photo = min(first.by_path.values(), key=lambda record: record.id)
    # What a build killed between upserting a photo under its new id and deleting the old row leaves: two rows.
    connection.client.upsert(version, [to_row(dataclasses.replace(photo, id=50), _vectors(1, seed=9)[0])])

    writer = open_writer(location, PublishOptions())
    previous = writer.previous(rebuild=False)
    assert any("stale row" in note for note in writer.notes), writer.notes
    rows = connection.client.query(version, filter="id >= 0", output_fields=["id", "path"])
    assert sorted(row["path"] for row in rows) == sorted(previous.by_path)  # one row per photo again
    again = open_writer(location, PublishOptions())
    assert again.previous(rebuild=False).stale_ids == [] and not again.notes
    connection.reset()


def test_keep_1_keeps_the_collection_a_service_may_still_search_until_the_next_build(milvus, milvus_build, collection,
                                                                                    tmp_path):
    gallery = make_gallery(tmp_path / "gallery", categories=("apple",), per_category=2)
    first = milvus_build(gallery)
    second = milvus_build(gallery, rebuild=True, keep=1)
    connection = MilvusConnection(milvus.uri)
    assert connection.versions(collection) == [first.version, second.version]  # the first: served until a poll
    assert any(f"kept {first.version}" in note for note in second.notes), second.notes
    third = milvus_build(gallery, rebuild=True, keep=1)
    assert connection.versions(collection) == [second.version, third.version]
    connection.reset()


def test_a_first_build_that_finds_the_alias_made_meanwhile_moves_it(milvus, collection, monkeypatch):
    """Two first builds: both found no alias, the second one's create failed at the very end, its collection
    filled and left unserved."""
    first = publish_vectors(open_writer(MilvusLocation(milvus.uri, collection), PublishOptions()), _vectors(2),
                            factory="AUTOINDEX")
    other = publish_vectors(open_writer(MilvusLocation(milvus.uri, collection + "_b"), PublishOptions()),
                            _vectors(3, seed=1), factory="AUTOINDEX")
    connection = MilvusConnection(milvus.uri)
    real, looks = MilvusConnection.alias_target, []

    def first_look_sees_none(self, alias):  # as the racing build saw it before the other's alias was made
        looks.append(alias)
        return None if len(looks) == 1 else real(self, alias)

    monkeypatch.setattr(MilvusConnection, "alias_target", first_look_sees_none)
    assert connection.switch_alias(collection, other) == first  # the collection it took out of service
    monkeypatch.undo()
    assert other != first and connection.alias_target(collection) == other
    connection.reset()


def test_a_stored_manifest_that_is_not_a_json_object_is_a_damaged_version():
    for text in ("{not json", "[1, 2]"):
        with pytest.raises(IndexCorruptError, match="manifest of Milvus collection v1"):
            _manifest_json("v1", text)
