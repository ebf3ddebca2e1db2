"""The prompted encoder computes the paper's forward, written out here by hand from the raw tensors.

Patch embedding → class token → positional embedding → prompts appended (no positional embedding) → ln_pre →
residual blocks (deep: fresh prompts replace the previous layer's prompt outputs before every block after the first)
→ ln_post on the class token → proj → L2 normalisation. Learned LayerNorm copies and prompts are perturbed first, so
the test sees that the encoder uses them and not the backbone's own.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from encoder import EncoderConfig, PromptConfig, build_encoder
from tests.tolerance import f32_tol

TINY = "sbir-tiny"


def _layer_norm(x, params, name):
    return F.layer_norm(x, x.shape[-1:], params[f"{name}.weight"], params[f"{name}.bias"], eps=1e-5)


def _activation(x, kind):
    return x * torch.sigmoid(1.702 * x) if kind == "quick_gelu" else F.gelu(x)


def _attention(x, params, prefix, heads):
    batch, length, width = x.shape
    q, k, v = F.linear(x, params[f"{prefix}.in_proj_weight"], params[f"{prefix}.in_proj_bias"]).chunk(3, dim=-1)

    def split(t):
        return t.reshape(batch, length, heads, width // heads).transpose(1, 2)

    q, k, v = split(q), split(k), split(v)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // heads), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(batch, length, width)
    return F.linear(out, params[f"{prefix}.out_proj.weight"], params[f"{prefix}.out_proj.bias"])


def hand_written_forward(encoder, images, prompts, *, deep, activation):
    """The prompted image tower from its tensors alone (``prompts``: [depth, K, width])."""
    # in float64, so the reference carries no rounding of its own worth the name
    params = {name: p.detach().double() for name, p in encoder.clip.visual.named_parameters()}
    for name, p in encoder.layer_norms["shared"].items():  # the learned LayerNorm copies replace the backbone's
        params[name.replace("__", ".")] = p.detach().double()
    images, prompts = images.double(), prompts.double()
    visual = encoder.clip.visual
    width, heads = encoder.width, visual.transformer.resblocks[0].attn.num_heads
    n_prompts = prompts.shape[1]

    patches = F.conv2d(images, params["conv1.weight"], stride=visual.conv1.stride)  # [B, W, g, g]
    tokens = patches.flatten(2).transpose(1, 2)  # [B, g², W]
    cls = params["class_embedding"].expand(images.shape[0], 1, width)
    x = torch.cat([cls, tokens], dim=1) + params["positional_embedding"]
    x = torch.cat([x, prompts[0].expand(images.shape[0], -1, -1)], dim=1)
    x = _layer_norm(x, params, "ln_pre")
    for layer in range(len(visual.transformer.resblocks)):
        if deep and layer > 0:
            x = torch.cat([x[:, :-n_prompts], prompts[layer].expand(images.shape[0], -1, -1)], dim=1)
        block = f"transformer.resblocks.{layer}"
        x = x + _attention(_layer_norm(x, params, f"{block}.ln_1"), params, f"{block}.attn", heads)
        hidden = F.linear(_layer_norm(x, params, f"{block}.ln_2"), params[f"{block}.mlp.c_fc.weight"],
                          params[f"{block}.mlp.c_fc.bias"])
        x = x + F.linear(_activation(hidden, activation), params[f"{block}.mlp.c_proj.weight"],
                         params[f"{block}.mlp.c_proj.bias"])
    pooled = _layer_norm(x[:, 0], params, "ln_post")
    return F.normalize(pooled @ params["proj"], dim=-1)


@pytest.mark.parametrize("depth", ["shallow", "deep"])
@pytest.mark.parametrize("activation", ["gelu", "quick_gelu"])
def test_prompted_encoder_equals_the_forward_written_by_hand(depth, activation):
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(TINY, "none", PromptConfig(n_prompts=3, depth=depth, shared=True),
                                          activation=activation))
    with torch.no_grad():
        for p in encoder.layer_norms.parameters():
            p.add_(0.1 * torch.randn_like(p))
    prompts = encoder.prompts["shared"].detach()
    images = torch.randn(3, 3, encoder.image_size, encoder.image_size)

    expected = hand_written_forward(encoder, images, prompts, deep=depth == "deep", activation=activation)
    for modality in ("sketch", "photo"):
        error = float((encoder.encode(images, modality).double() - expected).abs().max())
        assert error < f32_tol(1.0), error  # float32 through the blocks vs a float64 reference
    without_prompts = F.normalize(encoder.clip.encode_image(images), dim=-1)
    assert not torch.allclose(expected.float(), without_prompts, atol=1e-3)  # the prompts are really in the forward


def test_fresh_prompts_are_drawn_from_a_standard_normal_as_the_official_code():
    torch.manual_seed(0)
    normal = build_encoder(EncoderConfig(TINY, "none", PromptConfig(n_prompts=64)))
    torch.manual_seed(0)
    scaled = build_encoder(EncoderConfig(TINY, "none", PromptConfig(n_prompts=64)), prompt_init="scaled")
    values = normal.prompts["sketch"].detach()
    assert abs(values.std().item() - 1.0) < 0.05 and abs(values.mean().item()) < 0.05
    assert torch.allclose(scaled.prompts["sketch"], values * normal.width**-0.5)
    with pytest.raises(ValueError, match="prompt_init"):
        build_encoder(EncoderConfig(TINY, "none", PromptConfig()), prompt_init="xavier")
