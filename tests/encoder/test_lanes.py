"""Encoder lanes (encoder/lanes.py): a batch split over replicas gives one call's vectors and shares the weights."""

from __future__ import annotations

import threading

import pytest
import torch

from encoder import (
    EncoderConfig,
    LanesError,
    PromptConfig,
    apply_precision,
    build_encoder,
    load_encoder,
    resolve_lanes,
    resolve_precision,
)
from tests.conftest import torch_threads

DEEP_SEPARATE = PromptConfig(depth="deep", shared=False, separate_ln=True)


@pytest.fixture()
def deep_encoder():
    """Deep, per-modality prompts and LayerNorms: both prompt hooks and the LayerNorm overrides are exercised."""
    encoder = build_encoder(EncoderConfig("sbir-tiny", "none", DEEP_SEPARATE), "cpu")
    with torch.no_grad():  # LayerNorm copies that differ from the backbone's, so a lost override would show
        for param in encoder.layer_norms.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return encoder


def images(n: int, encoder, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, encoder.image_size, encoder.image_size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_a_split_batch_gives_the_vectors_of_one_call(deep_encoder, two_threads, n):
    batch = images(n, deep_encoder)
    expected = {m: deep_encoder.encode(batch, m) for m in ("sketch", "photo")}
    deep_encoder.set_lanes(2)
    for modality, vectors in expected.items():
        torch.testing.assert_close(deep_encoder.encode(batch, modality), vectors, rtol=0, atol=1e-6)
    assert torch.get_num_threads() == 2  # the caller's thread count is back


def test_the_modalities_keep_their_own_prompts_and_layer_norms_in_every_lane(deep_encoder, two_threads):
    deep_encoder.set_lanes(2)
    batch = images(4, deep_encoder)
    sketch, photo = deep_encoder.encode_sketch(batch), deep_encoder.encode_photo(batch)
    assert (sketch - photo).abs().max() > 1e-3
    for row in range(4):  # every row, whichever lane encoded it, matches the lane-free forward of that row alone
        torch.testing.assert_close(sketch[row], deep_encoder.encode_here(batch[row:row + 1], "sketch")[0],
                                   rtol=0, atol=1e-6)


def test_replicas_share_every_tensor_and_add_no_state(deep_encoder, two_threads):
    keys, fingerprint = set(deep_encoder.state_dict()), deep_encoder.fingerprint()
    deep_encoder.set_lanes(3)
    assert deep_encoder.lanes == 3
    storage = {t.data_ptr() for t in [*deep_encoder.parameters(), *deep_encoder.buffers()]}
    for replica in deep_encoder._lanes._replicas[1:]:
        assert {t.data_ptr() for t in [*replica.parameters(), *replica.buffers()]} <= storage
    assert set(deep_encoder.state_dict()) == keys and deep_encoder.fingerprint() == fingerprint
    assert deep_encoder.describe()["lanes"] == 3


def test_replicas_see_prompts_loaded_in_place(deep_encoder, two_threads):
    deep_encoder.set_lanes(2)
    batch = images(6, deep_encoder)
    before = deep_encoder.encode_sketch(batch)
    state = {name: t + torch.randn_like(t) for name, t in deep_encoder.learned_state().items()
             if name.startswith("prompts.")}
    deep_encoder.load_state_dict(state, strict=False)
    after = deep_encoder.encode_sketch(batch)
    assert (after - before).abs().max() > 1e-3
    torch.testing.assert_close(after, deep_encoder.encode_here(batch, "sketch"), rtol=0, atol=1e-6)


def test_lanes_follow_a_precision_change(deep_encoder, two_threads):
    batch = images(6, deep_encoder)
    fp32 = deep_encoder.encode_sketch(batch)
    deep_encoder.set_lanes(2)
    apply_precision(deep_encoder, resolve_precision("bf16", "cpu"))
    assert all(r.weights_dtype == torch.bfloat16 for r in deep_encoder._lanes._replicas)
    bf16 = deep_encoder.encode_sketch(batch)
    assert torch.nn.functional.cosine_similarity(bf16, fp32).min() > 0.999


def test_a_failing_lane_raises_and_the_encoder_keeps_working(deep_encoder, two_threads):
    deep_encoder.set_lanes(2)
    with pytest.raises(RuntimeError):
        deep_encoder.encode_sketch(torch.randn(4, 3, 7, 7))  # not the model's input size: every lane fails
    assert torch.get_num_threads() == 2
    batch = images(4, deep_encoder)
    torch.testing.assert_close(deep_encoder.encode_sketch(batch), deep_encoder.encode_here(batch, "sketch"),
                               rtol=0, atol=1e-6)


def test_a_budget_of_one_thread_or_training_does_not_split(deep_encoder):
    deep_encoder.set_lanes(2)
    seen: list[str] = []
    original = deep_encoder.encode_here

    def spy(batch, modality):
        seen.append(threading.current_thread().name)
        return original(batch, modality)

    deep_encoder.encode_here = spy
    with torch_threads(1):
        deep_encoder.encode_sketch(images(4, deep_encoder))
    assert seen == [threading.current_thread().name]
    deep_encoder.train()
    deep_encoder.encode_sketch(images(4, deep_encoder)).sum().backward()  # gradients reach the prompts
    assert deep_encoder.prompts["sketch"].grad is not None


def test_concurrent_callers_are_served_one_split_batch_at_a_time(deep_encoder, two_threads):
    deep_encoder.set_lanes(2)
    batches = [images(5, deep_encoder, seed) for seed in range(4)]
    expected = [deep_encoder.encode_here(b, "sketch") for b in batches]
    results: dict[int, torch.Tensor] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, deep_encoder.encode_sketch(batches[i])))
               for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, vectors in enumerate(expected):
        torch.testing.assert_close(results[i], vectors, rtol=0, atol=1e-6)


def test_resolve_lanes(monkeypatch, two_threads):
    monkeypatch.delenv("SBIR_ENCODER_LANES", raising=False)
    assert resolve_lanes(None, "cpu") == 2
    assert resolve_lanes("auto", "cuda") == 1
    assert resolve_lanes(" 2 ", "cpu") == 2
    assert resolve_lanes("999", "cpu") == 2  # capped at torch's threads: a lane needs one
    monkeypatch.setenv("SBIR_ENCODER_LANES", "1")
    assert resolve_lanes(None, "cpu") == 1
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(LanesError, match="positive integer"):
            resolve_lanes(bad, "cpu")
    torch.set_num_threads(1)
    monkeypatch.delenv("SBIR_ENCODER_LANES")
    assert resolve_lanes("auto", "cpu") == 1  # one thread: nothing to share out


def test_load_encoder_sets_lanes(two_threads):
    assert load_encoder(device="cpu").lanes == 1  # the default: entry points opt in
    assert load_encoder(device="cpu", lanes="auto").lanes == 2
