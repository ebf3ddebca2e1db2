"""Regressions of the Milvus backend's audit, against the real standalone server: in-place builds reach a running
service, deep searches after `tune`, manifests too big for Milvus, a build killed before its manifest, prune and
foreign collections, a plain collection as the alias name, refusals told from outages, and credentials in URIs."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient

from app.index_holder import IndexHolder
from bench.search import publish_vectors, synthetic_records
from photo_index import BuildError, EngineUnavailableError, MilvusLocation, PublishOptions, open_source, open_writer
from photo_index.backends.milvus.client import TOPK_MAX, MilvusConnection
from photo_index.backends.milvus.reader import search_params_for, to_row
from tests.app.support import make_gallery

pytestmark = pytest.mark.slow  # one real server for the session; each test writes into it

DIM = 8


def _vectors(count: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _rows(milvus, version: str) -> int:
    client = MilvusClient(uri=milvus.uri)
    try:
        return int(client.query(version, filter="id >= 0", output_fields=["count(*)"])[0]["count(*)"])
    finally:
        client.close()


def test_a_running_service_sees_an_in_place_build_and_reopens_it(milvus, milvus_build, collection, tmp_path,
                                                                 tiny_baseline):
    gallery = make_gallery(tmp_path / "gallery", categories=("apple", "boat"), per_category=3)
    first = milvus_build(gallery)
    holder = IndexHolder(open_source(MilvusLocation(milvus.uri, collection)), fingerprint=tiny_baseline.fingerprint(),
                         dim=tiny_baseline.embed_dim)
    assert holder.refresh() and holder.version == first.version and not holder.refresh()

    make_gallery(gallery, categories=("cactus",), per_category=2, seed=70)
    second = milvus_build(gallery)
    assert second.version == first.version and second.added == 2  # in place: the same collection
    assert holder.refresh() and holder.find_category("cactus") == "cactus"
    with holder.lease() as reader:
        assert reader.size == 8
    assert not holder.refresh()  # nothing changed since: no reopen
    holder.close()


def test_a_search_deeper_than_ef_raises_ef_and_one_past_topk_ends_at_topk(milvus, collection):
    location = MilvusLocation(milvus.uri, collection)
    options = PublishOptions(index_params={"M": 4, "efConstruction": 16}, search_params={"ef": 16})
    version = publish_vectors(open_writer(location, options), _vectors(1100), factory="HNSW")
    connection = MilvusConnection(milvus.uri)
    assert connection.wait_served_indexed(version, timeout=120)  # Milvus refuses ef < k only on an indexed segment
    reader = open_source(location).open()
    assert reader.search_params == {"ef": 16}
    assert (reader.search(_vectors(2, seed=1), 40)[1] >= 0).sum() == 80
    scores, found = reader.search(_vectors(1, seed=1), TOPK_MAX + 2)  # what offset + k = 16384 asks (+1, +like)
    assert found.shape == (1, TOPK_MAX + 2) and (found[0] >= 0).sum() == 1100 and found[0, -1] == -1
    assert search_params_for({"ef": 64, "nprobe": 8}, 100) == {"ef": 100, "nprobe": 8}
    assert search_params_for({"ef": 64}, 10) == {"ef": 64}


def _with_long_categories(milvus, collection, count: int):
    """(location, live version, writer, its previous, content adding ``count`` photos of long category names)."""
    location = MilvusLocation(milvus.uri, collection)
    version = publish_vectors(open_writer(location, PublishOptions()), _vectors(3), factory="AUTOINDEX")
    writer = open_writer(location, PublishOptions())
    previous = writer.previous(rebuild=False)
    records = [*previous.by_path.values(), *(
        dataclasses.replace(record, category=f"department-{record.id:04d}-" + "x" * 100)
        for record in synthetic_records(range(3, 3 + count)))]
    return location, version, writer, previous, _content(records, previous, _vectors(count, seed=2))


def test_a_manifest_too_big_for_milvus_is_refused_before_any_row_is_written(milvus, collection, monkeypatch):
    from photo_index.backends.milvus import client

    monkeypatch.setattr(client, "MANIFEST_PARTS_MAX", 1)  # 600 long names need 2 rows; 64 hold tens of thousands
    _, version, writer, previous, content = _with_long_categories(milvus, collection, 600)
    with pytest.raises(BuildError, match="manifest .* bytes .603 categories"):
        writer.write(content, previous, previous.manifest, {"factory": "AUTOINDEX"})
    assert _rows(milvus, version) == 3 and writer.connection.read_manifest(version)["size"] == 3


def test_a_manifest_past_one_row_is_stored_in_parts_read_whole_and_never_mixed(milvus, collection):
    """Galleries of thousands of category names outgrew the one 64 KB row a manifest had: it is stored in parts,
    each with the digest of the whole, so a reader never joins parts of two writes."""
    from photo_index import IndexCorruptError
    from photo_index.backends.milvus.client import MANIFESTS, manifest_part_key, manifest_parts

    location, _, writer, previous, content = _with_long_categories(milvus, collection, 600)
    small = dict(previous.manifest)
    version = writer.write(content, previous, previous.manifest, {"factory": "AUTOINDEX"})
    connection = writer.connection

    def stored() -> list[dict]:
        return connection.client.query(MANIFESTS, filter=f'version == "{version}"',
                                       output_fields=["key", "version", "manifest", "unused"])

    assert len(stored()) == 2 and len(connection.read_manifest(version)["categories"]) == 603
    assert len(open_source(location).open().categories()) == 603  # what the service reads
    whole = connection.read_manifest(version)
    bigger = {**whole, "note": "x" * 70_000}
    texts = manifest_parts(version, bigger)  # a build killed after writing the new parts, before part 0
    digest = texts[1].split("\n", 1)[0].rsplit("/", 1)[1]
    connection.client.upsert(MANIFESTS, [{"key": manifest_part_key(version, digest, i), "version": version,
                                          "manifest": text, "unused": [0.0, 0.0]} for i, text in enumerate(texts)
                                         if i > 0])
    assert connection.read_manifest(version) == whole  # the old manifest, whole
    connection.write_manifest(version, bigger)  # the parts beside the live ones, then part 0 switches
    assert len(stored()) == 3 and connection.read_manifest(version)["note"] == "x" * 70_000

    second = next(row for row in stored() if row["key"] != manifest_part_key(version, "", 0))
    header, _, chunk = second["manifest"].partition("\n")
    forged = {**second, "manifest": header.rsplit("/", 1)[0] + "/0000000000000000\n" + chunk}
    connection.client.upsert(MANIFESTS, [forged])  # a part of another write under this one's key: damage
    with pytest.raises(IndexCorruptError, match="parts that do not agree"):
        connection.read_manifest(version)

    connection.write_manifest(version, small)  # back to one row: the parts part 0 named go
    assert len(stored()) == 1 and connection.read_manifest(version) == small
    connection.write_manifest(version, whole)
    connection.delete_manifest(version)
    assert stored() == [] and connection.read_manifest(version) is None


def _content(records, previous, staged):
    from photo_index.api import FROM_PREVIOUS, FROM_STAGING, VersionContent

    old = len(previous.by_path)
    sources = np.array([(FROM_PREVIOUS, r.id) for r in records[:old]] + [(FROM_STAGING, i) for i in
                                                                         range(len(records) - old)], dtype=np.int64)
    return VersionContent(records=records, sources=sources, staged=staged, next_id=max(r.id for r in records) + 1,
                          now="2026-01-02T00:00:00+00:00")


def test_rows_a_killed_build_upserted_without_its_manifest_are_counted_by_the_next_build(milvus, collection):
    location = MilvusLocation(milvus.uri, collection)
    version = publish_vectors(open_writer(location, PublishOptions()), _vectors(3), factory="AUTOINDEX")
    # What a build killed between its upserts and its manifest leaves: a row the manifest does not count.
    extra = dataclasses.replace(synthetic_records([3])[0], category="cactus")
    connection = MilvusConnection(milvus.uri)
    connection.client.upsert(version, [to_row(extra, _vectors(1, seed=3)[0])])
    source = open_source(location)
    stale = source.current()
    assert "cactus" not in source.open().categories()

    writer = open_writer(location, PublishOptions())
    writer.previous(rebuild=False)  # every build starts here, also one that changes nothing
    manifest = connection.read_manifest(version)
    assert manifest["size"] == 4 and "cactus" in manifest["categories"] and writer.notes
    assert source.current() != stale  # the service reopens it
    assert not [problem for problem in source.verify() if "manifest" in problem]  # (synthetic files do not exist)
    assert open_writer(location, PublishOptions()).previous(rebuild=False).disagreement() is None


def test_prune_drops_only_our_abandoned_versions(milvus, collection):
    location = MilvusLocation(milvus.uri, collection)
    live = publish_vectors(open_writer(location, PublishOptions()), _vectors(3), factory="AUTOINDEX")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    def make(name: str, description: str) -> str:
        schema = MilvusClient.create_schema(auto_id=False, description=description)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
        client.create_collection(name, schema=schema)
        return name

    mark = {"mark": "sbir-build", "host": socket.gethostname()}
    client = MilvusClient(uri=milvus.uri)
    try:
        foreign = make(f"{collection}__vectors_backup", "another tool's")
        longer = make(f"{collection}__v20200101000000000000_copy", "")
        running = make(f"{collection}__v20990101000000000001", json.dumps({**mark, "pid": os.getpid()}))
        killed = make(f"{collection}__v20990101000000000002", json.dumps({**mark, "pid": int(dead)}))
        ancient = make(f"{collection}__v20200101000000000003", "")  # unmarked, older than any build takes
        recent = make(f"{collection}__v20990101000000000004", "")  # unmarked, maybe another host's running build
        open_writer(location, PublishOptions()).prune(keep=1)
        left = set(client.list_collections())
    finally:
        for name in client.list_collections():
            if name.startswith(collection) and name != live:
                client.drop_collection(name)
        client.close()
    assert {foreign, longer, running, recent, live} <= left and not {killed, ancient} & left


def test_a_plain_collection_named_as_the_alias_is_refused_before_embedding(milvus, milvus_build, tmp_path):
    client = MilvusClient(uri=milvus.uri)
    try:
        client.create_collection("plain_photos", dimension=DIM)
        with pytest.raises(BuildError, match="existing Milvus collection, not an alias"):
            milvus_build(make_gallery(tmp_path / "gallery", per_category=1), collection="plain_photos")
        assert [n for n in client.list_collections() if n.startswith("plain_photos")] == ["plain_photos"]
    finally:
        client.drop_collection("plain_photos")
        client.close()


def test_refusals_are_build_errors_and_long_fields_are_refused_before_writing(milvus, collection):
    connection = MilvusConnection(milvus.uri)
    connection.create_photos(f"{collection}__v20990101000000000000", DIM, "FLAT", {})
    too_long = dataclasses.replace(synthetic_records([0])[0], category="猫" * 400)  # 1200 bytes of UTF-8
    with pytest.raises(BuildError, match="refused insert.*max length"):
        connection.call(lambda: connection.client.insert(f"{collection}__v20990101000000000000",
                                                         [to_row(too_long, _vectors(1)[0])]), what="insert")
    connection.drop(f"{collection}__v20990101000000000000")

    location = MilvusLocation(milvus.uri, collection)
    writer = open_writer(location, PublishOptions())
    with pytest.raises(BuildError, match="category is 1200 bytes"):
        writer.write(_content([too_long], _Empty(), _vectors(1)), None, {"dim": DIM}, {"factory": "AUTOINDEX"})
    assert connection.versions(collection) == []


class _Empty:
    by_path: dict = {}


def test_credentials_in_the_uri_never_reach_messages_and_a_token_is_passed(milvus, collection):
    hidden = MilvusLocation("http://reader:s3cret@127.0.0.1:1", collection, timeout_s=1)
    source = open_source(hidden)
    assert "s3cret" not in source.describe() and "127.0.0.1:1" in source.describe()
    with pytest.raises(EngineUnavailableError) as raised:
        source.current()
    assert "s3cret" not in str(raised.value)
    assert "s3cret" not in open_writer(hidden, PublishOptions()).where
    publish_vectors(open_writer(MilvusLocation(milvus.uri, collection), PublishOptions()), _vectors(2), factory="FLAT")
    assert open_source(MilvusLocation(milvus.uri, collection, token="root:Milvus")).open().size == 2


def test_credentials_never_show_and_a_bad_port_or_ipv6_uri_is_kept_as_written():
    from photo_index.backends.milvus.client import redacted

    assert redacted("http://alice:s3cret@milvus:19530") == "http://milvus:19530"
    assert redacted("http://alice:s3cret@milvus:99999") == "http://milvus:99999"  # urlsplit's .port would raise
    assert redacted("http://alice:s3cret@milvus:abc") == "http://milvus:abc"
    assert redacted("http://u:p@[::1]:19530") == "http://[::1]:19530"
    assert redacted("http://127.0.0.1:19530") == "http://127.0.0.1:19530"


def test_a_builder_is_alive_only_while_its_own_process_runs():
    """A restarted container counts process ids from 1 again: a later process with the builder's id is not it."""
    import json
    import os

    from photo_index.backends.milvus.client import build_mark, builder_alive

    mark = json.loads(build_mark())
    assert builder_alive(json.dumps(mark)) is True
    assert builder_alive(json.dumps({**mark, "started": "1"})) is False  # same pid and host, another start
    assert builder_alive(json.dumps({**mark, "pid": 2**22 + 12345})) is False  # no such process
    assert builder_alive(json.dumps({**mark, "host": "elsewhere"})) is None
    assert builder_alive("a collection of another tool") is None
    assert builder_alive(json.dumps({**mark, "pid": 2**70})) is None  # not a process id
    assert builder_alive(json.dumps({**mark, "pid": 0})) is None
    assert mark["pid"] == os.getpid()


def test_a_builder_whose_start_time_proc_hides_is_taken_as_alive(monkeypatch):
    """/proc mounted with hidepid hides another user's start time: an unknown start must not read as a dead builder
    (its collection, still being filled, would be pruned)."""
    import json

    from photo_index.backends.milvus import client

    mark = json.loads(client.build_mark())
    monkeypatch.setattr(client, "process_start", lambda pid: None)
    assert client.builder_alive(json.dumps({**mark, "started": "12345"})) is True


def test_a_server_not_ready_is_unavailable_and_a_request_pymilvus_refuses_is_a_refusal():
    from pymilvus.exceptions import MilvusException, ParamError, SchemaNotReadyException

    from photo_index.backends.milvus.client import _is_refusal

    assert _is_refusal(ParamError(message="bad"))
    assert not _is_refusal(SchemaNotReadyException(message="not ready"))
    assert _is_refusal(MilvusException(code=1100, message="invalid parameter"))
    assert not _is_refusal(MilvusException(code=65535, message="unknown"))
