"""The seam between the index format and the vector search engine.

The builder hands an engine the version's vectors (rows in ascending id order) and their ids; the
engine writes whatever files it needs into the version folder and returns the manifest section
that lets it open them again. The reader only talks to :class:`VectorIndex`.

A served index is reached through an :class:`IndexSource` (what the app polls and ``info``/``verify`` read):
a folder of versions for FAISS (``reader.FolderSource``), or a Milvus alias over photo collections
(``milvus.reader.MilvusSource``), whose server holds the vectors and records itself. :func:`open_source` is the
one place that picks between them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class VectorIndex(Protocol):
    """A loaded, read-only vector index searched by inner product (thread-safe)."""

    size: int
    dim: int

    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``queries`` float32 [n, d] → (scores [n, k] float32, ids [n, k] int64), -1 padded;
        ``allowed_ids`` (sorted int64) restricts results to those ids exactly."""
        ...

    def ids(self) -> np.ndarray:
        """Every id the index holds (for verification)."""
        ...

    def self_check(self, ids: np.ndarray, vectors: np.ndarray) -> list[str]:
        """Problems between the index's content and the version's stored ``vectors`` (for verify)."""
        ...

    def close(self) -> None: ...


class Engine(Protocol):
    name: str

    def build(
        self,
        vectors: np.ndarray,
        ids: np.ndarray,
        folder: Path,
        *,
        factory: str | None = None,
        device: str = "auto",
        progress: bool = True,
        recall_target: float = 0.95,
    ) -> dict:
        """Index ``vectors`` [N, D] under ``ids`` [N] into ``folder``; returns the manifest's ``index`` section.

        Approximate indexes tune their search parameters to reach ``recall_target`` recall@10."""
        ...

    def tune(self, folder: Path, section: dict, vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, *,
             recall_target: float = 0.95) -> dict:
        """``section`` (what :meth:`build` returned for ``folder``) with its search parameters recalibrated to
        ``recall_target`` recall@10 on real ``queries`` [Q, D]; returned unchanged when there is nothing to tune.
        Must not modify the files in ``folder`` (a served version)."""
        ...

    def open(self, folder: Path, section: dict, vectors: np.ndarray, ids: np.ndarray, *, device: str = "auto"
             ) -> VectorIndex:
        """Load what :meth:`build` wrote (``vectors``/``ids`` are the version's stored rows, memory-mapped)."""
        ...

    def resolve_factory(self, size: int, dim: int, factory: str | None) -> str:
        """The index description a build of ``size`` vectors would use (explicit or chosen by size)."""
        ...


class IndexSource(Protocol):
    """Where the live index is: polled for its version, opened into a reader (``IndexReader``-like)."""

    def describe(self) -> str: ...

    def current(self) -> str | None:
        """The live version's name (cheap, for polling); None when nothing is published yet."""
        ...

    def open(self, device: str = "cpu"):
        """A reader of the live version (``version``, ``dim``, ``fingerprint``, ``search``, ``records``, ...)."""
        ...

    def info(self, version: str | None = None) -> dict: ...

    def verify(self, version: str | None = None) -> list[str]: ...

    def close(self) -> None: ...


ENGINES = ("faiss", "milvus")


def open_source(engine: str = "faiss", *, index_dir: str | Path | None = None, milvus_uri: str | None = None,
                collection: str | None = None, timeout_s: float = 10.0, consistency: str = "Strong") -> IndexSource:
    """The :class:`IndexSource` of ``engine``: ``index_dir`` for FAISS, ``milvus_uri`` + ``collection`` for Milvus."""
    if engine == "faiss":
        from .reader import FolderSource

        return FolderSource(index_dir if index_dir is not None else "index")
    if engine == "milvus":
        from .errors import BuildError
        from .milvus.reader import MilvusSource

        if not milvus_uri or not collection:
            raise BuildError("--engine milvus needs --milvus-uri and --collection (SBIR_MILVUS_URI, SBIR_COLLECTION).")
        return MilvusSource(milvus_uri, collection, timeout=timeout_s, consistency=consistency)
    raise ValueError(f"Unknown vector engine {engine!r} (known: {', '.join(ENGINES)}).")


def get_engine(name: str = "faiss") -> Engine:
    if name == "faiss":
        from .faiss_engine import FaissEngine

        return FaissEngine()
    raise ValueError(f"Unknown vector engine {name!r} (known: faiss).")
