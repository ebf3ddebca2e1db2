"""What every reader does to a query before its backend searches: shape checks, and the all-padding answer."""

from __future__ import annotations

import numpy as np


def checked_queries(vectors: np.ndarray, dim: int, k: int) -> np.ndarray:
    """``vectors`` as float32 [n, dim] (one vector may be 1-d); ValueError for another shape or k < 1."""
    queries = np.asarray(vectors, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries[None, :]
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ValueError(f"Query vectors must have shape [n, {dim}], got {list(np.shape(vectors))}.")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    return queries


def no_hits(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The all-padding result: scores -inf, ids -1."""
    return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)
