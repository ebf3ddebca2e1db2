"""Tolerances for float32 results, so a test holds on every CPU kernel and not only the one it was written on.

PyTorch picks its CPU kernels at run time (``ATEN_CPU_CAPABILITY``: default, avx2, avx512; oneDNN adds AMX
on newer Xeons); each sums in another order and rounds differently, by a few units in the last place.
A float32 result is therefore compared with a tolerance of some float32 steps *at the magnitude of the
values that were combined* (a difference of two numbers near 1.0 carries the rounding of 1.0, even when
it is 0), never with a fixed 1e-7 that lies below float32 resolution. A reference that the test computes
itself is better computed in float64 (see tests/encoder/test_parity.py).
"""

from __future__ import annotations

import numpy as np
import torch

F32_EPS = float(torch.finfo(torch.float32).eps)  # 1.19e-7: one step of float32 at 1.0


def f32_tol(magnitude: float = 1.0, ulps: float = 16) -> float:
    """An absolute tolerance of `ulps` float32 steps at `magnitude` (the size of the values combined)."""
    return ulps * F32_EPS * abs(magnitude)


def assert_same_top_k(scores, found, expected_scores, expected_found, *, atol: float | None = None) -> None:
    """Two computations of one top-k search agree: scores within float32 rounding (they are cosines, of
    magnitude 1, so the tolerance is absolute), and the same results in the same order, except where scores tie
    within that rounding: another kernel may order a near-tie either way, and a near-tie at the k-th place may
    bring in another result."""
    atol = f32_tol() if atol is None else atol
    scores, expected_scores = np.asarray(scores, dtype=np.float64), np.asarray(expected_scores, dtype=np.float64)
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=atol)
    for row, (row_scores, got, want) in enumerate(zip(expected_scores, found, expected_found, strict=True)):
        got, want = list(np.asarray(got).tolist()), list(np.asarray(want).tolist())
        assert len(got) == len(want), (row, got, want)
        for place, (result, wanted) in enumerate(zip(got, want, strict=True)):
            if result == wanted:
                continue
            tied = {want[j] for j in range(len(want)) if abs(row_scores[j] - row_scores[place]) <= atol}
            at_the_edge = abs(row_scores[place] - row_scores[-1]) <= atol
            assert result in tied or at_the_edge, (
                f"query {row}, place {place}: {result!r} where {wanted!r} was expected, and their scores do not tie "
                f"(got {got}, expected {want}, scores {row_scores.tolist()})")
