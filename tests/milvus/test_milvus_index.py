"""The Milvus engine against a real standalone server: build, incremental update in place, rebuild with an alias
switch, the same top-k as FAISS, fingerprint refusal, a build SIGKILLed half-way, bad URIs and missing collections."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from index_builder import FingerprintMismatchError
from index_builder.builder import BuildOptions, build_index
from index_builder.cli import main as cli_main
from photo_index import BuildError, EngineUnavailableError, IndexNotFoundError, locate, open_source
from photo_index.backends.milvus.reader import category_filter, version_of
from tests.app.support import REPO, TINY_ENV, make_gallery
from tests.imagegen import random_photo

pytestmark = pytest.mark.slow  # one real server for the session; each test builds into it


def test_build_then_incremental_update_in_place(milvus, milvus_build, collection, tmp_path, capsys):
    gallery = make_gallery(tmp_path / "gallery", per_category=3)
    first = milvus_build(gallery)
    assert first.status == "built" and first.size == 6 and first.factory == "AUTOINDEX"
    source = open_source(locate("milvus", milvus_uri=milvus.uri, collection=collection))
    assert version_of(source.current()) == first.version and source.verify() == []
    reader = source.open()
    ids = sorted(r.id for r in reader.records(range(6)) if r)
    assert ids == list(range(6)) and reader.categories() == ["apple", "boat"]
    _, found = reader.search(np.ones((1, reader.dim), np.float32), 6, category="boat")
    assert {r.category for r in reader.records(found[0][found[0] >= 0])} == {"boat"}

    first_updated = reader.record(0).updated_at
    random_photo((96, 72), seed=999).save(gallery / "apple" / "apple-0.jpg")  # changed
    (gallery / "boat" / "boat-1.jpg").unlink()  # removed
    make_gallery(gallery, categories=("cactus",), per_category=1, seed=70)  # added
    os.utime(gallery / "apple" / "apple-0.jpg", ns=(1, 1))
    second = milvus_build(gallery)
    assert (second.added, second.updated, second.removed, second.unchanged) == (1, 1, 1, 4)
    assert second.version == first.version == version_of(source.current())  # in place: no new collection
    reader = source.open()
    assert reader.size == 6 and reader.categories() == ["apple", "boat", "cactus"]
    records = {r.path.rsplit("/", 1)[1]: r for r in reader.records(range(8)) if r}
    assert "boat-1.jpg" not in records and records["cactus-70.jpg"].id == 6  # ids are never reused
    assert records["apple-0.jpg"].mtime_ns == 1 and records["apple-0.jpg"].updated_at >= first_updated
    assert source.verify() == []
    assert milvus_build(gallery).status == "unchanged"
    flags = ["--engine", "milvus", "--milvus-uri", milvus.uri, "--collection", collection]
    assert cli_main(["verify", *flags]) == 0
    capsys.readouterr()
    assert cli_main(["info", *flags, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["size"] == 6 and info["index"]["engine"] == "milvus" and info["versions"] == [first.version]

    (gallery / "boat" / "boat-0.jpg").rename(gallery / "apple" / "moved.jpg")  # keeps its vector under a new id
    moved = milvus_build(gallery)
    assert (moved.added, moved.removed, moved.embedded, moved.size) == (1, 1, 0, 6)
    records = {r.path.rsplit("/", 1)[1]: r for r in source.open().records(range(10)) if r}
    assert records["moved.jpg"].category == "apple" and "boat-0.jpg" not in records and source.verify() == []


def test_rebuild_and_encoder_change_make_a_new_collection_and_switch_the_alias(
        milvus, milvus_build, collection, tmp_path, tiny_encoder):
    gallery = make_gallery(tmp_path / "gallery", per_category=2)
    first = milvus_build(gallery)
    with pytest.raises(FingerprintMismatchError, match="--rebuild"):
        milvus_build(gallery, encoder=tiny_encoder)
    source = open_source(locate("milvus", milvus_uri=milvus.uri, collection=collection))
    assert version_of(source.current()) == first.version
    second = milvus_build(gallery, encoder=tiny_encoder, rebuild=True, keep=1)
    assert second.version != first.version and version_of(source.current()) == second.version
    assert source.open().fingerprint == tiny_encoder.fingerprint()
    # --keep 1 keeps the collection it took out of service until the next build (services may still search it)
    assert source.connection.versions(collection) == [first.version, second.version]


def test_same_top_k_as_faiss_on_the_same_vectors(milvus, milvus_build, collection, tmp_path, tiny_baseline):
    gallery = make_gallery(tmp_path / "gallery", per_category=5)
    milvus_build(gallery, index_factory="FLAT")
    build_index(tiny_baseline, BuildOptions(index_dir=tmp_path / "faiss", gallery=gallery, workers=0,
                                            progress=False, index_factory="Flat"))
    queries = np.random.default_rng(0).normal(size=(5, tiny_baseline.embed_dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    with open_source(locate("faiss", index_dir=tmp_path / "faiss")).open() as faiss_reader:
        milvus_reader = open_source(locate("milvus", milvus_uri=milvus.uri, collection=collection)).open()
        for category in (None, "apple"):
            faiss_scores, faiss_ids = faiss_reader.search(queries, 4, category=category)
            milvus_scores, milvus_ids = milvus_reader.search(queries, 4, category=category)
            assert np.array_equal(faiss_ids, milvus_ids)
            np.testing.assert_allclose(faiss_scores, milvus_scores, atol=1e-4)
        assert milvus_reader.search(queries, 3, category="nope")[1].max() == -1


def test_category_filters_are_quoted_milvus_expressions():
    assert category_filter('say "hi"\\') == 'category == "say \\"hi\\"\\\\"'


def test_a_build_killed_mid_way_leaves_the_served_collection_intact(milvus, milvus_build, collection, tmp_path):
    gallery = make_gallery(tmp_path / "gallery", per_category=3)
    served = milvus_build(gallery)
    source = open_source(locate("milvus", milvus_uri=milvus.uri, collection=collection))
    command = [sys.executable, "-m", "index_builder", "build", "--gallery", str(gallery), "--out",
               str(tmp_path / "work"), "--engine", "milvus", "--milvus-uri", milvus.uri, "--collection", collection,
               "--rebuild", "--workers", "0", "--no-progress", "--milvus-index", "HNSW", "--milvus-index-params",
               '{"M": 8, "efConstruction": 64}', "--milvus-search-params", '{"ef": 32}']
    env = {**os.environ, **TINY_ENV, "PYTHONPATH": str(REPO)}
    build = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    try:  # kill it once its new collection exists, before the alias switch
        while len(source.connection.versions(collection)) < 2:
            assert build.poll() is None, build.stdout.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        build.send_signal(signal.SIGKILL)
    finally:
        build.wait(timeout=60)
    assert version_of(source.current()) == served.version and source.verify() == []
    reader = source.open()
    assert reader.search(np.ones((1, reader.dim), np.float32), 3)[1].min() >= 0
    again = milvus_build(gallery)  # the next build drops the unfinished collection
    assert again.status == "unchanged" and source.connection.versions(collection) == [served.version]


def test_unreachable_servers_bad_uris_and_missing_collections_are_clear_errors(milvus, collection, capsys):
    started = time.monotonic()
    with pytest.raises(EngineUnavailableError, match="unavailable"):
        open_source(locate("milvus", milvus_uri="http://127.0.0.1:1", collection=collection, timeout_s=1)).current()
    assert time.monotonic() - started < 15  # bounded, never a hang
    with pytest.raises(BuildError, match="--milvus-uri"):
        open_source(locate("milvus", milvus_uri="", collection=collection))
    with pytest.raises((BuildError, EngineUnavailableError), match="Milvus at ftp://nowhere"):
        open_source(locate("milvus", milvus_uri="ftp://nowhere", collection=collection, timeout_s=1)).current()
    with pytest.raises(BuildError, match="not a valid Milvus name"):
        open_source(locate("milvus", milvus_uri=milvus.uri, collection="no-dashes"))
    missing = open_source(locate("milvus", milvus_uri=milvus.uri, collection="never_built"))
    assert missing.current() is None
    with pytest.raises(IndexNotFoundError, match="alias does not exist"):
        missing.open()
    assert cli_main(["info", "--engine", "milvus", "--milvus-uri", milvus.uri, "--collection", "never_built"]) == 2
    assert "alias does not exist" in capsys.readouterr().err
    assert cli_main(["verify", "--engine", "milvus", "--milvus-uri", "http://127.0.0.1:1", "--collection", "x",
                     "--milvus-timeout-s", "1"]) == 2
    assert "unavailable" in capsys.readouterr().err
    assert cli_main(["build", "--gallery", ".", "--engine", "milvus", "--collection", "x"]) == 2
    assert "--milvus-uri" in capsys.readouterr().err
    assert cli_main(["build", "--gallery", ".", "--engine", "milvus", "--milvus-uri", milvus.uri, "--collection",
                     "x", "--milvus-index-params", "[1]"]) == 2
    assert "JSON object" in capsys.readouterr().err


def test_a_photo_taking_another_ids_vector_reads_it_before_any_upsert_overwrites_it(milvus, milvus_build, collection,
                                                                                     tmp_path, monkeypatch):
    """In-place builds upsert in chunks and read reused vectors per chunk: a photo given id 20 read its old id 10's
    vector after an earlier chunk had written the new photo 10 there (verify saw nothing)."""
    import photo_index.backends.milvus.writer as milvus_writer
    from tests.index_builder.conftest import write_photo

    gallery = tmp_path / "gallery"
    first, second = (write_photo(gallery / "cat" / f"{name}.jpg", seed) for name, seed in (("a", 1), ("b", 2)))
    manifest = tmp_path / "photos.csv"
    manifest.write_text(f"path,id\n{first},10\n{second},11\n")
    milvus_build(None, manifest=manifest)
    source = open_source(locate("milvus", milvus_uri=milvus.uri, collection=collection))
    before = source.open().vector(10)
    newcomer = write_photo(gallery / "dog" / "new.jpg", 4242)
    manifest.write_text(f"path,id\n{newcomer},10\n{second},11\n{first},20\n")
    monkeypatch.setattr(milvus_writer, "CHUNK", 1)  # as past 1,000 changed photos between the two ids
    milvus_build(None, manifest=manifest)
    reader = source.open()
    np.testing.assert_allclose(reader.vector(20), before, rtol=0, atol=1e-6)
    assert not np.allclose(reader.vector(10), before, atol=1e-3)
