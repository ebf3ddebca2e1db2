"""The folder backend (the embedded default): FAISS indexes + vectors + SQLite records on disk, as immutable
segments listed by small version manifests (``segmented.py``, ``segments/``); folders of the older one-copy
format (``writer.FolderWriter``, ``reader.IndexReader``) still open and serve."""

from __future__ import annotations

from ...api import PublishOptions
from ...location import FolderLocation
from .reader import FolderSource, IndexReader
from .segmented import SegmentedReader, SegmentedWriter
from .writer import FolderWriter

__all__ = ["FolderSource", "FolderWriter", "IndexReader", "SegmentedReader", "SegmentedWriter", "open_source",
           "open_writer"]


def open_source(location: FolderLocation) -> FolderSource:
    return FolderSource(location.path)


def open_writer(location: FolderLocation, options: PublishOptions) -> SegmentedWriter:
    return SegmentedWriter(location, options)
