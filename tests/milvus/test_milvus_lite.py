"""Embedded use: with milvus-lite the Milvus URI may be a local file (no server); the same engine code runs."""

from __future__ import annotations

from index_builder.builder import BuildOptions, build_index
from photo_index import locate, open_source
from photo_index.backends.milvus.reader import version_of
from tests.app.support import make_gallery


def test_a_milvus_lite_file_holds_an_index_built_updated_and_rebuilt(tmp_path, tiny_baseline):
    gallery = make_gallery(tmp_path / "gallery", per_category=2)
    uri = str(tmp_path / "milvus.db")
    options = dict(index_dir=tmp_path / "work", gallery=gallery, workers=0, progress=False,
                   location=locate("milvus", milvus_uri=uri, collection="lite"))
    first = build_index(tiny_baseline, BuildOptions(**options))
    (gallery / "apple" / "apple-0.jpg").unlink()
    second = build_index(tiny_baseline, BuildOptions(**options))
    assert second.version == first.version and (second.removed, second.size) == (1, 3)
    third = build_index(tiny_baseline, BuildOptions(**options, rebuild=True))
    source = open_source(locate("milvus", milvus_uri=uri, collection="lite"))
    try:
        assert version_of(source.current()) == third.version != first.version and source.verify() == []
        assert len(source.open().records(range(4))) == 4 and source.open().size == 3
    finally:
        source.close()
