"""The prompted encoder: what trains, what differs, what round-trips."""

from __future__ import annotations

import json
import os
import stat

import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from encoder import (
    CheckpointError,
    EncoderConfig,
    PromptConfig,
    build_encoder,
    load_checkpoint,
    load_encoder,
    read_checkpoint,
    save_checkpoint,
)
from tests.tolerance import f32_tol

TINY = "sbir-tiny"


def images(n: int = 3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 64, 64, generator=generator)


def test_only_prompts_and_layernorms_receive_gradients(tiny_encoder):
    tiny_encoder.train()
    loss = tiny_encoder.encode_sketch(images()).sum() + tiny_encoder.encode_photo(images(seed=1)).sum()
    loss.backward()
    with_grad = {name for name, p in tiny_encoder.named_parameters() if p.grad is not None}
    assert with_grad == set(tiny_encoder.trainable_parameters())
    assert all(name.startswith(("prompts.", "layer_norms.")) for name in with_grad)
    assert all(not p.requires_grad for p in tiny_encoder.clip.parameters())
    # Every visual LayerNorm (ln_pre, ln_post, two per block) has a trainable copy: 2 layers → 6 LNs.
    ln_names = [n for n in with_grad if n.startswith("layer_norms.")]
    assert len(ln_names) == 6 * 2


def test_param_groups_split_prompts_and_layernorms(tiny_encoder):
    groups = {g["name"]: g for g in tiny_encoder.param_groups(prompt_lr=1e-4, ln_lr=1e-6)}
    assert groups["prompts"]["lr"] == 1e-4 and groups["layer_norms"]["lr"] == 1e-6
    grouped = {id(p) for g in groups.values() for p in g["params"]}
    assert grouped == {id(p) for p in tiny_encoder.trainable_parameters().values()}
    optimizer = torch.optim.AdamW(tiny_encoder.param_groups(1e-4, 1e-6))
    assert len(optimizer.param_groups) == 2


def test_embeddings_are_normalised_float32_and_inference_mode_when_eval(tiny_encoder):
    out = tiny_encoder.encode_photo(images(5))
    assert out.shape == (5, tiny_encoder.embed_dim) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=-1), torch.ones(5), atol=f32_tol(1.0))
    assert out.is_inference()


def test_sketch_and_photo_branches_differ_when_prompts_differ(tiny_encoder):
    x = images()
    assert not torch.allclose(tiny_encoder.encode_sketch(x), tiny_encoder.encode_photo(x), atol=1e-4)
    with torch.no_grad():
        tiny_encoder.prompts["photo"].copy_(tiny_encoder.prompts["sketch"])
    assert torch.allclose(tiny_encoder.encode_sketch(x), tiny_encoder.encode_photo(x), atol=f32_tol(1.0))


def test_shared_prompt_gives_one_embedding_for_both_modalities():
    encoder = build_encoder(EncoderConfig(TINY, "none", PromptConfig(shared=True)))
    assert list(encoder.prompts) == ["shared"]
    x = images()
    assert torch.equal(encoder.encode_sketch(x), encoder.encode_photo(x))


def test_separate_layernorms_make_modalities_differ_even_with_shared_prompt():
    encoder = build_encoder(EncoderConfig(TINY, "none", PromptConfig(shared=True, separate_ln=True)))
    with torch.no_grad():
        weight = encoder.layer_norms["sketch"]["ln_post__weight"]
        weight.add_(torch.randn_like(weight) * 0.3)
    x = images()
    assert not torch.allclose(encoder.encode_sketch(x), encoder.encode_photo(x), atol=1e-4)


def test_prompts_change_the_embedding_and_baseline_equals_bare_open_clip(tiny_baseline):
    x = images()
    bare = F.normalize(tiny_baseline.clip.encode_image(x), dim=-1)
    assert torch.allclose(tiny_baseline.encode_photo(x), bare, atol=f32_tol(1.0))
    assert tiny_baseline.trainable_parameters() == {}
    prompted = build_encoder(EncoderConfig(TINY, "none", PromptConfig()))
    assert not torch.allclose(prompted.encode_photo(x), bare, atol=1e-4)


def test_deep_prompts_have_one_set_per_layer_and_reach_the_output():
    encoder = build_encoder(EncoderConfig(TINY, "none", PromptConfig(depth="deep", n_prompts=2)))
    assert encoder.prompts["sketch"].shape == (2, 2, 64)
    x = images()
    before = encoder.encode_sketch(x)
    with torch.no_grad():
        layer_1 = encoder.prompts["sketch"][1]  # only the second layer's prompts
        layer_1.add_(torch.randn_like(layer_1))
    assert not torch.allclose(before, encoder.encode_sketch(x), atol=1e-5)


def test_text_features_are_normalised_per_class(tiny_encoder):
    text = tiny_encoder.text_features(["cat", "teddy bear", "car (sedan)"])
    assert text.shape == (3, tiny_encoder.embed_dim)
    assert torch.allclose(text.norm(dim=-1), torch.ones(3), atol=f32_tol(1.0))
    assert tiny_encoder.logit_scale == pytest.approx(1 / 0.07, rel=1e-4)


@pytest.mark.parametrize(
    "prompts",
    [PromptConfig(), PromptConfig(depth="deep", shared=True, separate_ln=True), PromptConfig(tune_ln=False)],
    ids=["shallow", "deep-shared-separate-ln", "frozen-ln"],
)
def test_save_then_load_reproduces_embeddings(tmp_path, prompts):
    encoder = build_encoder(EncoderConfig(TINY, "none", prompts))
    with torch.no_grad():
        for p in encoder.trainable_parameters().values():
            p.add_(torch.randn_like(p) * 0.1)  # "trained"
    path = save_checkpoint(encoder, tmp_path / "ckpt.safetensors", extra={"epoch": 3})
    loaded = load_checkpoint(path)
    x = images(4)
    for modality in ("sketch", "photo"):
        assert torch.allclose(encoder.encode(x, modality), loaded.encode(x, modality), atol=f32_tol(1.0))
    assert loaded.fingerprint() == encoder.fingerprint()
    assert loaded.config == encoder.config
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["fingerprint"] == encoder.fingerprint() and sidecar["extra"] == {"epoch": 3}
    assert set(sidecar["versions"]) >= {"torch", "open_clip_torch"}
    assert set(load_file(path)) == set(encoder.trainable_parameters())


def test_fingerprint_follows_learned_tensors(tiny_encoder):
    before = tiny_encoder.fingerprint()
    with torch.no_grad():
        tiny_encoder.prompts["sketch"].add_(0.01)
    assert tiny_encoder.fingerprint() != before


@pytest.fixture()
def saved(tmp_path, tiny_encoder):
    return save_checkpoint(tiny_encoder, tmp_path / "model.safetensors")


def test_checkpoint_for_another_backbone_is_refused(saved):
    with pytest.raises(CheckpointError, match="trained on backbone 'sbir-tiny'.*'ViT-B-32' was requested"):
        load_checkpoint(saved, backbone="ViT-B-32")


def test_checkpoint_of_another_width_is_refused(tmp_path, saved):
    config = json.loads(json.dumps(open_clip.get_model_config(TINY)))
    config["vision_cfg"]["width"] = 32
    (tmp_path / "cfgs").mkdir()
    (tmp_path / "cfgs" / "sbir-tiny-w32.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "cfgs")
    config_on_disk, tensors, _ = read_checkpoint(saved)
    narrow = build_encoder(EncoderConfig("sbir-tiny-w32", "none", config_on_disk.prompts))
    from encoder.checkpoint import apply_learned_state

    with pytest.raises(CheckpointError, match="shape mismatch"):
        apply_learned_state(narrow, tensors)


def test_checkpoint_with_missing_tensors_is_refused(saved):
    from safetensors import safe_open

    with safe_open(str(saved), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(saved)
    tensors.pop("prompts.photo")
    save_file(tensors, str(saved), metadata=metadata)
    with pytest.raises(CheckpointError, match=r"missing tensors: prompts\.photo"):
        load_checkpoint(saved)


def test_edited_checkpoint_fails_its_fingerprint(saved):
    from safetensors import safe_open

    with safe_open(str(saved), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(saved)
    tensors["prompts.photo"] += 1
    save_file(tensors, str(saved), metadata=metadata)
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_checkpoint(saved)


def test_unreadable_or_foreign_files_are_refused(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not an encoder checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_checkpoint_is_not_applied_to_random_weights_it_was_not_trained_on(tmp_path):
    encoder = build_encoder(EncoderConfig(TINY, "none", PromptConfig()))
    path = save_checkpoint(encoder, tmp_path / "m.safetensors")
    config, tensors, info = read_checkpoint(path)
    metadata_config = config.with_pretrained("openai").to_json()
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
    metadata["config"] = metadata_config
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match="randomly initialised"):
        load_checkpoint(path, pretrained="none")


def test_load_encoder_without_checkpoint_is_the_baseline_from_env(monkeypatch):
    monkeypatch.setenv("SBIR_BACKBONE", TINY)
    monkeypatch.setenv("SBIR_PRETRAINED", "none")
    encoder = load_encoder(None, device="cpu")
    assert encoder.config.is_baseline and encoder.config.backbone == TINY and encoder.random_weights
    assert encoder.describe()["baseline"] is True


def test_random_backbone_is_the_same_in_every_build(tiny_baseline):
    again = load_encoder(None, backbone=TINY, pretrained="none", device="cpu")
    assert again.fingerprint() == tiny_baseline.fingerprint()
    assert torch.equal(again.encode_photo(images()), tiny_baseline.encode_photo(images()))


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_a_checkpoint_follows_the_umask_like_every_other_file(tiny_encoder, tmp_path, umask):
    old = os.umask(umask)
    try:
        path = save_checkpoint(tiny_encoder, tmp_path / "model.safetensors")
    finally:
        os.umask(old)
    wanted = 0o666 & ~umask
    assert stat.S_IMODE(path.stat().st_mode) == wanted
    assert stat.S_IMODE(path.with_suffix(".json").stat().st_mode) == wanted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]  # no temporary left
