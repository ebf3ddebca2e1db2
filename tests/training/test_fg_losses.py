"""Fine-grained loss pieces: the relative-separation regulariser L_δ and patch shuffling."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tests.tolerance import f32_tol
from training.fg_losses import patch_shuffle, relative_separation_loss, separation, shuffle_permutations


def kl(p: torch.Tensor, q: torch.Tensor) -> float:
    return float((p * (p.log() - q.log())).sum())


def test_l_delta_is_zero_when_every_category_has_the_same_distribution():
    delta = torch.tensor([0.1, -0.2, 0.3, 0.1, -0.2, 0.3, 0.1, -0.2, 0.3])
    groups = torch.tensor([0, 0, 0, 5, 5, 5, 2, 2, 2])
    # 0 up to float32 rounding of the two KL terms, each about log(3) (AMX kernels give 1 step, 1.2e-7)
    assert float(relative_separation_loss(delta, groups)) == pytest.approx(0.0, abs=f32_tol(math.log(3)))


def test_sorted_l_delta_ignores_order_and_a_constant_shift_within_a_category():
    # softmax is shift-invariant: the same spread of δ around another mean is "the same distribution"
    delta = torch.tensor([0.1, 0.4, 0.8, 0.5])
    groups = torch.tensor([0, 0, 1, 1])
    assert float(relative_separation_loss(delta, groups, "sorted")) == pytest.approx(0.0, abs=f32_tol(math.log(2)))


def test_paper_l_delta_compares_the_kth_triplets_of_two_categories_and_is_the_default():
    # Eq. 4 as method.md states it: D_c = softmax of c's δ as they come; nothing is sorted, so the same values in
    # another order are another distribution (and the shifted copy in the same order is the same one).
    delta = torch.tensor([0.1, 0.4, 0.8, 0.5])
    groups = torch.tensor([0, 0, 1, 1])
    d0, d1 = (torch.softmax(torch.tensor(values, dtype=torch.float64), 0) for values in ([0.1, 0.4], [0.8, 0.5]))
    expected = (kl(d0, d1) + kl(d1, d0)) / 2
    assert float(relative_separation_loss(delta, groups)) == pytest.approx(expected, abs=f32_tol(1.0))
    assert float(relative_separation_loss(delta, groups, "paper")) == pytest.approx(expected, abs=f32_tol(1.0))
    shifted_same_order = torch.tensor([0.1, 0.4, 0.6, 0.9])
    assert float(relative_separation_loss(shifted_same_order, groups)) == pytest.approx(0.0, abs=f32_tol(math.log(2)))
    with pytest.raises(ValueError, match="order"):
        relative_separation_loss(delta, groups, "shuffled")


def test_paper_l_delta_keeps_each_categorys_batch_order_when_categories_interleave():
    delta = torch.tensor([0.0, 0.5, 1.0, 0.5])  # category 0: 0.0 then 1.0; category 1: 0.5 then 0.5
    groups = torch.tensor([0, 1, 0, 1])
    d0, d1 = (torch.softmax(torch.tensor(values, dtype=torch.float64), 0) for values in ([0.0, 1.0], [0.5, 0.5]))
    expected = (kl(d0, d1) + kl(d1, d0)) / 2  # in float64; the loss runs in float32
    assert float(relative_separation_loss(delta, groups)) == pytest.approx(expected, abs=f32_tol(1.0))


def test_sorted_l_delta_is_the_mean_kl_over_ordered_pairs_of_distinct_categories():
    delta = torch.tensor([0.0, 1.0, 0.5, 0.5, -1.0, 2.0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])  # batch order must not matter: shuffle below
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    reference = delta.double()  # the reference in float64; the loss itself runs in float32
    d = [torch.softmax(torch.sort(reference[groups == c]).values, 0) for c in range(3)]
    expected = sum(kl(d[a], d[b]) for a, b in itertools.permutations(range(3), 2)) / 6
    got = float(relative_separation_loss(delta[order], groups[order], "sorted"))
    assert got > 0
    assert got == pytest.approx(expected, abs=f32_tol(3.0))  # log-probabilities reach about -3


def test_l_delta_gradients_flow_to_the_features():
    torch.manual_seed(0)
    anchor, positive, negative = (torch.randn(6, 8, requires_grad=True) for _ in range(3))
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    loss = relative_separation_loss(separation(anchor, positive, negative), groups)
    loss.backward()
    for tensor in (anchor, positive, negative):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def test_l_delta_of_one_category_is_zero_and_unequal_counts_are_refused():
    assert float(relative_separation_loss(torch.tensor([0.3, 0.1]), torch.tensor([4, 4]))) == 0.0
    with pytest.raises(ValueError, match="same number"):
        relative_separation_loss(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0, 0, 1]))


def test_patch_shuffle_is_a_true_permutation_of_pixels():
    images = torch.arange(2 * 3 * 64 * 64, dtype=torch.float32).reshape(2, 3, 64, 64)  # every pixel unique
    first, _ = shuffle_permutations(2, 2, generator=torch.Generator().manual_seed(1))
    shuffled = patch_shuffle(images, first, 2)
    assert shuffled.shape == images.shape
    assert torch.equal(torch.sort(shuffled.flatten()).values, images.flatten())
    assert torch.equal(patch_shuffle(images, torch.arange(4).repeat(2, 1), 2), images)  # identity stays


def test_patch_shuffle_moves_whole_cells_to_their_permuted_places():
    image = torch.arange(36, dtype=torch.float32).reshape(1, 1, 6, 6)
    permutation = torch.tensor([[8, 7, 6, 5, 4, 3, 2, 1, 0]])  # 3×3 grid of 2×2 cells, reversed
    out = patch_shuffle(image, permutation, 3)
    for j, source in enumerate(permutation[0].tolist()):
        row, col = divmod(j, 3)
        src_row, src_col = divmod(source, 3)
        assert torch.equal(
            out[0, 0, 2 * row : 2 * row + 2, 2 * col : 2 * col + 2],
            image[0, 0, 2 * src_row : 2 * src_row + 2, 2 * src_col : 2 * src_col + 2],
        )


def test_patch_shuffle_keeps_the_remainder_when_the_grid_does_not_divide_the_size():
    images = torch.randn(1, 3, 64, 64)
    shuffled = patch_shuffle(images, torch.tensor([[8, 7, 6, 5, 4, 3, 2, 1, 0]]), 3)  # cells of 21 px
    assert torch.equal(shuffled[..., 63:, :], images[..., 63:, :])
    assert torch.equal(shuffled[..., :, 63:], images[..., :, 63:])
    assert torch.equal(torch.sort(shuffled.flatten()).values, torch.sort(images.flatten()).values)


def test_sketch_and_photo_share_one_permutation_and_the_negative_gets_another():
    generator = torch.Generator().manual_seed(0)
    gamma1, gamma2 = shuffle_permutations(500, 2, generator=generator)
    assert not (gamma1 == gamma2).all(dim=1).any()  # γ2 ≠ γ1 for every item
    assert (gamma1 != gamma1[0]).any()  # items draw their own permutation
    # The same image shuffled with γ1 for sketch and photo, with γ2 for the negative copy:
    photo = torch.arange(500 * 64 * 64, dtype=torch.float32).reshape(500, 1, 64, 64)
    sketch = photo.clone()
    assert torch.equal(patch_shuffle(sketch, gamma1, 2), patch_shuffle(photo, gamma1, 2))
    negative = patch_shuffle(photo, gamma2, 2)
    assert not (negative == patch_shuffle(photo, gamma1, 2)).flatten(1).all(dim=1).any()


def test_patch_shuffle_rejects_a_bad_grid():
    with pytest.raises(ValueError):
        shuffle_permutations(2, 1)
    with pytest.raises(ValueError):
        patch_shuffle(torch.zeros(2, 3, 8, 8), torch.zeros(2, 9, dtype=torch.long), 2)


@pytest.mark.parametrize("order", ["paper", "sorted"])
def test_l_delta_sees_only_the_shape_of_each_categorys_spread_never_its_level(order):
    # A softmax inside each category ignores a common shift of that category's δ: categories that are
    # separated by different amounts on average but spread alike cost nothing; only spreads are compared.
    generator = torch.Generator().manual_seed(0)
    delta = torch.randn(20, generator=generator) * 0.05
    groups = torch.arange(4).repeat_interleave(5)
    shifts = torch.tensor([-0.3, 0.0, 0.2, 0.45]).repeat_interleave(5)
    base = relative_separation_loss(delta, groups, order)
    shifted = relative_separation_loss(delta + shifts, groups, order)
    assert float(shifted) == pytest.approx(float(base), abs=f32_tol(math.log(5)))
    widened = delta.clone()
    widened[:5] *= 3  # one category's spread changes shape: now L_δ moves
    assert float(relative_separation_loss(widened, groups, order)) > float(base) * 1.5


def _clip_like_batch(seed: int, categories: int = 16, per_category: int = 4, dim: int = 512):
    """Features as a pretrained CLIP gives them at the start of fine-grained training: sketch–photo
    cosine ~0.28 to its own photo, ~0.23 to another photo of its category (the hard negative)."""
    generator = torch.Generator().manual_seed(seed)

    def noise() -> torch.Tensor:
        return torch.randn(categories, per_category, dim, generator=generator) / dim**0.5

    centre = torch.nn.functional.normalize(torch.randn(categories, 1, dim, generator=generator), dim=-1)
    photo = torch.nn.functional.normalize(0.9 * centre + noise(), dim=-1)
    negative = torch.nn.functional.normalize(0.9 * centre + noise(), dim=-1)
    sketch = torch.nn.functional.normalize(0.1 * photo + 0.3 * centre + noise(), dim=-1)
    groups = torch.arange(categories).repeat_interleave(per_category)
    return sketch.reshape(-1, dim), photo.reshape(-1, dim), negative.reshape(-1, dim), groups


@pytest.mark.parametrize("order", ["paper", "sorted"])
@pytest.mark.parametrize("seed", range(4))
def test_l_delta_is_about_1e4_to_4e3_beside_a_triplet_of_about_0_3(seed, order):
    from training.losses import triplet_loss

    sketch, photo, negative, groups = _clip_like_batch(seed)
    delta = separation(sketch, photo, negative)
    l_delta = float(relative_separation_loss(delta, groups, order))
    l_tri = float(triplet_loss(sketch, photo, negative, 0.3))
    assert 0.2 < l_tri < 0.35
    assert 1e-4 <= l_delta <= 4e-3
    assert 0.1 * l_delta < 0.01 * l_tri  # at λ3 = 0.1 it is well under 1 % of the objective's triplet part
