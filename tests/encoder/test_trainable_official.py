"""``trainable="official"``: the official code's freezing as an option; checkpoints carry its tensors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from encoder import EncoderConfig, PromptConfig, build_encoder, load_encoder, save_checkpoint
from tests.tolerance import f32_tol

OFFICIAL = EncoderConfig("sbir-tiny", "none", PromptConfig(trainable="official"))
# sbir-tiny has 2 blocks: the tensors the official freeze_all_but_ln left trainable besides the LayerNorms
EXTRA = {"class_embedding", "positional_embedding", "proj", *(f"transformer__resblocks__{i}__attn__in_proj_{t}"
                                                             for i in range(2) for t in ("weight", "bias"))}


def images(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_official_set_adds_qkv_embeddings_and_projection_and_they_get_gradients():
    encoder = build_encoder(OFFICIAL)
    assert set(encoder.backbone_tensors) == EXTRA
    encoder.train()
    (encoder.encode_sketch(images()).sum() + encoder.encode_photo(images()).sum()).backward()
    learned = encoder.trainable_parameters()
    assert {f"backbone_tensors.{name}" for name in EXTRA} <= set(learned)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learned.values())
    assert not any(p.requires_grad for p in encoder.clip.parameters())  # the backbone's own tensors stay frozen
    groups = {g["name"]: g for g in encoder.param_groups(prompt_lr=1e-4, ln_lr=1e-6)}
    assert groups["backbone"]["lr"] == 1e-6 and len(groups["backbone"]["params"]) == len(EXTRA)


def test_default_set_stays_prompts_and_layernorms_with_an_unchanged_config_identity():
    encoder = build_encoder(EncoderConfig("sbir-tiny", "none", PromptConfig()))
    assert len(encoder.backbone_tensors) == 0
    assert {g["name"] for g in encoder.param_groups(1e-4, 1e-6)} == {"prompts", "layer_norms"}
    assert "trainable" not in encoder.config.to_dict()["prompts"]  # checkpoints written before the option still load
    assert OFFICIAL.to_dict()["prompts"]["trainable"] == "official"
    assert EncoderConfig.from_dict(OFFICIAL.to_dict()) == OFFICIAL


def test_official_tensors_are_saved_and_what_index_builder_and_app_load_is_the_same_encoder(tmp_path):
    encoder = build_encoder(OFFICIAL)
    x = images(4)
    before = encoder.encode_photo(x)
    with torch.no_grad():
        for p in encoder.backbone_tensors.values():
            p.add_(torch.randn_like(p) * 0.2)  # "trained"
    after = encoder.encode_photo(x)
    assert not torch.allclose(before, after, atol=1e-3)  # the copies are what the forward uses
    path = save_checkpoint(encoder, tmp_path / "official.safetensors")
    assert {f"backbone_tensors.{name}" for name in EXTRA} <= set(load_file(path))
    loaded = load_encoder(path, device="cpu")  # the one loader of index_builder and app
    assert loaded.config == encoder.config and encoder.config.prompts == OFFICIAL.prompts
    assert loaded.fingerprint() == encoder.fingerprint()
    for modality in ("sketch", "photo"):
        assert torch.allclose(loaded.encode(x, modality), encoder.encode(x, modality), atol=f32_tol(1.0))


def test_official_set_needs_the_layernorms():
    with pytest.raises(ValueError, match="LayerNorms"):
        PromptConfig(trainable="official", tune_ln=False)
    with pytest.raises(ValueError, match="trainable"):
        PromptConfig(trainable="everything")


def test_autocast_is_off_when_the_encoder_is_set_to_full_precision():
    encoder = build_encoder(OFFICIAL)
    assert encoder.amp is True  # indexing and serving keep bf16 on CUDA
    encoder.amp = False
    assert not isinstance(encoder._autocast(torch.device("cuda")), torch.autocast)


def test_index_builder_indexes_and_the_app_loads_with_the_official_tensors(tmp_path, capsys):
    import json

    from app.main import load_configured_encoder
    from app.settings import Settings
    from index_builder.cli import main as index_main
    from tests.imagegen import random_photo

    encoder = build_encoder(OFFICIAL)
    with torch.no_grad():
        for p in encoder.backbone_tensors.values():
            p.add_(torch.randn_like(p) * 0.2)
    path = save_checkpoint(encoder, tmp_path / "official.safetensors")
    (tmp_path / "gallery").mkdir()
    for i in range(2):
        random_photo(seed=i).save(tmp_path / "gallery" / f"{i}.jpg")
    assert index_main(["build", "--gallery", str(tmp_path / "gallery"), "--checkpoint", str(path),
                       "--out", str(tmp_path / "index"), "--device", "cpu"]) == 0
    manifest = json.loads(next((tmp_path / "index" / "versions").glob("*.json")).read_text())  # segmented
    assert manifest["encoder"]["fingerprint"] == encoder.fingerprint()
    served = load_configured_encoder(Settings(checkpoint=path, device="cpu"))
    assert served.fingerprint() == encoder.fingerprint()
    assert torch.allclose(served.encode_sketch(images()), encoder.encode_sketch(images()), atol=f32_tol(1.0))
