"""One package per backend, each registered in :mod:`photo_index.registry`."""
