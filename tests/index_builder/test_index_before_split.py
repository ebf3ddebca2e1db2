"""An index folder written before the photo_index / index_builder split opens, verifies, searches, is served and
is built on by today's code (the on-disk format did not change).

``tests/data/index-before-split`` was written by main at 3c71edf (the commit before the split) with
``python -m index_builder build --gallery G --out tests/data/index-before-split --backbone sbir-tiny --pretrained
none --workers 0 --device cpu`` over 6 random photos (apple/pear, 3 each; ``tests.imagegen.random_photo``,
seeds 0-2 and 100-102, 48×40). Its records point at that gallery's absolute paths, which do not exist here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from index_builder.cli import main
from photo_index import current_version, open_source
from photo_index.checks import verify
from tests.app.support import STROKES, app_client, make_gallery
from tests.conftest import TINY

FIXTURE = Path(__file__).parents[1] / "data" / "index-before-split"
VERSION = "v20261206T012458348605Z-b2ffc5"


def _copy(tmp_path):
    index_dir = tmp_path / "index"
    shutil.copytree(FIXTURE, index_dir)
    return index_dir


def test_an_index_written_before_the_split_opens_verifies_and_searches(tmp_path, tiny_baseline, capsys):
    index_dir = _copy(tmp_path)
    source = open_source(index_dir)
    assert source.current() == current_version(index_dir) == VERSION
    # Only finding: the fixture's gallery (absolute paths on the machine that wrote it) is not on this one.
    [gone] = verify(source)
    assert gone.startswith("6 indexed photo file(s) are gone from the gallery") and "index_builder build" in gone
    with source.open() as reader:
        assert (reader.version, reader.size, reader.dim) == (VERSION, 6, tiny_baseline.embed_dim)
        assert reader.fingerprint == tiny_baseline.fingerprint() and reader.categories() == ["apple", "pear"]
        ids = reader.stored().ids
        scores, found = reader.search(reader.vector(int(ids[0])), 3)
        assert found[0, 0] == ids[0] and np.isclose(scores[0, 0], 1.0, atol=1e-5)
        assert [r.category for r in reader.records(found[0])] and reader.record(int(ids[0])).path.endswith(".jpg")
        _, pears = reader.search(reader.vector(int(ids[0])), 6, category="pear")
        assert {r.category for r in reader.records(pears[0][pears[0] >= 0])} == {"pear"}
    assert main(["verify", str(index_dir)]) == 1
    out, err = capsys.readouterr()
    assert "FAILED, 1 problem(s)" in out and err.count("PROBLEM:") == 1 and "are gone from the gallery" in err
    assert main(["info", str(index_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["version"], info["size"], info["categories"], info["versions"]) == (VERSION, 6, 2, [VERSION])


def test_the_service_serves_an_index_written_before_the_split(tmp_path, tiny_baseline):
    index_dir = _copy(tmp_path)
    with app_client(index_dir, tiny_baseline) as client:
        ready = client.get("/readyz").json()
        assert ready["ready"] and ready["index_version"] == VERSION and ready["index_size"] == 6
        body = client.post("/search", json={**STROKES, "k": 4}).json()
        assert len(body["results"]) == 4 and {r["category"] for r in body["results"]} <= {"apple", "pear"}


def test_a_build_updates_an_index_written_before_the_split(tmp_path, tiny_baseline):
    index_dir = _copy(tmp_path)
    gallery = make_gallery(tmp_path / "gallery", per_category=1)
    assert main(["build", "--gallery", str(gallery), "--out", str(index_dir), "--backbone", TINY,
                 "--pretrained", "none", "--workers", "0", "--device", "cpu", "--no-progress", "--json"]) == 0
    source = open_source(index_dir)
    assert source.current() != VERSION and source.versions()[0] == VERSION and verify(source) == []
    with source.open() as reader:
        manifest = reader.manifest
        assert manifest["previous"] == VERSION and manifest["build"]["removed"] == 6  # its photos are not here
        assert min(reader.stored().ids) >= 6  # ids are never reused: next_id came from the old manifest


@pytest.mark.parametrize(("section", "key", "value", "named"), [
    ("index", "search_params", "x", "manifest.json is damaged: missing or malformed index.search_params"),
    ("index", "file", 3, "manifest.json is damaged: missing or malformed index.file"),
    (None, "checksums", [1], "manifest.json is damaged: missing or malformed checksums"),
    (None, "checksums", {"ids.npy": 176}, "manifest.json is damaged: missing or malformed checksums"),
    ("index", "search_params", {"nprobe": "x"}, "search parameters recorded for the index in"),
])
def test_a_manifest_of_wrong_types_is_refused_by_verify_and_info_without_a_traceback(tmp_path, capsys, section, key,
                                                                                     value, named):
    index_dir = _copy(tmp_path)
    path = index_dir / "versions" / VERSION / "manifest.json"
    manifest = json.loads(path.read_text())
    (manifest[section] if section else manifest)[key] = value
    path.write_text(json.dumps(manifest))
    assert main(["verify", str(index_dir)]) == 1
    out, err = capsys.readouterr()
    assert "FAILED, 1 problem(s)" in out and named in err and "Traceback" not in err
    assert main(["info", str(index_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err and err.count("\n") == 1
