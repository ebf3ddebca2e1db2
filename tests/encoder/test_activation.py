"""The built model's activation matches what its weights were trained with (QuickGELU for OpenAI's CLIP).

The tag path is exercised for real: weights are filed in a temporary Hugging Face cache under the hub repository
open_clip names for the tag, and the hub is forced offline (HF_HUB_OFFLINE=1), as on a machine given a copied cache.
"""

from __future__ import annotations

import json
import logging

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from encoder import (
    CheckpointError,
    EncoderConfig,
    PromptConfig,
    build_backbone,
    build_encoder,
    load_checkpoint,
    load_encoder,
    save_checkpoint,
)
from encoder import backbone as backbone_module
from encoder.backbone import built_activation, trained_activation
from encoder.errors import ActivationMismatchError

TINY = "sbir-tiny"
TINY_TAG = "test_openai_style"  # a tiny tag registered like open_clip's `openai` ones: weights trained with QuickGELU


def _seed_hub_repo(hub_cache, repo_id: str, tensors: dict[str, torch.Tensor]) -> None:
    """File ``tensors`` as ``open_clip_model.safetensors`` in the HF cache layout for ``repo_id``."""
    commit = "0" * 40
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file(tensors, str(snapshot / "open_clip_model.safetensors"))


def _zero_weights(model_name: str) -> dict[str, torch.Tensor]:
    shapes = open_clip.create_model(model_name, device="meta").state_dict()
    return {name: torch.zeros(t.shape, dtype=torch.float16) for name, t in shapes.items()}


@pytest.fixture()
def offline_hub(tmp_path, monkeypatch):
    hub = tmp_path / "hf" / "hub"
    hub.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import time by huggingface_hub
    return hub


@pytest.fixture()
def tiny_openai_tag(offline_hub, monkeypatch):
    """``sbir-tiny``/``test-openai-style``: a registered tag whose weights (in the offline cache) need QuickGELU."""
    backbone_module.register_model_configs()
    repo = "sbir-tests/tiny-openai-style"
    _seed_hub_repo(offline_hub, repo, dict(build_backbone(TINY, "none").model.state_dict()))
    tags = dict(open_clip.pretrained._PRETRAINED.get(TINY, {}))
    tags[TINY_TAG] = open_clip.pretrained._pcfg(hf_hub=f"{repo}/", quick_gelu=True)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY, tags)
    return TINY_TAG


@pytest.mark.slow
def test_default_vit_b_32_openai_builds_quick_gelu_and_laion_keeps_gelu(offline_hub, monkeypatch):
    for name in ("SBIR_BACKBONE", "SBIR_PRETRAINED", "SBIR_ACTIVATION"):
        monkeypatch.delenv(name, raising=False)
    weights = _zero_weights("ViT-B-32")
    _seed_hub_repo(offline_hub, open_clip.get_pretrained_cfg("ViT-B-32", "openai")["hf_hub"].rstrip("/"), weights)
    laion_repo = open_clip.get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k")["hf_hub"].rstrip("/")
    _seed_hub_repo(offline_hub, laion_repo, weights)
    del weights

    default = load_encoder(device="cpu")  # the README's default: ViT-B-32 / openai
    assert (default.config.backbone, default.config.pretrained) == ("ViT-B-32", "openai")
    assert default.config.activation == "quick_gelu"
    quick = [m for m in default.clip.modules() if type(m).__name__ == "QuickGELU"]
    assert len(quick) == 12 + 12  # one per residual block, image and text towers
    assert not any(isinstance(m, torch.nn.GELU) for m in default.clip.modules())
    del default

    laion = build_backbone("ViT-B-32", "laion2b_s34b_b79k")
    assert laion.activation == "gelu"
    assert any(isinstance(m, torch.nn.GELU) for m in laion.model.modules())
    assert built_activation(laion.model) == "gelu"


def test_tag_activation_comes_from_the_tags_pretrained_config(tiny_openai_tag):
    assert trained_activation("ViT-B-32", "openai") == "quick_gelu"
    assert trained_activation("ViT-B-32", "laion2b_s34b_b79k") == "gelu"
    assert trained_activation("ViT-B-32-quickgelu", "metaclip_400m") == "quick_gelu"
    built = build_backbone(TINY, tiny_openai_tag)
    assert built.activation == "quick_gelu" and not built.random_weights


def test_an_activation_that_contradicts_the_tag_is_refused(tiny_openai_tag):
    with pytest.raises(ActivationMismatchError, match="trained with quick_gelu, but gelu was requested"):
        build_backbone(TINY, tiny_openai_tag, activation="gelu")
    with pytest.raises(ActivationMismatchError, match="trained with quick_gelu"):
        build_backbone("ViT-B-32", "openai", activation="gelu")  # refused before any weights are read


def test_open_clips_quick_gelu_mismatch_warning_is_an_error_not_a_log_line(tiny_openai_tag):
    # the safety net under the resolution: had anything built a GELU model for these weights, open_clip's
    # warning (which it only logs) stops the build
    with pytest.raises(ActivationMismatchError, match="QuickGELU mismatch"):
        backbone_module._create(TINY, tiny_openai_tag, False, offline=True)


def test_other_open_clip_warnings_reach_the_log_and_only_cache_misses_are_dropped(caplog):
    with caplog.at_level(logging.INFO), backbone_module._without_cache_miss_records():
        logging.warning("Failed to download weights for tag 'x': not cached")
        logging.warning("Model ViT-X initialized partially.")
    messages = [record.getMessage() for record in caplog.records]
    assert "Model ViT-X initialized partially." in messages
    assert not any(m.startswith("Failed to download") for m in messages)


def test_local_dir_activation_comes_from_its_open_clip_config(tmp_path):
    folder = tmp_path / "dir"
    folder.mkdir()
    model_cfg = {**open_clip.get_model_config(TINY), "quick_gelu": True}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))
    torch.save(build_backbone(TINY, "none").model.state_dict(), folder / "open_clip_pytorch_model.bin")
    source = f"local-dir:{folder}"
    assert build_backbone(TINY, source).activation == "quick_gelu"
    with pytest.raises(ActivationMismatchError, match="trained with quick_gelu"):
        build_backbone(TINY, source, activation="gelu")


def test_a_plain_weights_file_takes_the_users_word(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(build_backbone(TINY, "none").model.state_dict(), path)
    assert build_backbone(TINY, str(path)).activation == "gelu"  # the architecture's own
    assert build_backbone(TINY, str(path), activation="quick_gelu").activation == "quick_gelu"


def test_a_quickgelu_architecture_cannot_be_built_as_gelu():
    with pytest.raises(ActivationMismatchError, match="builds quick_gelu, but gelu was requested"):
        build_backbone("ViT-B-32-quickgelu", "none", activation="gelu")


def test_the_resolved_activation_is_in_the_config_and_the_fingerprint():
    torch.manual_seed(0)
    gelu = build_encoder(EncoderConfig(TINY, "none", PromptConfig()))
    torch.manual_seed(0)
    quick = build_encoder(EncoderConfig(TINY, "none", PromptConfig(), activation="quick_gelu"))
    assert gelu.config.activation == "gelu" and quick.config.activation == "quick_gelu"
    assert all(torch.equal(a, b) for a, b in zip(gelu.learned_state().values(), quick.learned_state().values(),
                                                 strict=True))
    assert gelu.fingerprint() != quick.fingerprint()
    # GELU stays out of the identity, so encoders recorded before the field existed keep their fingerprint
    assert gelu.fingerprint() == gelu.fingerprint(record_activation=False)
    assert EncoderConfig.from_json(quick.config.to_json()).activation == "quick_gelu"


def test_a_checkpoint_is_refused_under_the_other_activation(tmp_path):
    encoder = build_encoder(EncoderConfig(TINY, "none", PromptConfig()))
    path = save_checkpoint(encoder, tmp_path / "gelu.safetensors")
    assert load_checkpoint(path).config.activation == "gelu"
    with pytest.raises(CheckpointError, match="trained under gelu; refusing to load it under quick_gelu"):
        load_encoder(path, activation="quick_gelu", device="cpu")


def test_a_checkpoint_from_before_the_field_was_trained_under_gelu_and_is_refused_on_quick_gelu_weights(
    tiny_openai_tag, tmp_path
):
    # what the previous code wrote for weights that need QuickGELU: a GELU model, a config without the field
    backbone = backbone_module.Backbone(*_legacy_gelu_backbone_parts(tiny_openai_tag))
    from encoder import PromptedCLIP

    legacy = PromptedCLIP(EncoderConfig(TINY, tiny_openai_tag, PromptConfig()), backbone)
    path = save_checkpoint(legacy, tmp_path / "legacy.safetensors")
    _drop_recorded_activation(path, legacy.fingerprint(record_activation=False))
    with pytest.raises(CheckpointError, match="trained under gelu .*predates recorded activations.*Retrain"):
        load_checkpoint(path)


def _legacy_gelu_backbone_parts(tag: str):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the QuickGELU mismatch warning the previous code ignored
        model, train_tf, val_tf = open_clip.create_model_and_transforms(TINY, pretrained=tag)
    return model.eval(), train_tf, val_tf, open_clip.get_tokenizer(TINY), False, tag, "gelu"


def _drop_recorded_activation(path, fingerprint: str) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    config = json.loads(metadata["config"])
    del config["activation"]
    metadata["config"] = json.dumps(config, sort_keys=True)
    metadata["fingerprint"] = fingerprint
    save_file(tensors, str(path), metadata=metadata)


def test_a_legacy_gelu_checkpoint_still_loads_with_its_fingerprint(tmp_path):
    encoder = build_encoder(EncoderConfig(TINY, "none", PromptConfig()))
    path = save_checkpoint(encoder, tmp_path / "old.safetensors")
    _drop_recorded_activation(path, encoder.fingerprint(record_activation=False))
    loaded = load_checkpoint(path)
    assert loaded.config.activation == "gelu" and loaded.fingerprint() == encoder.fingerprint()
