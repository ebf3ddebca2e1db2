"""Weights sources: real loading paths, and fast, documented failure when weights cannot be had."""

from __future__ import annotations

import json
import os
import time

import open_clip
import pytest
import torch

from encoder import EncoderConfig, WeightsUnavailableError, build_backbone, build_encoder
from encoder.backbone import RANDOM_SEED
from tests.tolerance import f32_tol

TINY = "sbir-tiny"


@pytest.fixture()
def empty_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return tmp_path / "hf"


def _state_dict_file(tmp_path):
    backbone = build_backbone(TINY, "none")
    path = tmp_path / "tiny-weights.pt"
    torch.save(backbone.model.state_dict(), path)
    return backbone, path


def test_missing_tag_weights_offline_fail_fast_with_instructions(empty_hf_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as raised:
        build_backbone("ViT-B-32", "openai")
    assert time.monotonic() - started < 30
    message = str(raised.value)
    assert "'ViT-B-32/openai'" in message and "HF_HUB_OFFLINE" in message
    assert "--pretrained /path/to/weights" in message and "local-dir:" in message
    # the plain-file way, with OpenAI's weights, also needs the activation they were trained with
    assert "SBIR_ACTIVATION=quick_gelu" in message


def test_unreachable_hub_fails_fast_instead_of_retrying(empty_hf_cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="cannot be reached"):
        build_backbone("ViT-B-32", "openai")
    assert time.monotonic() - started < 30


def test_unknown_tag_lists_the_known_ones():
    with pytest.raises(WeightsUnavailableError, match="neither a pretrained tag of ViT-B-32.*openai"):
        build_backbone("ViT-B-32", "no-such-tag")


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(WeightsUnavailableError, match="Unknown backbone 'ViT-Nope'"):
        build_backbone("ViT-Nope", "none")


def test_missing_local_file_names_the_path(tmp_path):
    missing = tmp_path / "weights" / "open_clip_model.safetensors"
    with pytest.raises(WeightsUnavailableError, match=f"{missing} does not exist"):
        build_backbone(TINY, str(missing))
    folder = tmp_path / "weights.pt"
    folder.mkdir()
    with pytest.raises(WeightsUnavailableError, match="is a folder .*local-dir:PATH"):  # was "does not exist"
        build_backbone(TINY, str(folder))
    empty = tmp_path / "empty.pt"
    empty.touch()
    with pytest.raises(WeightsUnavailableError, match="is empty"):  # was "failed: ." (torch says nothing)
        build_backbone(TINY, str(empty))


def test_hf_hub_source_offline_fails_with_instructions(empty_hf_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="HF_HUB_OFFLINE"):
        build_backbone(TINY, "hf-hub:someone/some-clip")


def test_local_weights_file_loads_those_weights(tmp_path):
    reference, path = _state_dict_file(tmp_path)
    with torch.no_grad():
        for p in reference.model.parameters():
            p.add_(0.01)  # weights that differ from the seeded random init
    torch.save(reference.model.state_dict(), path)
    loaded = build_backbone(TINY, str(path))
    assert not loaded.random_weights
    for (name, a), (_, b) in zip(reference.model.state_dict().items(), loaded.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_local_dir_source_loads_config_and_weights(tmp_path):
    reference, _ = _state_dict_file(tmp_path)
    folder = tmp_path / "tiny-dir"
    folder.mkdir()
    config = {"model_cfg": open_clip.get_model_config(TINY), "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    torch.save(reference.model.state_dict(), folder / "open_clip_pytorch_model.bin")
    encoder = build_encoder(EncoderConfig(TINY, f"local-dir:{folder}", prompts=None))
    x = torch.randn(2, 3, 64, 64)
    expected = torch.nn.functional.normalize(reference.model.encode_image(x), dim=-1)
    assert torch.allclose(encoder.encode_photo(x), expected, atol=f32_tol(1.0))


def test_local_dir_without_weights_is_refused_not_random(tmp_path):
    folder = tmp_path / "no-weights"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": open_clip.get_model_config(TINY)}))
    with pytest.raises(WeightsUnavailableError):
        build_backbone(TINY, f"local-dir:{folder}")
    with pytest.raises(WeightsUnavailableError, match="no open_clip_config.json"):
        build_backbone(TINY, f"local-dir:{tmp_path / 'absent'}")


@pytest.mark.parametrize("model_cfg", [None, [1], "sbir-tiny"])
def test_a_local_dir_config_of_another_shape_is_refused_not_a_traceback(tmp_path, model_cfg):
    """"model_cfg": null raised AttributeError while the activation was read, before any weights."""
    folder = tmp_path / "odd-config"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    torch.save(build_backbone(TINY, "none").model.state_dict(), folder / "open_clip_pytorch_model.bin")
    with pytest.raises(WeightsUnavailableError, match="local-dir:"):
        build_backbone(TINY, f"local-dir:{folder}")


def test_none_is_random_but_reproducible():
    first, second = build_backbone(TINY, "none"), build_backbone(TINY, "none")
    assert first.random_weights and RANDOM_SEED == 0
    assert all(torch.equal(a, b) for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True))


@pytest.mark.parametrize("value", ["x", "-1", "nan"])
def test_a_bad_hub_probe_timeout_is_a_clear_error_when_used_not_at_import(monkeypatch, value):
    import subprocess
    import sys

    from encoder.backbone import _hub_probe_timeout_s

    result = subprocess.run([sys.executable, "-c", "import encoder, encoder.imaging"], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "SBIR_HUB_PROBE_TIMEOUT": value,
                                              "SBIR_MAX_IMAGE_PIXELS": value})
    assert result.returncode == 0, result.stderr
    monkeypatch.setenv("SBIR_HUB_PROBE_TIMEOUT", value)
    with pytest.raises(WeightsUnavailableError, match="SBIR_HUB_PROBE_TIMEOUT must be"):
        _hub_probe_timeout_s()
