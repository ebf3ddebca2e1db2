"""Fixtures for index_builder tests: tiny synthetic galleries and a one-call build helper."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from index_builder.builder import BuildOptions, build_index
from photo_index.format import current_version
from tests.imagegen import random_photo

from .raycluster import LocalRayCluster

FORMATS = ("jpg", "png", "webp")


def manifest_path(index_dir: Path) -> Path:
    """The live version's manifest: ``versions/<v>.json`` (segments) or ``versions/<v>/manifest.json`` (one copy)."""
    name = current_version(index_dir)
    segmented = Path(index_dir) / "versions" / f"{name}.json"
    return segmented if segmented.is_file() else Path(index_dir) / "versions" / name / "manifest.json"


def live_manifest(index_dir: Path) -> dict:
    return json.loads(manifest_path(index_dir).read_text())


def data_folder(index_dir: Path) -> Path:
    """The folder holding the live photos' vectors.npy, ids.npy, metadata.sqlite and index.faiss: the one segment
    of a segmented version of one segment, or a one-copy version folder."""
    manifest = live_manifest(index_dir)
    if "segments" not in manifest:
        return manifest_path(index_dir).parent
    assert len(manifest["segments"]) == 1, manifest["segments"]
    return Path(index_dir) / "segments" / manifest["segments"][0]["name"]


def write_photo(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    random_photo(size, seed=seed).save(path)
    return path


def add_broken_files(gallery: Path, outside: Path) -> dict[str, str]:
    """Damaged, odd and unreadable entries in a ``make_gallery`` folder → {file name: expected skip reason}.

    ``outside`` is a folder outside the gallery (for a dangling link)."""
    good = (gallery / "cat" / "cat_0.jpg").read_bytes()
    (gallery / "cat" / "zero.jpg").write_bytes(b"")
    (gallery / "cat" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    png = bytearray((gallery / "cat" / "cat_1.png").read_bytes())
    png[len(png) // 2 : len(png) // 2 + 16] = bytes(16)  # a damaged data stream inside a real PNG
    (gallery / "dog" / "corrupt.png").write_bytes(bytes(png))
    (gallery / "dog" / "text.jpg").write_text("not an image at all")
    (gallery / "dog" / "notes.txt").write_text("a sidecar file")
    os.symlink("loop.jpg", gallery / "dog" / "loop.jpg")  # a symlink to itself
    os.symlink(gallery, gallery / "cat" / "back-to-root")  # a folder loop
    os.symlink(outside / "gone.jpg", gallery / "dog" / "dangling.jpg")
    os.mkfifo(gallery / "dog" / "pipe.jpg")  # opening it would block forever
    expected = {
        "zero.jpg": "zero-byte",
        "truncated.jpg": "truncated",
        "corrupt.png": "corrupt",
        "text.jpg": "not-an-image",
        "notes.txt": "unsupported-type",
        "loop.jpg": "symlink-loop",
        "back-to-root": "symlink-loop",
        "dangling.jpg": "broken-symlink",
        "pipe.jpg": "not-a-file",
    }
    if os.geteuid() != 0:  # root reads anything, so only check permissions as a normal user
        write_photo(gallery / "dog" / "secret.jpg", 99).chmod(0)
        expected["secret.jpg"] = "unreadable"
    return expected


@pytest.fixture()
def make_gallery(tmp_path):
    """``make_gallery({"cat": 3, "dog": 2})`` → a folder of category sub-folders with jpg/png/webp photos."""

    def make(counts: dict[str, int], root: Path | None = None, seed: int = 0) -> Path:
        root = root or tmp_path / "gallery"
        for c, (category, count) in enumerate(sorted(counts.items())):
            for i in range(count):
                write_photo(root / category / f"{category}_{i}.{FORMATS[i % len(FORMATS)]}", seed * 1000 + c * 100 + i)
        return root

    return make


@pytest.fixture()
def build(tmp_path, tiny_baseline):
    """``build(gallery=..., **options)`` → report; builds into tmp_path/index with the tiny baseline encoder."""

    def run(encoder=None, **options):
        options.setdefault("index_dir", tmp_path / "index")
        options.setdefault("workers", 0)
        options.setdefault("batch_size", 8)
        options.setdefault("progress", False)
        return build_index(encoder or tiny_baseline, BuildOptions(**options))

    return run


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster for the session; its teardown fails if any of its processes outlive it."""
    cluster = LocalRayCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        survivors = cluster.stop()
        assert not survivors, f"Ray processes outlived the cluster (killed now): {survivors}"


@pytest.fixture(scope="session")
def ray_driver(ray_cluster):
    """This test process connected to the cluster, as a Ray driver (the Ray distributor reuses the connection)."""
    # Ray reads its token settings when it is imported: a driver imported before this fixture waits for the GCS
    # ten minutes and fails. Say so at once (tests check "is ray connected" through sys.modules, not by importing).
    assert "ray" not in sys.modules, "ray was imported before the cluster fixture set its token environment"
    os.environ.update(ray_cluster.driver_env)
    import ray

    ray.init(address=ray_cluster.address, logging_level="warning")
    try:
        yield ray
    finally:
        ray.shutdown()
