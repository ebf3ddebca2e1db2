"""The photo index as a thing you open, search, verify and publish to (docs/architecture.md).

``api`` holds the record type and the ``Reader``/``Source``/``Writer`` protocols, ``location`` the typed
location of an index (a folder or a Milvus alias), ``registry`` the one table of backends, ``format`` the
folder format and its manifest, ``checks`` info and verify, ``backends/`` one package per backend.
"""

from .api import PhotoRecord, PublishOptions, Reader, Source, Writer
from .errors import BuildError, EngineUnavailableError, IndexCorruptError, IndexNotFoundError
from .format import current_version
from .location import FolderLocation, Location, MilvusLocation
from .registry import locate, open_source, open_writer

__all__ = [
    "BuildError",
    "EngineUnavailableError",
    "FolderLocation",
    "IndexCorruptError",
    "IndexNotFoundError",
    "Location",
    "MilvusLocation",
    "PhotoRecord",
    "PublishOptions",
    "Reader",
    "Source",
    "Writer",
    "current_version",
    "locate",
    "open_source",
    "open_writer",
]
