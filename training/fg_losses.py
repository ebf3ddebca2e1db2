"""Loss pieces specific to fine-grained ZS-SBIR (method.md, "Fine-grained"): L_δ and patch shuffling.

The generic triplet and classification losses live in :mod:`training.losses` and are shared with
the category-level task; this module only adds what the fine-grained objective needs on top:

- :func:`relative_separation_loss` — the relative-separation regulariser L_δ (paper Eq. 4), which
  makes the spread of triplet separations δ alike across categories so one margin fits all;
- :func:`patch_shuffle` and :func:`shuffle_permutations` — cut batched images into an n×n grid on the
  device and permute the cells, per image (paper Eq. 5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .losses import cosine_distance


def separation(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """δ = d(s, p⁺) − d(s, p⁻) per triplet (negative when the triplet is well separated)."""
    return cosine_distance(anchor, positive) - cosine_distance(anchor, negative)


# How each category's δ values are laid out before the softmax. "paper": in batch order, so D_c(k) and D_c′(k) are the
# k-th triplets the sampler drew for c and c′ (Eq. 4 as method.md states it: nothing is sorted). "sorted": ours,
# ascending, so L_δ compares the shapes of the two distributions whatever order the sampler drew (docs/fine_grained.md).
DELTA_ORDERS: tuple[str, ...] = ("paper", "sorted")


def relative_separation_loss(delta: torch.Tensor, groups: torch.Tensor, order: str = "paper") -> torch.Tensor:
    """L_δ: mean KL(D_c ‖ D_c′) over ordered pairs of distinct categories c ≠ c′ in the batch.

    ``delta`` ``[B]`` holds each triplet's δ and ``groups`` ``[B]`` its category id. D_c is the softmax
    of category c's δ values, in batch order (``order="paper"``, Eq. 4 as written) or sorted
    (``order="sorted"``, ours: the result does not depend on the order triplets happen to have in the
    batch); every category must have the same number of triplets — which the P×K sampler guarantees.
    A batch with fewer than two categories gives 0.
    """
    if order not in DELTA_ORDERS:
        raise ValueError(f"order must be one of {', '.join(DELTA_ORDERS)}, got {order!r}")
    categories, counts = torch.unique(groups, return_counts=True)
    if categories.numel() < 2:
        return delta.sum() * 0.0  # keeps the graph (and the device) intact
    if bool((counts != counts[0]).any()):
        raise ValueError(f"L_δ needs the same number of triplets per category, got counts {counts.tolist()}")
    # Rows = categories, columns = that category's δ values in batch order (a stable sort keeps it) or ascending.
    by_category = torch.sort(groups, stable=True).indices
    per_category = delta[by_category].reshape(categories.numel(), int(counts[0]))
    if order == "sorted":
        per_category = torch.sort(per_category, dim=1).values
    log_d = F.log_softmax(per_category.float(), dim=1)  # [P, K]
    d = log_d.exp()
    # KL(D_c ‖ D_c′) = Σ_k D_c(k) (log D_c(k) − log D_c′(k)), for all ordered pairs at once.
    self_term = (d * log_d).sum(dim=1, keepdim=True)  # [P, 1]
    cross_term = d @ log_d.T  # [P, P]: Σ_k D_c(k) log D_c′(k)
    kl = self_term - cross_term
    p = categories.numel()
    off_diagonal = ~torch.eye(p, dtype=torch.bool, device=delta.device)
    return kl[off_diagonal].mean()


def shuffle_permutations(
    batch: int, grid: int, *, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random cell permutations γ1, γ2 ``[batch, grid²]`` with γ2 ≠ γ1 in every row.

    Drawn on the CPU from ``generator`` (reproducible) and moved to ``device``.
    """
    if grid < 2:
        raise ValueError(f"patch shuffling needs a grid of at least 2×2, got {grid}")
    cells = grid * grid
    first = torch.argsort(torch.rand(batch, cells, generator=generator), dim=1)
    second = torch.argsort(torch.rand(batch, cells, generator=generator), dim=1)
    same = (first == second).all(dim=1)
    while bool(same.any()):  # redraw only the rows that collide (probability 1/cells! each)
        second[same] = torch.argsort(torch.rand(int(same.sum()), cells, generator=generator), dim=1)
        same = (first == second).all(dim=1)
    return first.to(device), second.to(device)


def patch_shuffle(images: torch.Tensor, permutations: torch.Tensor, grid: int) -> torch.Tensor:
    """Rearrange each image's n×n grid of cells: output cell j = input cell ``permutations[b, j]``.

    ``images`` ``[B, C, S, S]`` are model inputs, so the grid is aligned to the model's input size:
    cells are ⌊S/n⌋ pixels; when n does not divide S the remaining bottom rows and right columns
    stay in place. Every pixel is kept (a true permutation), on whatever device the images are.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images [B, C, H, W], got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    if permutations.shape != (b, grid * grid):
        raise ValueError(f"expected permutations of shape {(b, grid * grid)}, got {tuple(permutations.shape)}")
    cell_h, cell_w = h // grid, w // grid
    if cell_h == 0 or cell_w == 0:
        raise ValueError(f"a {grid}×{grid} grid does not fit a {h}×{w} image")
    core = images[:, :, : grid * cell_h, : grid * cell_w]
    # [B, C, n, h, n, w] → [B, n·n, C, h, w]: one entry per cell, row-major.
    cells = core.reshape(b, c, grid, cell_h, grid, cell_w).permute(0, 2, 4, 1, 3, 5)
    cells = cells.reshape(b, grid * grid, c, cell_h, cell_w)
    index = permutations.to(images.device).long().view(b, grid * grid, 1, 1, 1).expand_as(cells)
    shuffled = torch.gather(cells, 1, index)
    shuffled = shuffled.reshape(b, grid, grid, c, cell_h, cell_w).permute(0, 3, 1, 4, 2, 5)
    out = images.clone()
    out[:, :, : grid * cell_h, : grid * cell_w] = shuffled.reshape(b, c, grid * cell_h, grid * cell_w)
    return out
