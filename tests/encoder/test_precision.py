"""Inference precision (encoder/precision.py): `auto` on both sides of the CPU check, bf16 close to fp32."""

from __future__ import annotations

import argparse

import pytest
import torch

from encoder import EncoderConfig, PromptConfig, apply_precision, build_encoder, load_encoder, resolve_precision
from encoder.errors import PrecisionError
from encoder.precision import cpu_flags, precision_note

AMX = frozenset({"fpu", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"})
AVX512_BF16 = frozenset({"fpu", "avx512f", "avx512_bf16"})
PLAIN = frozenset({"fpu", "avx2"})
ARM_BF16 = frozenset({"fp", "asimd", "sve", "bf16", "i8mm"})  # Graviton 3's /proc/cpuinfo Features (a few)
ARM_PLAIN = frozenset({"fp", "asimd", "crc32"})


def no_probe() -> float:
    raise AssertionError("the flags decide alone: no timing probe expected")


def test_auto_picks_bf16_on_a_cpu_with_amx_without_probing():
    choice = resolve_precision("auto", "cpu", flags=AMX, probe=no_probe)
    assert choice.precision == "bf16" and "amx_bf16" in choice.reason


@pytest.mark.parametrize("flags", [PLAIN, ARM_PLAIN], ids=["x86", "arm"])
def test_auto_picks_fp32_on_a_cpu_without_native_bf16(flags):
    choice = resolve_precision("auto", "cpu", flags=flags, probe=no_probe)
    assert choice.precision == "fp32" and "no native bf16" in choice.reason


@pytest.mark.parametrize(("speedup", "expected"), [(2.5, "bf16"), (1.05, "fp32"), (0.4, "fp32")])
@pytest.mark.parametrize("flags", [AVX512_BF16, ARM_BF16, None], ids=["avx512_bf16-only", "arm-bf16", "flags-unknown"])
def test_auto_asks_the_probe_when_flags_are_not_enough_and_never_picks_a_slower_path(flags, speedup, expected):
    calls = []
    choice = resolve_precision("auto", "cpu", flags=flags, probe=lambda: calls.append(1) or speedup)
    assert calls == [1]
    assert choice.precision == expected
    assert f"{speedup:.2f}x" in choice.reason


def test_the_real_probe_returns_a_positive_speed_ratio():
    choice = resolve_precision("auto", "cpu", flags=None)  # this CPU's probe, whatever it finds
    assert choice.precision in ("bf16", "fp32") and "timing probe found bf16" in choice.reason


def test_explicit_precision_and_environment(monkeypatch):
    assert resolve_precision("fp32", "cpu", flags=AMX, probe=no_probe).precision == "fp32"
    assert resolve_precision("BF16", "cpu", flags=PLAIN, probe=no_probe).precision == "bf16"
    monkeypatch.setenv("SBIR_PRECISION", "fp32")
    assert resolve_precision(None, "cpu", flags=AMX, probe=no_probe).precision == "fp32"
    with pytest.raises(PrecisionError, match="auto, fp32, bf16"):
        resolve_precision("fp16", "cpu")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512_bf16 amx_bf16\n")
    assert cpu_flags(cpuinfo) == frozenset({"fpu", "avx512_bf16", "amx_bf16"})
    assert cpu_flags(tmp_path / "missing") is None


@pytest.mark.parametrize("prompts", [PromptConfig(), PromptConfig(depth="deep", separate_ln=True),
                                     PromptConfig(trainable="official"), None],
                         ids=["shallow", "deep-separate-ln", "official", "baseline"])
def test_bf16_embeddings_match_fp32_and_keep_the_fingerprint(prompts):
    encoder = build_encoder(EncoderConfig("sbir-tiny", "none", prompts), "cpu")
    images = torch.randn(6, 3, encoder.image_size, encoder.image_size, generator=torch.Generator().manual_seed(0))
    fingerprint = encoder.fingerprint()
    reference = {m: encoder.encode(images, m) for m in ("sketch", "photo")}
    texts = encoder.encode_text(["a dog", "a cat"])

    apply_precision(encoder, resolve_precision("bf16", "cpu"))
    assert encoder.precision == "bf16" and encoder.describe()["precision"] == "bf16"
    assert encoder.fingerprint() == fingerprint  # an index built in one precision is searched in the other
    for modality, expected in reference.items():
        vectors = encoder.encode(images, modality)
        assert vectors.dtype == torch.float32
        torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(6))
        assert (vectors * expected).sum(-1).min() >= 0.999
    assert (encoder.encode_text(["a dog", "a cat"]) * texts).sum(-1).min() >= 0.999


def test_learned_tensors_stay_fp32_and_their_bf16_copies_follow_a_reload(tiny_encoder):
    images = torch.randn(2, 3, tiny_encoder.image_size, tiny_encoder.image_size)
    apply_precision(tiny_encoder, resolve_precision("bf16", "cpu"))
    before = tiny_encoder.encode_photo(images)
    assert all(p.dtype == torch.float32 for p in tiny_encoder.trainable_parameters().values())
    with torch.no_grad():  # as a checkpoint load does: copy_ into the learned tensors
        for param in tiny_encoder.layer_norms.parameters():
            param.copy_(torch.randn_like(param))
    assert not torch.allclose(tiny_encoder.encode_photo(images), before)


def test_a_bf16_encoder_refuses_to_go_back_to_fp32(tiny_encoder):
    apply_precision(tiny_encoder, resolve_precision("bf16", "cpu"))
    with pytest.raises(PrecisionError, match="load it again"):
        apply_precision(tiny_encoder, resolve_precision("fp32", "cpu"))


def test_load_encoder_applies_the_precision():
    assert load_encoder(backbone="sbir-tiny", pretrained="none", device="cpu", precision="bf16").precision == "bf16"
    encoder = load_encoder(backbone="sbir-tiny", pretrained="none", device="cpu", precision="fp32")
    assert encoder.precision == "fp32" and encoder.describe()["precision_reason"] == "asked for"


def test_precision_note_only_when_precisions_differ():
    assert precision_note("bf16", "bf16") is None
    assert precision_note(None, "fp32") is None  # an index from before the field: fp32
    note = precision_note("fp32", "bf16")
    assert note is not None and "fp32" in note and "bf16" in note and "search works" in note
    assert "not recorded" in precision_note(None, "bf16")


def test_precision_flag_defaults_to_the_environment(monkeypatch):
    from encoder import add_precision_arg

    monkeypatch.setenv("SBIR_PRECISION", "bf16")
    parser = argparse.ArgumentParser()
    add_precision_arg(parser)
    assert parser.parse_args([]).precision == "bf16"
    assert parser.parse_args(["--precision", "fp32"]).precision == "fp32"
