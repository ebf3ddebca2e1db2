"""Loss terms on hand-made vectors."""

import math

import pytest
import torch

from tests.tolerance import f32_tol
from training.losses import category_loss, classification_loss, cosine_distance, triplet_loss

E1, E2, E3 = torch.eye(3)


def test_cosine_distance_on_axes():
    a = torch.stack([E1, E1, E1])
    b = torch.stack([E1, E2, -E1])
    assert cosine_distance(a, b).tolist() == pytest.approx([0.0, 1.0, 2.0], abs=f32_tol(2.0))


def test_triplet_loss_hinge():
    # d(a,p) = 0, d(a,n) = 1: satisfied beyond the margin -> 0.
    assert float(triplet_loss(E1[None], E1[None], E2[None], margin=0.3)) == pytest.approx(0.0, abs=f32_tol(1.3))
    # d(a,p) = 1, d(a,n) = 0: 0.3 + 1 - 0.
    assert float(triplet_loss(E1[None], E2[None], E1[None], margin=0.3)) == pytest.approx(1.3, abs=f32_tol(1.3))
    # mean over the batch: (0 + 1.3) / 2
    a, p, n = torch.stack([E1, E1]), torch.stack([E1, E2]), torch.stack([E2, E1])
    assert float(triplet_loss(a, p, n, margin=0.3)) == pytest.approx(0.65, abs=f32_tol(1.3))


def test_classification_loss_is_cross_entropy_over_scaled_cosines():
    text = torch.stack([E1, E2])  # two classes
    feature = torch.tensor([[1.0, 0.0, 0.0]])
    scale = 10.0
    expected = -math.log(math.exp(10) / (math.exp(10) + math.exp(0)))
    assert float(classification_loss(feature, text, torch.tensor([0]), scale)) == pytest.approx(expected, rel=1e-3)
    wrong = -math.log(math.exp(0) / (math.exp(10) + math.exp(0)))
    got = float(classification_loss(feature, text, torch.tensor([1]), scale))
    assert got == pytest.approx(wrong, abs=f32_tol(10.0))  # logits of 10


def test_category_loss_total_and_parts():
    text = torch.stack([E1, E2])
    s, p, n = E1[None], E2[None], E1[None]
    labels = torch.tensor([0])
    total, parts = category_loss(s, p, n, labels, text, 10.0, margin=0.3, cls_weight=0.5)
    cls_s = classification_loss(s, text, labels, 10.0)
    cls_p = classification_loss(p, text, labels, 10.0)
    tol = f32_tol(10.0)  # logits of 10
    assert float(total) == pytest.approx(1.3 + 0.5 * float(cls_s + cls_p), abs=tol)
    assert parts["loss_tri"] == pytest.approx(1.3, abs=tol) and parts["loss"] == pytest.approx(float(total), abs=tol)
    only_tri, parts = category_loss(s, p, n, labels, text, 10.0, cls_weight=0.0)  # the default margin, 0.2
    assert float(only_tri) == pytest.approx(1.2, abs=tol) and "loss_cls_sketch" not in parts


def test_category_loss_gradients_flow():
    s = torch.tensor([[1.0, 0.2, 0.0]], requires_grad=True)
    total, _ = category_loss(s, E2[None], E1[None], torch.tensor([0]), torch.stack([E1, E2]), 10.0)
    total.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
