"""The one registry of backends, keyed by where an index is (a folder, or a Milvus server's alias).

A new backend is one module under ``backends/`` with ``open_source(location)`` and
``open_writer(location, options)``, plus one line in :data:`BACKENDS`. Backends are imported when first used,
so the service never imports an optional client it does not need.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from .api import PublishOptions, Source, Writer
from .errors import BuildError
from .location import (
    DEFAULT_CONSISTENCY,
    DEFAULT_MILVUS_TIMEOUT_S,
    FolderLocation,
    Location,
    MilvusLocation,
    is_milvus_uri,
)

# engine name (the CLI's --engine, the manifest's index.engine) -> the backend module
BACKENDS = {
    "faiss": "photo_index.backends.folder",
    "milvus": "photo_index.backends.milvus",
}
ENGINES = tuple(BACKENDS)


def backend(location: Location) -> ModuleType:
    return importlib.import_module(BACKENDS[location.engine])


def open_source(location: Location | str | Path) -> Source:
    """The live index at ``location`` (a path or ``milvus://``/``http(s)://`` string: see :func:`locate`)."""
    if isinstance(location, str | Path):
        location = locate(index_dir=location)
    return backend(location).open_source(location)


def open_writer(location: Location, options: PublishOptions) -> Writer:
    return backend(location).open_writer(location, options)


def locate(engine: str | None = None, *, index_dir: str | Path | None = None, milvus_uri: str | None = None,
           collection: str | None = None, token: str = "", timeout_s: float = DEFAULT_MILVUS_TIMEOUT_S,
           consistency: str = DEFAULT_CONSISTENCY) -> Location:
    """The location the flags name, validated. ``engine`` None: an ``index_dir`` that is a ``milvus://`` /
    ``http(s)://`` URI means Milvus, anything else a folder; ``faiss`` / ``milvus`` say it explicitly."""
    if engine is None:
        engine = "milvus" if index_dir is not None and is_milvus_uri(index_dir) else "faiss"
        if engine == "milvus":
            milvus_uri, index_dir = str(index_dir), None
    if engine == "faiss":
        if index_dir is None:
            raise BuildError("Give the index folder (or --engine milvus with --milvus-uri and --collection).")
        return FolderLocation(Path(index_dir))
    if engine == "milvus":
        if not milvus_uri or not collection:
            raise BuildError("--engine milvus needs --milvus-uri and --collection (env SBIR_MILVUS_URI, "
                             "SBIR_COLLECTION).")
        return MilvusLocation(milvus_uri, collection, token=token, timeout_s=timeout_s, consistency=consistency)
    raise ValueError(f"Unknown vector engine {engine!r} (known: {', '.join(ENGINES)}).")
