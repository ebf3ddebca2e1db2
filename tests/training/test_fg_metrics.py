"""acc@k for fine-grained retrieval on constructed rankings."""

from __future__ import annotations

import pytest
import torch

from training.fg_metrics import GALLERIES, accuracy_at_k, fine_grained_accuracy, target_ranks


def test_ranks_and_accuracy_on_a_constructed_ranking():
    gallery = torch.eye(6)
    # query i scores gallery j by scores[i, j]; target of each query below
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.2, 0.0, 0.0, 0.0],  # target 0: rank 1
            [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # target 3: rank 4
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # target 0: rank 6
            [0.9, 0.5, 0.5, 0.5, 0.1, 0.1],  # target 2: tied with 1 and 3 after one → expected rank 3
        ]
    )
    targets = torch.tensor([0, 3, 0, 2])
    ranks = target_ranks(scores, gallery, targets, memory_bytes=2 * 6 * 40)  # 2 queries per chunk
    assert ranks.expected.tolist() == [1, 4, 6, 3]
    # the tied target is at place 2, 3 or 4 with chance 1/3 each: inside the top 3 with chance 2/3
    acc = accuracy_at_k(ranks, (1, 3, 5, 10))
    assert acc == pytest.approx({"acc_1": 0.25, "acc_3": (1 + 2 / 3) / 4, "acc_5": 0.75, "acc_10": 1.0})


def test_a_collapsed_encoder_scores_chance_whatever_the_gallery_order():
    # was: ties went to the photo earlier in the gallery, so constant embeddings scored acc@1 = 1.0 for a target
    # listed first (and 0.0 listed last)
    constant = torch.nn.functional.normalize(torch.ones(4, 2), dim=1)
    groups = torch.zeros(4, dtype=torch.long)
    for targets in (torch.tensor([0, 0, 0, 0]), torch.tensor([3, 3, 3, 3]), torch.tensor([0, 1, 2, 3])):
        result = fine_grained_accuracy(constant, constant, targets, groups, groups, ks=(1, 2, 4))
        for gallery in GALLERIES:
            assert result[gallery] == pytest.approx({"acc_1": 0.25, "acc_2": 0.5, "acc_4": 1.0})


def test_results_do_not_depend_on_gallery_order_when_photos_tie():
    # photos 0 and 1 are copies (one embedding); the sketch was drawn from photo 0 (was: acc@1 1.0 with its photo
    # listed first, 0.0 listed second)
    photos = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]), dim=1)
    sketch = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1]]), dim=1)
    groups_s, groups_p = torch.zeros(1, dtype=torch.long), torch.zeros(4, dtype=torch.long)
    as_listed = fine_grained_accuracy(sketch, photos, torch.tensor([0]), groups_s, groups_p, ks=(1, 2))
    swapped = fine_grained_accuracy(sketch, photos[torch.tensor([1, 0, 2, 3])], torch.tensor([1]), groups_s,
                                    groups_p, ks=(1, 2))
    assert as_listed == swapped
    assert as_listed["within_category"] == {"acc_1": 0.5, "acc_2": 1.0}


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
    assert ranks.expected.tolist() == [1] * 20


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        accuracy_at_k(target_ranks(torch.eye(2)[:0], torch.eye(2), torch.tensor([], dtype=torch.long)))
    with pytest.raises(ValueError):
        target_ranks(torch.eye(2), torch.eye(2), torch.tensor([0, 1]), query_groups=torch.tensor([0, 0]))


def test_gallery_sizes_per_category_mark_acc_at_k_not_meaningful_where_a_category_holds_k_photos_or_fewer():
    from training.fine_grained import gallery_sizes

    # category 0: 4 photos (a small hold-out), category 1: 20 photos; 2 queries in each
    photo_labels = torch.tensor([0] * 4 + [1] * 20)
    sketch_labels = torch.tensor([0, 0, 1, 1])
    sizes = gallery_sizes(sketch_labels, photo_labels, ["cow", "saw"], (1, 5, 10))
    assert sizes["gallery_per_category"] == {"cow": 4, "saw": 20} and sizes["smallest_category_gallery"] == 4
    # acc@5 and acc@10 are 1 for every cow query whatever the model: not meaningful; acc@1 is
    assert sizes["not_meaningful"] == {"within_category": ["acc_5", "acc_10"], "all_photos": []}
    chance = sizes["chance"]["within_category"]
    assert chance["acc_1"] == pytest.approx((1 / 4 + 1 / 20) / 2)
    assert chance["acc_5"] == pytest.approx((1 + 5 / 20) / 2) and chance["acc_10"] == pytest.approx((1 + 10 / 20) / 2)
    assert sizes["chance"]["all_photos"]["acc_10"] == pytest.approx(10 / 24)


def test_the_report_warns_gives_chance_level_and_names_the_official_gallery(capsys):
    from training.fine_grained import gallery_sizes, print_fine_grained

    accuracy = {"acc_1": 0.5, "acc_5": 1.0, "acc_10": 1.0}
    summary = {"within_category": accuracy, "all_photos": accuracy, "n_queries": 4, "n_gallery": 8,
               **gallery_sizes(torch.tensor([0, 1]), torch.tensor([0] * 4 + [1] * 4), ["cow", "saw"], (1, 5, 10))}
    print_fine_grained("model", summary)
    out, err = capsys.readouterr()
    assert "chance [within_category]" in out and "cow 4, saw 4" in out
    assert "Sketchy basic's 100 photos per category" in out
    assert "acc_5 [within_category] is not meaningful" in err and "acc_10 [all_photos] is not meaningful" in err
    assert "acc_1 [" not in err
