"""Retrieval metrics: sklearn parity on random rankings, hand-computed AP@k / P@k, chunking."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from training.metrics import rank_gallery


def _random_problem(seed: int, n_q: int = 30, n_g: int = 97, n_classes: int = 5, dim: int = 16):
    rng = np.random.default_rng(seed)
    q = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(n_q, dim))).float(), dim=1)
    g = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(n_g, dim))).float(), dim=1)
    return q, rng.integers(0, n_classes, n_q), g, rng.integers(0, n_classes, n_g)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_all_equals_sklearn_on_random_rankings(seed):
    q, ql, g, gl = _random_problem(seed)
    result = rank_gallery(q, ql, g, gl)
    sims = (q @ g.t()).numpy().astype(np.float64)
    for i in range(len(ql)):
        relevant = gl == ql[i]
        if not relevant.any():
            assert np.isnan(result.ap_all[i])
            continue
        assert result.ap_all[i] == pytest.approx(average_precision_score(relevant, sims[i]), abs=1e-9)


def test_chunked_ranking_matches_one_chunk():
    q, ql, g, gl = _random_problem(3, n_q=50)
    whole = rank_gallery(q, ql, g, gl, keep_top=5)
    chunked = rank_gallery(q, ql, g, gl, keep_top=5, memory_bytes=1)  # one query per chunk
    np.testing.assert_array_equal(whole.top, chunked.top)
    np.testing.assert_allclose(whole.ap_all, chunked.ap_all, atol=1e-12)
    np.testing.assert_allclose(whole.precision_at[100], chunked.precision_at[100], atol=1e-12)


def _hand_case():
    """One query of class 1; gallery scores make the ranking rel = [1, 0, 1, 0, 0, 1] (R = 3)."""
    rel = [1, 0, 1, 0, 0, 1]
    scores = torch.linspace(1.0, 0.0, len(rel))
    gallery = torch.stack([scores, torch.zeros_like(scores)], dim=1)  # dot with query [1, 0] = score
    labels = [1 if r else 0 for r in rel]
    return torch.tensor([[1.0, 0.0]]), [1], gallery, labels


def test_hand_computed_ap_at_k_and_precision_at_k():
    q, ql, g, gl = _hand_case()
    result = rank_gallery(q, ql, g, gl, ap_ks=(1, 2, 3, 4), precision_ks=(1, 2, 3, 5, 10), keep_top=6)
    assert result.top[0].tolist() == [0, 1, 2, 3, 4, 5]
    # P(1)=1, P(3)=2/3, P(6)=1/2 at the relevant ranks.
    assert result.ap_all[0] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    assert result.ap_at[1][0] == pytest.approx(1.0)  # 1 / min(1, 3)
    assert result.ap_at[2][0] == pytest.approx(1 / 2)  # (1) / min(2, 3)
    assert result.ap_at[3][0] == pytest.approx((1 + 2 / 3) / 3)
    assert result.ap_at[4][0] == pytest.approx((1 + 2 / 3) / 3)
    assert result.precision_at[1][0] == pytest.approx(1.0)
    assert result.precision_at[2][0] == pytest.approx(0.5)
    assert result.precision_at[3][0] == pytest.approx(2 / 3)
    assert result.precision_at[5][0] == pytest.approx(2 / 5)
    assert result.precision_at[10][0] == pytest.approx(3 / 10)  # k beyond the gallery: still / k


def test_queries_without_relevant_items_are_excluded_and_counted():
    q, _, g, gl = _hand_case()
    result = rank_gallery(torch.cat([q, q]), [1, 7], g, gl)
    summary = result.summary()
    assert summary["n_queries"] == 1 and summary["n_queries_without_relevant"] == 1
    assert summary["map_all"] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    assert set(summary) >= {"map_all", "map_200", "p_100", "p_200", "n_queries", "n_gallery"}
