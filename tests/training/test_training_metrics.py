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


# ---------------------------------------------------------------- the three published mAP@k conventions
def _ranked(rel):
    """One query of class 1 whose gallery ranks exactly as ``rel`` (1 = relevant)."""
    scores = torch.linspace(1.0, 0.0, len(rel))
    return torch.tensor([[1.0, 0.0]]), [1], torch.stack([scores, torch.zeros_like(scores)], 1), list(rel)


def test_the_three_map_conventions_on_a_hand_computed_ranking():
    # rel = [0,1,1,0,1,1,0,1]: R = 5; P at the relevant ranks 2,3,5,6,8 = 1/2, 2/3, 3/5, 4/6, 5/8
    result = rank_gallery(*_ranked([0, 1, 1, 0, 1, 1, 0, 1]), ap_ks=(4,), precision_ks=())
    # (a) non-interpolated, / min(k, R): top 4 holds ranks 2 and 3
    assert result.ap_at[4][0] == pytest.approx((1 / 2 + 2 / 3) / 4)
    # (b) VOC: the list is cut at 4, each hit takes the best precision at or below it (2/3 for both)
    assert result.ap_at_voc[4][0] == pytest.approx((2 / 3 + 2 / 3) / 4)
    # (c) / relevant inside the top 4 (2 of them)
    assert result.ap_at_in_topk[4][0] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # over the whole ranking (c) is (a); VOC lifts ranks 2 and 5 to 2/3
    assert result.ap_all[0] == pytest.approx((1 / 2 + 2 / 3 + 3 / 5 + 4 / 6 + 5 / 8) / 5)
    assert result.ap_all_voc[0] == pytest.approx((4 * (2 / 3) + 5 / 8) / 5)
    summary = result.summary()
    assert summary["map_4"] == pytest.approx(7 / 24) and summary["map_4_voc"] == pytest.approx(1 / 3)
    assert summary["map_4_in_topk"] == pytest.approx(7 / 12) and "map_all_voc" in summary


def test_voc_interpolation_looks_only_inside_the_cut_list():
    # rel = [0,1,0,1,1,1]: inside the top 2 the envelope at rank 2 is P(2) = 1/2, not the later 4/6
    result = rank_gallery(*_ranked([0, 1, 0, 1, 1, 1]), ap_ks=(2,), precision_ks=())
    assert result.ap_at_voc[2][0] == pytest.approx((1 / 2) / 2)
    assert result.ap_at_in_topk[2][0] == pytest.approx(1 / 2)
    assert result.ap_all_voc[0] == pytest.approx((4 / 6 + 4 / 6 + 4 / 6 + 4 / 6) / 4)


def test_no_hit_inside_the_top_k_scores_zero_in_every_convention():
    result = rank_gallery(*_ranked([0, 0, 1]), ap_ks=(2,), precision_ks=())
    assert result.ap_at[2][0] == result.ap_at_voc[2][0] == result.ap_at_in_topk[2][0] == 0.0


def _voc_ap(rel: np.ndarray, denominator: int) -> float:
    """The published VOC recipe step by step: recall/precision curve, envelope, area under the steps."""
    hits = np.cumsum(rel)
    recall = np.concatenate([[0.0], hits / denominator, [1.0]])
    precision = np.concatenate([[0.0], hits / np.arange(1, len(rel) + 1), [0.0]])
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


@pytest.mark.parametrize("seed", [0, 1])
def test_conventions_match_their_reference_recipes_on_random_rankings(seed):
    q, ql, g, gl = _random_problem(seed, n_q=20, n_g=120, n_classes=3)
    k = 30
    result = rank_gallery(q, ql, g, gl, ap_ks=(k,), precision_ks=())
    sims = (q @ g.t()).numpy().astype(np.float64)
    for i in range(len(ql)):
        order = np.argsort(-sims[i], kind="stable")
        rel = (gl[order] == ql[i]).astype(float)
        n_rel = int(rel.sum())
        # (c) is sklearn's AP of the top k alone (SEM-PCYC's apsak), 0 without a hit there
        top = rel[:k]
        expected_c = average_precision_score(top, sims[i][order][:k]) if top.any() else 0.0
        assert result.ap_at_in_topk[k][i] == pytest.approx(expected_c, abs=1e-9)
        assert result.ap_at_voc[k][i] == pytest.approx(_voc_ap(top, min(k, n_rel)), abs=1e-9)
        assert result.ap_all_voc[i] == pytest.approx(_voc_ap(rel, n_rel), abs=1e-9)
        assert result.ap_at_voc[k][i] >= result.ap_at[k][i] - 1e-12  # interpolation never lowers AP


def test_evaluation_summary_and_table_name_every_convention():
    from training.evaluate import TABLE_KEYS
    from training.report import format_table

    q, ql, g, gl = _random_problem(4)
    summary = rank_gallery(q, ql, g, gl).summary()
    names = {"map_all", "map_all_voc", "map_200", "map_200_voc", "map_200_in_topk"}
    assert names <= set(summary) and names <= set(TABLE_KEYS)
    header = format_table({"run": summary}, TABLE_KEYS).splitlines()[0].split()
    assert header == list(TABLE_KEYS)  # wide names are never cut or run together


def test_the_device_path_of_the_voc_sum_equals_the_cpu_path():
    from training.metrics import _interpolated_precision_sum_torch, interpolated_precision_sum

    rel = (torch.rand(7, 300, generator=torch.Generator().manual_seed(0)) < 0.1).double()
    precision = rel.cumsum(1) / torch.arange(1, 301, dtype=torch.float64)
    torch.testing.assert_close(interpolated_precision_sum(precision, rel),
                               _interpolated_precision_sum_torch(precision, rel))


def _one_ranking(relevance: list[int]):
    """One query whose gallery is ranked exactly in the given order (relevant = 1)."""
    n = len(relevance)
    scores = torch.linspace(0.9, 0.1, n)
    gallery = torch.stack([scores, (1 - scores**2).sqrt()], dim=1)
    return torch.tensor([[1.0, 0.0]]), [0], gallery, [0 if r else 1 for r in relevance]


def test_ap_at_k_divided_by_k_and_by_min_k_r_on_one_ranking():
    # rel = 1 0 1 0 1 0, R = 3, k = 4: Σ_{i≤4} P(i) rel(i) = 1/1 + 2/3 = 5/3
    q, ql, g, gl = _one_ranking([1, 0, 1, 0, 1, 0])
    result = rank_gallery(q, ql, g, gl, ap_ks=(4,), precision_ks=(4,))
    assert result.ap_at[4][0] == pytest.approx((5 / 3) / 3)  # ÷ min(k, R) = 0.5556
    assert result.ap_at_div_k[4][0] == pytest.approx((5 / 3) / 4)  # ÷ k = 0.4167
    assert result.ap_at_in_topk[4][0] == pytest.approx((5 / 3) / 2)  # ÷ relevant in the top k
    summary = result.summary()
    assert summary["map_4"] == pytest.approx(0.5556, abs=1e-4)
    assert summary["map_4_div_k"] == pytest.approx(0.4167, abs=1e-4)


def test_a_class_with_fewer_relevant_photos_than_k_is_capped_at_r_over_k_when_divided_by_k():
    # Sketchy-21's skyscraper: 161 test photos < 200. A perfect ranking is 1.0 ÷ min(k, R), but 161/200 ÷ k.
    q, ql, g, gl = _one_ranking([1] * 161 + [0] * 100)
    result = rank_gallery(q, ql, g, gl, ap_ks=(200,))
    assert result.ap_at[200][0] == pytest.approx(1.0)
    assert result.ap_at_div_k[200][0] == pytest.approx(161 / 200)


def test_every_printed_number_names_its_convention_and_source(capsys):
    from training.evaluate import METRIC_SOURCES, TABLE_KEYS, print_summary

    q, ql, g, gl = _random_problem(5)
    print_summary("run", rank_gallery(q, ql, g, gl).summary())
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[0] for line in lines] == list(TABLE_KEYS)
    for line in lines:
        assert line.rstrip().endswith(METRIC_SOURCES[line.split()[0]])
    shown = dict(line.split()[:2] for line in lines)
    assert "÷ 200" in METRIC_SOURCES["map_200_div_k"] and "÷ min(200, R)" in METRIC_SOURCES["map_200"]
    assert float(shown["map_200_div_k"]) <= float(shown["map_200"])  # R < 200 everywhere in this small gallery
    assert "Doodle2Search" not in " ".join(METRIC_SOURCES.values())  # its only trace is commented-out code


def _tied_problem(seed: int, n_q: int = 20, n_g: int = 60, n_classes: int = 3):
    """Features on a coarse grid, so many gallery items tie for a query."""
    rng = np.random.default_rng(seed)
    q = torch.from_numpy(rng.integers(0, 2, (n_q, 3))).double()
    g = torch.from_numpy(rng.integers(0, 2, (n_g, 3))).double()
    return q, rng.integers(0, n_classes, n_q), g, rng.integers(0, n_classes, n_g)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_all_equals_sklearn_when_scores_tie(seed):
    # was: a stable sort, so tied scores kept gallery order and AP depended on it
    q, ql, g, gl = _tied_problem(seed)
    result = rank_gallery(q, ql, g, gl)
    sims = (q @ g.t()).numpy()
    assert any(len(np.unique(row)) < len(row) for row in sims)
    for i in range(len(ql)):
        relevant = gl == ql[i]
        if relevant.any():
            assert result.ap_all[i] == pytest.approx(average_precision_score(relevant, sims[i]), abs=1e-9)


def test_a_collapsed_model_scores_chance_not_the_gallery_order():
    # was: constant embeddings, gallery [0, 0, 1, 1] → AP 1.0 and 0.4167 (sklearn: 0.5, 0.5)
    result = rank_gallery(torch.ones(2, 4), [0, 1], torch.ones(4, 4), [0, 0, 1, 1], ap_ks=(2,), precision_ks=(1, 2))
    np.testing.assert_allclose(result.ap_all, [0.5, 0.5])
    np.testing.assert_allclose(result.ap_all_voc, [0.5, 0.5])
    np.testing.assert_allclose(result.precision_at[1], [0.5, 0.5])  # the expected value over tie orders
    np.testing.assert_allclose(result.precision_at[2], [0.5, 0.5])


@pytest.mark.parametrize("seed", [3, 4])
def test_every_metric_is_independent_of_gallery_order_when_scores_tie(seed):
    q, ql, g, gl = _tied_problem(seed)
    shuffled = np.random.default_rng(seed).permutation(len(gl))
    kwargs = {"ap_ks": (7, 25), "precision_ks": (5, 13)}
    plain, permuted = rank_gallery(q, ql, g, gl, **kwargs), rank_gallery(q, ql, g[shuffled], gl[shuffled], **kwargs)
    for name in ("ap_all", "ap_all_voc"):
        np.testing.assert_allclose(getattr(plain, name), getattr(permuted, name), atol=1e-12)
    for name in ("ap_at", "ap_at_voc", "ap_at_in_topk", "ap_at_div_k", "precision_at"):
        for k, values in getattr(plain, name).items():
            np.testing.assert_allclose(values, getattr(permuted, name)[k], atol=1e-12)


def test_precision_at_k_is_the_expected_value_over_the_orders_of_a_tied_run():
    import itertools

    scores = [3, 2, 2, 2, 2, 1]  # a run of four ties cut by k = 3
    labels = [1, 0, 1, 1, 0, 1]
    gallery = torch.tensor([[float(s), 0.0] for s in scores])
    result = rank_gallery(torch.tensor([[1.0, 0.0]]), [1], gallery, labels, ap_ks=(), precision_ks=(3,))
    run = labels[1:5]
    orders = list(itertools.permutations(run))
    expected = np.mean([(labels[0] + sum(order[:2])) / 3 for order in orders])
    assert result.precision_at[3][0] == pytest.approx(expected)
