"""Shared fixtures. The whole suite runs offline on the tiny random architecture."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("SBIR_BACKBONE", "sbir-tiny")
os.environ.setdefault("SBIR_PRETRAINED", "none")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# `auto` would pick bf16 on a CPU with AMX and fp32 elsewhere: the suite computes the same numbers on every machine
# (the precision tests ask for auto/bf16 explicitly).
os.environ.setdefault("SBIR_PRECISION", "fp32")
os.environ.setdefault("MPLBACKEND", "Agg")

from encoder import EncoderConfig, PromptConfig, build_encoder  # noqa: E402

TINY = "sbir-tiny"


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's thread count set to ``count`` for the block, restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture()
def one_thread():
    """Tiny models run far faster single-threaded on a busy shared CPU."""
    with torch_threads(1):
        yield


@pytest.fixture()
def two_threads():
    """Two torch threads, whatever the machine: encoder lanes have a budget to share out."""
    with torch_threads(2):
        yield


@pytest.fixture(scope="session")
def tiny_config() -> EncoderConfig:
    return EncoderConfig(backbone=TINY, pretrained="none", prompts=PromptConfig())


@pytest.fixture()
def tiny_encoder(tiny_config):
    """A fresh prompted tiny encoder (random prompts) on CPU, in eval mode."""
    return build_encoder(tiny_config, "cpu")


@pytest.fixture(scope="session")
def tiny_baseline():
    """The frozen-CLIP baseline (no prompts) of the tiny architecture."""
    return build_encoder(EncoderConfig(backbone=TINY, pretrained="none", prompts=None), "cpu")
