"""Fixtures for index_builder tests: tiny synthetic galleries and a one-call build helper."""

from __future__ import annotations

from pathlib import Path

import pytest

from index_builder.builder import BuildOptions, build_index
from tests.imagegen import random_photo

FORMATS = ("jpg", "png", "webp")


def write_photo(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    random_photo(size, seed=seed).save(path)
    return path


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
