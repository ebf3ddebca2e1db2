"""faiss, imported with its loader quiet: the loader logs at INFO which CPU build it tries and loads (several lines,
failed probes too), noise in the log of a service or a build run at INFO. Its warnings still come through.
Import faiss from here."""

from __future__ import annotations

import logging

logging.getLogger("faiss.loader").setLevel(logging.WARNING)

import faiss  # noqa: E402 - after quieting the loader, which logs during this import

__all__ = ["faiss"]
