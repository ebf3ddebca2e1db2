"""Shared fixtures. The whole suite runs offline on the tiny random architecture."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

os.environ.setdefault("SBIR_BACKBONE", "sbir-tiny")
os.environ.setdefault("SBIR_PRETRAINED", "none")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

from encoder import EncoderConfig, PromptConfig, build_encoder  # noqa: E402

TINY = "sbir-tiny"


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


def draw_sketch(size: tuple[int, int] = (200, 160), seed: int = 0, line: int = 3) -> Image.Image:
    """A black-on-white 'L' sketch with a few random strokes."""
    rng = np.random.default_rng(seed)
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    w, h = size
    for _ in range(4):
        points = [(float(rng.uniform(0.2, 0.8) * w), float(rng.uniform(0.2, 0.8) * h)) for _ in range(4)]
        draw.line(points, fill=0, width=line)
    return image


def random_photo(size: tuple[int, int] = (120, 90), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
