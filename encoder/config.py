"""Encoder configuration: which backbone, where its weights come from, and how prompts are shaped.

The config is plain data (JSON round-trip) so a checkpoint can carry it and every entry point
(training, index_builder, app) can rebuild exactly the same encoder from it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

DEFAULT_BACKBONE = "ViT-B-32"
DEFAULT_PRETRAINED = "openai"
ENV_BACKBONE = "SBIR_BACKBONE"
ENV_PRETRAINED = "SBIR_PRETRAINED"
ENV_ACTIVATION = "SBIR_ACTIVATION"

PromptDepth = Literal["shallow", "deep"]
# The MLP activation of the transformer towers. OpenAI's CLIP weights were trained with QuickGELU
# (x * sigmoid(1.702 x)); most later open_clip weights with exact GELU. Weights under the wrong one still load,
# but every layer computes something else than what was trained (open_clip issues #441, #771).
ACTIVATIONS = ("gelu", "quick_gelu")
Trainable = Literal["prompts+ln", "official"]
# How sketches are framed (encoder.imaging.normalise_sketch): "ink" (cropped to the ink: uploads, and every encoder
# trained before the field existed) or "canvas" (the whole canvas padded to square, as the official code does).
SketchFraming = Literal["ink", "canvas"]
SKETCH_FRAMINGS: tuple[str, ...] = ("ink", "canvas")
TRAINABLE_SETS: tuple[str, ...] = ("prompts+ln", "official")
# Prompt tokens per set: the paper learns 3; hundreds are no configuration anyone trains, and a damaged checkpoint's
# 10**12 must be refused before it is allocated.
MAX_PROMPTS = 256


@dataclass(frozen=True)
class PromptConfig:
    """Learned visual prompts (method.md, "Visual prompts").

    ``n_prompts`` vectors of the transformer width are appended to the token sequence (shallow),
    or fresh ones at every layer (deep). ``shared`` uses one prompt set for both modalities
    (fine-grained); otherwise sketches and photos get their own (category-level).
    ``separate_ln`` gives each modality its own copy of the visual LayerNorm affine parameters;
    ``tune_ln`` = False leaves the LayerNorms frozen (an ablation).
    ``trainable`` = "official" also learns what the official code's freezing left trainable: every
    image-tower tensor not named ``weight``/``bias`` (attention in-projections, class and positional
    embeddings, the visual projection), shared by both modalities, at the LayerNorm learning rate.
    """

    n_prompts: int = 3
    depth: PromptDepth = "shallow"
    shared: bool = False
    separate_ln: bool = False
    tune_ln: bool = True
    trainable: Trainable = "prompts+ln"

    def __post_init__(self) -> None:
        # Checked before any tensor is made: a checkpoint's stored config is read from a file (3.5, 10**12, "yes").
        if type(self.n_prompts) is not int or not 1 <= self.n_prompts <= MAX_PROMPTS:
            raise ValueError(f"n_prompts must be a whole number from 1 to {MAX_PROMPTS}, got {self.n_prompts!r}")
        for name in ("shared", "separate_ln", "tune_ln"):
            if type(getattr(self, name)) is not bool:
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.depth not in ("shallow", "deep"):
            raise ValueError(f"prompt depth must be 'shallow' or 'deep', got {self.depth!r}")
        if self.separate_ln and not self.tune_ln:
            raise ValueError("separate_ln needs tune_ln: frozen LayerNorms cannot differ per modality")
        if self.trainable not in TRAINABLE_SETS:
            raise ValueError(f"trainable must be one of {', '.join(TRAINABLE_SETS)}, got {self.trainable!r}")
        if self.trainable == "official" and not self.tune_ln:
            raise ValueError("trainable 'official' trains the LayerNorms too: it cannot be combined with tune_ln off")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.trainable == "prompts+ln":  # omitted at its default: older checkpoints and indexes keep their identity
            del data["trainable"]
        return data


@dataclass(frozen=True)
class EncoderConfig:
    """Everything needed to rebuild an encoder. ``prompts=None`` is the frozen-CLIP baseline.

    ``activation`` None means "what the weights were trained with" (resolved when the backbone is built: the
    encoder's own config always holds the resolved value, so checkpoints and indexes record it).
    """

    backbone: str = DEFAULT_BACKBONE
    pretrained: str = DEFAULT_PRETRAINED
    prompts: PromptConfig | None = field(default_factory=PromptConfig)
    activation: str | None = None
    sketch_framing: SketchFraming = "ink"

    def __post_init__(self) -> None:
        if self.activation is not None and self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.sketch_framing not in SKETCH_FRAMINGS:
            raise ValueError(f"sketch_framing must be one of {', '.join(SKETCH_FRAMINGS)}, got {self.sketch_framing!r}")

    @property
    def is_baseline(self) -> bool:
        return self.prompts is None

    def with_pretrained(self, pretrained: str) -> EncoderConfig:
        return replace(self, pretrained=pretrained)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["prompts"] = self.prompts.to_dict() if self.prompts is not None else None
        if self.sketch_framing == "ink":  # omitted at its old implicit value: older checkpoints and indexes keep theirs
            del data["sketch_framing"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        prompts = data.get("prompts")
        return cls(
            backbone=str(data["backbone"]),
            pretrained=str(data["pretrained"]),
            prompts=PromptConfig(**prompts) if prompts is not None else None,
            activation=data.get("activation"),
            sketch_framing=data.get("sketch_framing", "ink"),
        )

    @classmethod
    def from_json(cls, text: str) -> EncoderConfig:
        return cls.from_dict(json.loads(text))


def env_backbone() -> str:
    return os.environ.get(ENV_BACKBONE) or DEFAULT_BACKBONE


def env_pretrained() -> str:
    return os.environ.get(ENV_PRETRAINED) or DEFAULT_PRETRAINED


def env_number(name: str, default: int | float, *, minimum: int | float, above: bool = False, what: str = "a number",
               error: type[Exception] = ValueError) -> int | float:
    """Environment variable ``name`` as a number of ``default``'s type (unset or empty: ``default``), at least
    ``minimum`` (more than it with ``above``). Read when used, never at import: a bad value is one ``error`` that
    names the variable, not a traceback that stops every command."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = type(default)(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum or (above and value == minimum):
        raise error(f"{name} must be {what} {'>' if above else '>='} {minimum} (default {default}), "
                    f"not {text[:40]!r}.")
    return value


def env_activation() -> str | None:
    value = (os.environ.get(ENV_ACTIVATION) or "auto").strip().lower()
    return None if value == "auto" else value


def add_encoder_args(parser: argparse.ArgumentParser, *, checkpoint: bool = True) -> None:
    """The one convention for every entry point: ``--backbone``/``--pretrained`` (+ ``SBIR_*``).

    Defaults are read from the environment at parse time, so ``SBIR_BACKBONE=sbir-tiny
    SBIR_PRETRAINED=none`` switches any command to the tiny offline architecture.
    """
    group = parser.add_argument_group("encoder")
    group.add_argument(
        "--backbone",
        default=None,
        help=f"open_clip architecture (env {ENV_BACKBONE}, default {DEFAULT_BACKBONE}); "
        "with --checkpoint it must match the checkpoint's",
    )
    group.add_argument(
        "--pretrained",
        default=None,
        help=f"weights: an open_clip tag, a local file, local-dir:PATH, hf-hub:ORG/REPO, or none "
        f"(random, tests only) (env {ENV_PRETRAINED}, default {DEFAULT_PRETRAINED})",
    )
    group.add_argument(
        "--activation",
        choices=["auto", *ACTIVATIONS],
        default=None,
        help=f"MLP activation (env {ENV_ACTIVATION}, default auto: what the weights were trained with, read from "
        "the open_clip tag or the weights' open_clip_config.json; for a plain weights file the architecture's own, "
        "so name a '-quickgelu' architecture or pass quick_gelu for OpenAI weights). A contradiction is refused.",
    )
    if checkpoint:
        group.add_argument(
            "--checkpoint",
            default=os.environ.get("SBIR_CHECKPOINT") or None,
            help="trained prompts (.safetensors); omitted or '': the frozen-CLIP baseline (env SBIR_CHECKPOINT, "
                 "which --checkpoint '' overrides)",
        )
