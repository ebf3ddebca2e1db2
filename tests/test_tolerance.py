"""The shared float tolerances of the tests: they forgive a kernel's rounding, and nothing else."""

import pytest

from tests.tolerance import F32_EPS, assert_same_top_k


def test_same_top_k_forgives_rounding_and_the_order_of_near_ties_only():
    scores = [[0.9, 0.5, 0.5, 0.1]]
    assert_same_top_k([[0.9 + F32_EPS, 0.5, 0.5, 0.1]], [[1, 3, 2, 4]], scores, [[1, 2, 3, 4]])  # tie swapped
    assert_same_top_k([[0.9, 0.5, 0.5, 0.1]], [[1, 2, 3, 7]], [[0.9, 0.5, 0.5, 0.1]], [[1, 2, 3, 4]])  # edge tie
    with pytest.raises(AssertionError, match="do not tie"):
        assert_same_top_k(scores, [[2, 1, 3, 4]], scores, [[1, 2, 3, 4]])
    with pytest.raises(AssertionError):
        assert_same_top_k([[0.9, 0.5, 0.5, 0.11]], [[1, 2, 3, 4]], scores, [[1, 2, 3, 4]])
