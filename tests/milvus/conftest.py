"""One real Milvus standalone server per test session (the PyPI `milvus` package: a missing package fails, it is
never skipped), plus helpers to build into it with the real index builder."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from index_builder.builder import BuildOptions, build_index
from photo_index import MilvusLocation
from tests.milvus.server import MilvusProcess

_names = itertools.count()


@pytest.fixture(scope="session")
def milvus(tmp_path_factory) -> Iterator[MilvusProcess]:
    server = MilvusProcess(tmp_path_factory.mktemp("milvus-server"))
    server.start()
    try:
        yield server
    finally:
        if server.server is None:  # a test killed it and failed before restarting it
            server.server = None
        server.stop()
        assert server.leftovers() == [], "a `milvus run standalone` process outlived the test session"


@pytest.fixture()
def collection() -> str:
    """A fresh alias name per test (all tests share the server)."""
    return f"photos_{next(_names)}"


@pytest.fixture()
def milvus_build(milvus, tmp_path, collection, tiny_baseline):
    """``milvus_build(gallery, **options)`` → report; builds into the test's collection with the tiny baseline."""

    def run(gallery: Path, encoder=None, **options):
        options.setdefault("index_dir", tmp_path / "work")
        options.setdefault("workers", 0)
        options.setdefault("batch_size", 8)
        options.setdefault("progress", False)
        location = MilvusLocation(milvus.uri, options.pop("collection", collection))
        return build_index(encoder or tiny_baseline, BuildOptions(gallery=gallery, location=location, **options))

    return run
