"""acc@k for fine-grained retrieval on constructed rankings."""

from __future__ import annotations

import pytest
import torch

from training.fg_metrics import accuracy_at_k, fine_grained_accuracy, target_ranks


def test_ranks_and_accuracy_on_a_constructed_ranking():
    gallery = torch.eye(6)
    # query i scores gallery j by scores[i, j]; target of each query below
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.2, 0.0, 0.0, 0.0],  # target 0: rank 1
            [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # target 3: rank 4
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # target 0: rank 6
            [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],  # target 2: ties broken by gallery order → rank 3
        ]
    )
    targets = torch.tensor([0, 3, 0, 2])
    ranks = target_ranks(scores, gallery, targets, memory_bytes=2 * 6 * 40)  # 2 queries per chunk
    assert ranks.tolist() == [1, 4, 6, 3]
    assert accuracy_at_k(ranks, (1, 3, 5, 10)) == {"acc_1": 0.25, "acc_3": 0.5, "acc_5": 0.75, "acc_10": 1.0}


def test_within_category_gallery_only_counts_photos_of_the_query_category():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6], [0.9, 0.8, 0.7, 0.6]])
    targets = torch.tensor([2, 3])
    photo_groups = torch.tensor([0, 1, 1, 0])
    sketch_groups = torch.tensor([1, 0])
    result = fine_grained_accuracy(scores, torch.eye(4), targets, sketch_groups, photo_groups, ks=(1, 2, 5))
    # within: query 0 sees photos 1, 2 (target 2 at rank 2); query 1 sees 0, 3 (target 3 at rank 2)
    assert result["within_category"] == {"acc_1": 0.0, "acc_2": 1.0, "acc_5": 1.0}
    # all photos: ranks 3 and 4
    assert result["all_photos"] == {"acc_1": 0.0, "acc_2": 0.0, "acc_5": 1.0}


def test_real_features_rank_the_identical_photo_first():
    torch.manual_seed(0)
    photos = torch.nn.functional.normalize(torch.randn(50, 16), dim=1)
    targets = torch.randperm(50)[:20]
    ranks = target_ranks(photos[targets], photos, targets)
    assert ranks.tolist() == [1] * 20


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        accuracy_at_k(torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError):
        target_ranks(torch.eye(2), torch.eye(2), torch.tensor([0, 1]), query_groups=torch.tensor([0, 0]))
