"""The folder backend (the embedded default): versions of FAISS index + vectors + SQLite records on disk."""

from __future__ import annotations

from ...api import PublishOptions
from ...location import FolderLocation
from .reader import FolderSource, IndexReader
from .writer import FolderWriter

__all__ = ["FolderSource", "FolderWriter", "IndexReader", "open_source", "open_writer"]


def open_source(location: FolderLocation) -> FolderSource:
    return FolderSource(location.path)


def open_writer(location: FolderLocation, options: PublishOptions) -> FolderWriter:
    return FolderWriter(location, options)
