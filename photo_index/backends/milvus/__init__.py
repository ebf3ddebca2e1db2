"""The Milvus backend: photo collections switched by an alias, manifests in a metadata collection.

``client`` talks to the server (bounded timeouts, errors mapped to ours), ``reader`` serves a collection to the app
and to ``info``/``verify``, ``writer`` publishes a build (in place, or a new collection + alias switch).
"""

from __future__ import annotations

from ...api import PublishOptions
from ...location import MilvusLocation
from .reader import MilvusReader, MilvusSource
from .writer import MilvusWriter

__all__ = ["MilvusReader", "MilvusSource", "MilvusWriter", "open_source", "open_writer"]


def open_source(location: MilvusLocation) -> MilvusSource:
    return MilvusSource(location)


def open_writer(location: MilvusLocation, options: PublishOptions) -> MilvusWriter:
    return MilvusWriter(location, options)
