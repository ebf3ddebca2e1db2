"""Tolerances for float32 results, so a test holds on every CPU kernel and not only the one it was written on.

PyTorch picks its CPU kernels at run time (``ATEN_CPU_CAPABILITY``: default, avx2, avx512; oneDNN adds AMX
on newer Xeons); each sums in another order and rounds differently, by a few units in the last place.
A float32 result is therefore compared with a tolerance of some float32 steps *at the magnitude of the
values that were combined* (a difference of two numbers near 1.0 carries the rounding of 1.0, even when
it is 0), never with a fixed 1e-7 that lies below float32 resolution. A reference that the test computes
itself is better computed in float64 (see tests/encoder/test_parity.py).
"""

from __future__ import annotations

import torch

F32_EPS = float(torch.finfo(torch.float32).eps)  # 1.19e-7: one step of float32 at 1.0


def f32_tol(magnitude: float = 1.0, ulps: float = 16) -> float:
    """An absolute tolerance of `ulps` float32 steps at `magnitude` (the size of the values combined)."""
    return ulps * F32_EPS * abs(magnitude)
