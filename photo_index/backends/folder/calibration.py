"""Real query vectors that FAISS search parameters are calibrated on (``calibration_queries.npy``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import BuildError
from ...format import CALIBRATION_QUERIES


def load_queries(path: str | Path, dim: int) -> np.ndarray:
    """Query vectors [Q, dim] from a ``.npy`` file, checked (finite, non-zero rows), as float32."""
    try:
        queries = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise BuildError(f"Cannot read query vectors from {path}: {error}") from error
    if queries.ndim != 2 or queries.shape[1] != dim or len(queries) == 0 or queries.dtype.kind not in "fiu":
        raise BuildError(f"{path} holds {queries.dtype}{list(queries.shape)}; expected numbers of shape "
                         f"[Q >= 1, {dim}] "
                         "(query vectors of the index's encoder).")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    usable = np.isfinite(queries).all(axis=1) & (np.abs(queries).sum(axis=1) > 0)
    if not usable.all():
        raise BuildError(f"{path}: {int((~usable).sum())} of {len(queries)} query vectors are zero or not finite.")
    return queries


def saved_queries(folder: Path, dim: int) -> np.ndarray | None:
    """The query sample a version was tuned on, or None (none kept, or unreadable: calibrate without it)."""
    path = folder / CALIBRATION_QUERIES
    if not path.is_file():
        return None
    try:
        return load_queries(path, dim)
    except BuildError:
        return None
