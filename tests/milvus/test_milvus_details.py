"""Photo details (width, height, EXIF capture time) in Milvus fields; a collection made before the fields
existed still serves (None) and the next build copies it into one that has them."""

from __future__ import annotations

from pymilvus import CollectionSchema

from photo_index import locate, open_source
from photo_index.backends.milvus import writer as milvus_writer
from photo_index.backends.milvus.client import DETAIL_FIELDS
from tests.index_builder.test_photo_details import _gallery


def _details(milvus, collection) -> dict[str, tuple]:
    source = open_source(locate("milvus", milvus_uri=milvus.uri, collection=collection))
    reader = source.open()
    return {r.path.rsplit("/", 2)[1] + "/" + r.path.rsplit("/", 1)[1]: r.details
            for r in reader.records(range(8)) if r}


def test_milvus_stores_details_and_upgrades_a_collection_made_without_them(milvus, milvus_build, collection,
                                                                          tmp_path, monkeypatch):
    gallery = _gallery(tmp_path / "gallery")
    # the code before: no detail fields in the schema, none in the rows
    add_field = CollectionSchema.add_field
    monkeypatch.setattr(CollectionSchema, "add_field", lambda self, name, *a, **kw: self if name in DETAIL_FIELDS
                        else add_field(self, name, *a, **kw))
    to_row = milvus_writer.to_row
    monkeypatch.setattr(milvus_writer, "to_row", lambda record, vector: {
        key: value for key, value in to_row(record, vector).items() if key not in DETAIL_FIELDS})
    old = milvus_build(gallery)
    monkeypatch.undo()
    assert set(_details(milvus, collection).values()) == {(None, None, None)}

    upgraded = milvus_build(gallery)
    assert upgraded.status == "built" and upgraded.embedded == 0 and upgraded.version != old.version
    details = _details(milvus, collection)
    assert details["apple/0.jpg"] == (48, 40, "2019-01-02T10:20:30") and details["boat/1.jpg"] == (40, 56,
                                                                                                  "2019-02-02T10:20:30")
    photo = gallery / "boat" / "0.jpg"
    photo.write_bytes(photo.read_bytes())  # written again (new mtime): updated in place, details kept
    again = milvus_build(gallery)
    assert again.version == upgraded.version and _details(milvus, collection) == details
