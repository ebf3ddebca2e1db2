"""Build a frozen open_clip backbone from a configured weights source.

Sources: an open_clip pretrained tag (``openai``, ``laion2b_s34b_b79k``, ...), a local weights file,
``local-dir:PATH`` (a folder with ``open_clip_config.json`` and weights), ``hf-hub:ORG/REPO``, or
``none`` (random init, seeded so that every process builds the same random backbone; tests only).

Weights that cannot be had raise :class:`WeightsUnavailableError` quickly: the Hugging Face cache
is tried first with the hub forced offline, and the network is only used when the hub answers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import open_clip
import torch
from torch import nn

from .errors import WeightsUnavailableError

log = logging.getLogger(__name__)

_CONFIG_DIR = Path(__file__).with_name("model_configs")
RANDOM_SEED = 0  # the `none` source is random, but the same in every process
_HUB_PROBE_TIMEOUT_S = float(os.environ.get("SBIR_HUB_PROBE_TIMEOUT", "5"))

HOW_TO_SUPPLY = (
    "Supply the weights in one of these ways: "
    "(1) --pretrained /path/to/weights (.bin/.pt/.safetensors, e.g. open_clip_pytorch_model.bin); "
    "(2) --pretrained local-dir:/path/to/folder (open_clip_config.json + weights); "
    "(3) fetch them once on a machine with internet into the Hugging Face cache (HF_HOME), copy "
    "that cache here and set HF_HUB_OFFLINE=1. "
    "For offline smoke tests only: SBIR_BACKBONE=sbir-tiny SBIR_PRETRAINED=none (random weights)."
)


def register_model_configs() -> None:
    """Make the project's own architectures (``sbir-tiny``) known to open_clip."""
    if "sbir-tiny" not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)


@dataclass
class Backbone:
    """An open_clip model with the transforms and tokenizer that belong to it."""

    model: nn.Module
    preprocess_train: object
    preprocess_val: object
    tokenizer: object
    random_weights: bool
    source: str  # where the weights were actually read from (may differ from the config's identity)


def _is_file_like(source: str) -> bool:
    return os.sep in source or source.startswith(".") or source.endswith((".bin", ".pt", ".pth", ".safetensors"))


def _hub_reachable() -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urllib.parse.urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=_HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _create(model_name: str, pretrained: str | None, *, offline: bool):
    import huggingface_hub.constants as hf_constants

    patch = mock.patch.object(hf_constants, "HF_HUB_OFFLINE", True) if offline else contextlib.nullcontext()
    with patch:
        return open_clip.create_model_and_transforms(model_name, pretrained=pretrained, require_pretrained=True)


@contextlib.contextmanager
def _quiet_root_logger():
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)


def _create_with_download(model_name: str, pretrained: str | None, source: str):
    """Cache first (fast, offline); the network only when allowed and the hub answers."""
    try:
        with _quiet_root_logger():  # open_clip logs "Failed to download" for a mere cache miss
            return _create(model_name, pretrained, offline=True)
    except Exception as cached_error:  # noqa: BLE001 - open_clip raises RuntimeError/OSError/ValueError
        offline_env = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        if offline_env:
            raise WeightsUnavailableError(
                f"Pretrained weights {source!r} are not in the Hugging Face cache and HF_HUB_OFFLINE is set "
                f"({cached_error}). {HOW_TO_SUPPLY}"
            ) from cached_error
        if not _hub_reachable():
            raise WeightsUnavailableError(
                f"Pretrained weights {source!r} are not cached and the Hugging Face hub cannot be reached "
                f"(offline?). {HOW_TO_SUPPLY}"
            ) from cached_error
    try:
        return _create(model_name, pretrained, offline=False)
    except Exception as error:  # noqa: BLE001
        raise WeightsUnavailableError(
            f"Downloading pretrained weights {source!r} failed: {error}. {HOW_TO_SUPPLY}"
        ) from error


def build_backbone(backbone: str, pretrained: str) -> Backbone:
    """Build the open_clip model ``backbone`` with weights from ``pretrained``, frozen, in eval mode."""
    register_model_configs()
    source = pretrained.strip()
    random_weights = source.lower() == "none"

    if random_weights:
        _require_known(backbone)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            model, train_tf, val_tf = open_clip.create_model_and_transforms(backbone, pretrained=None)
        model_name = backbone
    elif source.startswith("local-dir:"):
        folder = Path(source.removeprefix("local-dir:")).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise WeightsUnavailableError(f"local-dir source {folder} has no open_clip_config.json. {HOW_TO_SUPPLY}")
        model_name = f"local-dir:{folder}"
        model, train_tf, val_tf = _wrap_errors(
            lambda: open_clip.create_model_and_transforms(model_name, require_pretrained=True), source
        )
    elif source.startswith("hf-hub:"):
        model_name = source
        model, train_tf, val_tf = _create_with_download(model_name, None, source)
    elif _is_file_like(source) or Path(source).expanduser().is_file():
        path = Path(source).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"Pretrained weights file {path} does not exist. {HOW_TO_SUPPLY}")
        _require_known(backbone)
        model_name = backbone
        model, train_tf, val_tf = _wrap_errors(
            lambda: open_clip.create_model_and_transforms(backbone, pretrained=str(path), require_pretrained=True),
            source,
        )
    else:
        _require_known(backbone)
        tags = open_clip.list_pretrained_tags_by_model(backbone)
        if source not in tags:
            raise WeightsUnavailableError(
                f"{source!r} is neither a pretrained tag of {backbone} (known: {', '.join(tags) or 'none'}) "
                f"nor an existing file. {HOW_TO_SUPPLY}"
            )
        model_name = backbone
        model, train_tf, val_tf = _create_with_download(backbone, source, f"{backbone}/{source}")

    model.eval()
    model.requires_grad_(False)
    return Backbone(
        model=model,
        preprocess_train=train_tf,
        preprocess_val=val_tf,
        tokenizer=open_clip.get_tokenizer(model_name),
        random_weights=random_weights,
        source=source,
    )


def _require_known(backbone: str) -> None:
    if backbone not in open_clip.list_models():
        raise WeightsUnavailableError(
            f"Unknown backbone {backbone!r}: not an open_clip architecture (see open_clip.list_models()); "
            "use hf-hub:ORG/REPO or local-dir:PATH as --pretrained for architectures shipped with their weights."
        )


def _wrap_errors(build, source: str):
    try:
        return build()
    except WeightsUnavailableError:
        raise
    except Exception as error:  # noqa: BLE001 - any loader failure becomes one documented error
        raise WeightsUnavailableError(
            f"Loading pretrained weights {source!r} failed: {error}. {HOW_TO_SUPPLY}"
        ) from error
