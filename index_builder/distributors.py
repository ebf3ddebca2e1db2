"""The registry of distributors: where the embedding step's reader and model run.

A new distributor is one module with a class following :class:`index_builder.embedding.Distributor`, plus one
line in :data:`DISTRIBUTORS` (imported when chosen, so Ray is only needed by ``--distributor ray``).
"""

from __future__ import annotations

import importlib

from .embedding import Distributor

# name (--distributor) -> "module:class"
DISTRIBUTORS = {
    "local": "index_builder.local_distributor:LocalDistributor",
    "ray": "index_builder.ray_distributor:RayDistributor",
}


def get_distributor(name: str = "local", **options) -> Distributor:
    """A distributor by name; ``options`` are its own (e.g. the Ray address)."""
    if name not in DISTRIBUTORS:
        raise ValueError(f"Unknown distributor {name!r} (known: {', '.join(DISTRIBUTORS)}).")
    module, cls = DISTRIBUTORS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)
