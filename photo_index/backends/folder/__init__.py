"""The folder backend (the embedded default): FAISS indexes + vectors + SQLite records on disk, as immutable
segments listed by small version manifests (``segmented.py``, ``segments/``); folders of the older one-copy
format (``writer.FolderWriter``, ``reader.IndexReader``) still open and serve."""

from __future__ import annotations

from ...api import PublishOptions
from ...format import CURRENT, STAGING, VERSIONS
from ...location import FolderLocation
from .reader import FolderSource, IndexReader
from .segmented import REPORTS, SegmentedReader, SegmentedWriter
from .segments.store import QUERIES, SEGMENTS
from .segments.version import TOMBSTONES
from .writer import FolderWriter

__all__ = ["INDEX_ENTRIES", "FolderSource", "FolderWriter", "IndexReader", "SegmentedReader", "SegmentedWriter",
           "open_source", "open_writer"]

# What an index folder holds at its top level, each entry this backend's to write, replace and delete (a build adds
# its lock, staging and failed-file list): anything else there is the user's and left alone.
INDEX_ENTRIES = frozenset({CURRENT, VERSIONS, STAGING, SEGMENTS, TOMBSTONES, QUERIES, REPORTS})


def open_source(location: FolderLocation) -> FolderSource:
    return FolderSource(location.path)


def open_writer(location: FolderLocation, options: PublishOptions) -> SegmentedWriter:
    return SegmentedWriter(location, options)
