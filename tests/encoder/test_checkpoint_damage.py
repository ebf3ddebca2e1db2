"""Checkpoints that are damaged or not what they claim: non-finite or integer tensors (the fingerprint is computed
over them, so it cannot tell), a stored config whose numbers are no prompt counts (refused before anything is
allocated), info that is no object, a FIFO given as the file."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from encoder import CheckpointError, EncoderConfig, PromptConfig, load_checkpoint, save_checkpoint


@pytest.fixture()
def saved(tmp_path, tiny_encoder):
    return save_checkpoint(tiny_encoder, tmp_path / "model.safetensors")


def rewrite(path, tensors=None, **metadata_changes):
    """The checkpoint at ``path`` written again with ``tensors`` and its metadata fields changed."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    save_file(tensors if tensors is not None else load_file(path), str(path), metadata={**metadata, **metadata_changes})


@pytest.mark.parametrize("damage", ["nan", "inf", "int64"])
def test_tensors_that_are_not_finite_floats_are_refused(saved, damage):
    tensors = load_file(saved)
    prompts = tensors["prompts.sketch"]
    tensors["prompts.sketch"] = {"nan": torch.full_like(prompts, float("nan")),
                                 "inf": prompts.clone().fill_(float("inf")),
                                 "int64": prompts.round().to(torch.int64)}[damage]
    rewrite(saved, tensors)
    with pytest.raises(CheckpointError, match=r"not finite floating-point.*prompts\.sketch"):
        load_checkpoint(saved)


@pytest.mark.parametrize("n_prompts", [3.5, 10**12, 0, True, "3"])
def test_a_stored_prompt_count_that_is_no_count_is_refused_before_anything_is_built(saved, n_prompts):
    config = json.loads(load_config(saved))
    config["prompts"]["n_prompts"] = n_prompts
    rewrite(saved, config=json.dumps(config))
    with pytest.raises(CheckpointError, match="broken config.*n_prompts"):
        load_checkpoint(saved)


def load_config(path) -> str:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()["config"]


@pytest.mark.parametrize("flag", ["shared", "separate_ln", "tune_ln"])
def test_prompt_flags_must_be_true_or_false(saved, flag):
    config = json.loads(load_config(saved))
    config["prompts"][flag] = "yes"
    rewrite(saved, config=json.dumps(config))
    with pytest.raises(CheckpointError, match=f"broken config.*{flag}"):
        load_checkpoint(saved)


@pytest.mark.parametrize("info", ["[]", "null", "3"])
def test_info_that_is_no_object_is_a_broken_checkpoint(saved, info):
    rewrite(saved, info=info)
    with pytest.raises(CheckpointError, match="broken config"):
        load_checkpoint(saved)


def test_a_fifo_is_named_as_no_regular_file(tmp_path):
    os.mkfifo(tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(tmp_path / "model.safetensors")


def test_prompt_configs_are_checked_where_they_are_made():
    with pytest.raises(ValueError, match="n_prompts"):
        PromptConfig(n_prompts=257)
    assert EncoderConfig(prompts=PromptConfig(n_prompts=256)).prompts.n_prompts == 256



def test_a_checkpoint_is_not_applied_to_other_weights_of_its_architecture(saved, tmp_path, tiny_encoder):
    """The fingerprint names where weights come from (``none``, a tag, a file), not what they are: another weights
    file under the same architecture passed it, and the prompts ran on weights they were not learned on."""
    import open_clip

    torch.manual_seed(1)
    other = open_clip.create_model("sbir-tiny")
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other sbir-tiny weights"):
        load_checkpoint(saved, pretrained=str(tmp_path / "other.pt"))
    for dtype in (torch.float32, torch.float16):  # a copy of the very weights, also a half-precision one: fine
        torch.save({k: v.to(dtype) for k, v in tiny_encoder.clip.state_dict().items()}, tmp_path / "same.pt")
        assert load_checkpoint(saved, pretrained=str(tmp_path / "same.pt")).fingerprint() == tiny_encoder.fingerprint()


@pytest.mark.parametrize("values", [{"x": 1}, "abc", [1, "2"], None, [float("nan")] * 8])
def test_a_backbone_sample_that_is_no_list_of_numbers_is_a_broken_checkpoint(saved, values):
    """A dict raised TypeError (a traceback in every entry point); a string's ValueError never named the file."""
    with safe_open(str(saved), framework="pt") as handle:
        info = json.loads(handle.metadata()["info"])
    name = next(iter(info["backbone_sample"]))
    rewrite(saved, info=json.dumps({**info, "backbone_sample": {**info["backbone_sample"], name: values}}))
    with pytest.raises(CheckpointError, match=f"{saved}.*broken backbone sample.*{name}"):
        load_checkpoint(saved)


def test_a_backbone_sample_that_is_no_mapping_is_a_broken_checkpoint(saved):
    """A list was skipped as if the checkpoint predated the sample, while a damaged entry was refused."""
    with safe_open(str(saved), framework="pt") as handle:
        info = json.loads(handle.metadata()["info"])
    rewrite(saved, info=json.dumps({**info, "backbone_sample": [1, 2, 3]}))
    with pytest.raises(CheckpointError, match="broken backbone sample"):
        load_checkpoint(saved)
