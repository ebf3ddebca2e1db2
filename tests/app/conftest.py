"""Fixtures of the app tests: the tiny encoder, a real index built by index_builder, a test client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from encoder import load_encoder
from tests.app.support import app_client, build_index, make_gallery, require_browser


@pytest.fixture(scope="session")
def app_encoder():
    """The encoder the index builder uses with no checkpoint: the tiny frozen-CLIP baseline."""
    return load_encoder(backbone="sbir-tiny", pretrained="none", device="cpu")


@pytest.fixture(scope="session")
def app_index(tmp_path_factory, app_encoder) -> tuple[Path, Path]:
    """(gallery, index_dir): a two-category gallery and its index, built once per session."""
    root = tmp_path_factory.mktemp("app-index")
    gallery = make_gallery(root / "gallery")
    build_index(gallery, root / "index", app_encoder)
    return gallery, root / "index"


@pytest.fixture()
def client(app_index, app_encoder) -> Iterator[TestClient]:
    with app_client(app_index[1], app_encoder) as test_client:
        yield test_client




@pytest.fixture(scope="session")
def browser_available() -> None:
    """Used by the page tests (NEEDS_BROWSER): skip, or under SBIR_REQUIRE_BROWSER=1 fail, before any set-up."""
    require_browser()
