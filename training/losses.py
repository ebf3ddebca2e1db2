"""Loss terms of method.md, on L2-normalised features. Distances are d(a, b) = 1 - cos(a, b)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# μ of the triplet losses: the official code's 0.2 (the 0.3 of secondary summaries of the paper is unverified;
# `--margin 0.3` gives it). docs/training.md, "Hyper-parameters and protocol choices".
DEFAULT_MARGIN = 0.2


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise ``1 - cos(a_i, b_i)`` of ``[B, D]`` tensors → ``[B]`` (inputs need not be normalised)."""
    return 1.0 - F.cosine_similarity(a, b, dim=-1)


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                 margin: float = DEFAULT_MARGIN) -> torch.Tensor:
    """``mean(max(0, margin + d(a, p) - d(a, n)))`` with d = 1 - cos."""
    return F.relu(margin + cosine_distance(anchor, positive) - cosine_distance(anchor, negative)).mean()


def classification_loss(features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor,
                        logit_scale: float) -> torch.Tensor:
    """Cross-entropy of ``softmax_c(cos(f, t_c) * logit_scale)`` (temperature 1/logit_scale, CLIP's own)."""
    logits = logit_scale * F.normalize(features, dim=-1) @ F.normalize(text_features, dim=-1).t()
    return F.cross_entropy(logits, labels)


def category_loss(
    sketch: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    labels: torch.Tensor,
    text_features: torch.Tensor | None,
    logit_scale: float,
    *,
    margin: float = DEFAULT_MARGIN,
    cls_weight: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Category-level total ``L_tri + λ1 (L_cls(sketch) + L_cls(photo))``; ``labels`` index ``text_features``.

    The classification terms are skipped when ``cls_weight`` is 0 or no text features are given.
    Returns the total and its parts as floats for logging.
    """
    tri = triplet_loss(sketch, positive, negative, margin)
    total, parts = tri, {"loss_tri": float(tri.detach())}
    if cls_weight and text_features is not None:
        cls_s = classification_loss(sketch, text_features, labels, logit_scale)
        cls_p = classification_loss(positive, text_features, labels, logit_scale)
        total = total + cls_weight * (cls_s + cls_p)
        parts |= {"loss_cls_sketch": float(cls_s.detach()), "loss_cls_photo": float(cls_p.detach())}
    parts["loss"] = float(total.detach())
    return total, parts
