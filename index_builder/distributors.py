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
# Those that embed in the build's own process, with the encoder it loaded. The others' workers load their own copy
# (one team of threads each), so the build process's copy only describes the encoder.
EMBED_IN_PROCESS = frozenset({"local"})


def build_encoder_placement(name: str, device: str, lanes: str, precision: str) -> tuple[str, str, str]:
    """(device, lanes, precision) for the encoder the build process loads with distributor ``name``: as asked when
    it embeds there; on the CPU in one lane and fp32 when its workers embed (their device and precision are the
    distributor's options: each worker resolves ``precision`` on its own device, from these fp32 weights)."""
    return (device, lanes, precision) if name in EMBED_IN_PROCESS else ("cpu", "1", "fp32")


def get_distributor(name: str = "local", **options) -> Distributor:
    """A distributor by name; ``options`` are its own (e.g. the Ray address)."""
    if name not in DISTRIBUTORS:
        raise ValueError(f"Unknown distributor {name!r} (known: {', '.join(DISTRIBUTORS)}).")
    module, cls = DISTRIBUTORS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)
