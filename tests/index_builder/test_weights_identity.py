"""An index records a few values of the backbone weights its vectors came from: a baseline index whose weights file
was replaced under the same path (the fingerprint names the path, not the weights) is no longer searched or grown
with the new weights' vectors."""

from __future__ import annotations

import shutil

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from app.index_holder import IndexHolder
from encoder import EncoderConfig, build_encoder
from encoder.model import compact_sample
from index_builder.errors import FingerprintMismatchError
from photo_index.compatibility import embedding_identity, weights_mismatch
from tests.conftest import TINY

from .conftest import live_manifest


def _weights_file(path, seed: int):
    torch.manual_seed(seed)
    model, _, _ = open_clip.create_model_and_transforms(TINY)
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, str(path))
    return path


def _baseline(weights) -> object:
    return build_encoder(EncoderConfig(backbone=TINY, pretrained=str(weights), prompts=None), "cpu")


def test_a_replaced_weights_file_is_refused_by_the_build_and_the_service(make_gallery, build, tmp_path):
    weights = tmp_path / "weights.safetensors"
    shutil.copy(_weights_file(tmp_path / "a.safetensors", 1), weights)
    first = _baseline(weights)
    gallery = make_gallery({"cat": 2, "dog": 2})
    build(encoder=first, gallery=gallery)
    assert len(live_manifest(tmp_path / "index")["encoder"]["weights_sample"]) == 16

    shutil.copy(_weights_file(tmp_path / "b.safetensors", 2), weights)
    second = _baseline(weights)
    assert second.fingerprint() == first.fingerprint()  # why the weights themselves are recorded
    assert embedding_identity(second) != embedding_identity(first)  # a resumed build's staged vectors are dropped
    with pytest.raises(FingerprintMismatchError, match="other backbone weights"):
        build(encoder=second, gallery=gallery)

    holder = IndexHolder(tmp_path / "index", fingerprint=second.fingerprint(), dim=second.embed_dim,
                         weights_sample=second.backbone_sample())
    assert not holder.refresh() and "failed the weights check" in holder.refusal
    same = IndexHolder(tmp_path / "index", fingerprint=first.fingerprint(), dim=first.embed_dim,
                       weights_sample=first.backbone_sample())
    assert same.refresh() and same.ready

    report = build(encoder=second, gallery=gallery, rebuild=True)
    assert report.size == 4
    assert holder.refresh() and holder.ready


def test_a_bf16_copy_of_the_weights_matches_and_an_older_or_damaged_record_is_told_apart(tiny_baseline):
    sample = tiny_baseline.backbone_sample()
    recorded = compact_sample(sample)
    rounded = {name: [torch.tensor(value).bfloat16().float().item() for value in values]
               for name, values in sample.items()}
    assert weights_mismatch({"encoder": {"weights_sample": recorded}}, rounded) is None
    assert weights_mismatch({"encoder": {}}, sample) is None  # written before weights were recorded: not checked
    damaged = {name: {"x": 1} for name in recorded}
    for record in (damaged, ["not", "a", "mapping"]):
        assert "damaged record" in weights_mismatch({"version": "v1", "encoder": {"weights_sample": record}}, sample)


def test_a_resumed_builds_staging_survives_a_change_of_precision():
    """The identity hashed weights rounded to 3 digits, which a bf16 cast moves: a build killed on a GPU (bf16) and
    resumed on a CPU (fp32) threw its staged vectors away. Vectors of either precision mix (encoder/precision.py)."""
    from encoder.precision import PrecisionChoice, apply_precision

    config = EncoderConfig(backbone=TINY, pretrained="none", prompts=None)
    fp32, bf16 = build_encoder(config, "cpu"), build_encoder(config, "cpu")
    apply_precision(bf16, PrecisionChoice("bf16", "bf16", "test"))
    assert bf16.weights_dtype == torch.bfloat16
    assert embedding_identity(bf16) == embedding_identity(fp32)
