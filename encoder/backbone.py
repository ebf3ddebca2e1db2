"""Build a frozen open_clip backbone from a configured weights source.

Sources: an open_clip pretrained tag (``openai``, ``laion2b_s34b_b79k``, ...), a local weights file,
``local-dir:PATH`` (a folder with ``open_clip_config.json`` and weights), ``hf-hub:ORG/REPO``, or
``none`` (random init, seeded so that every process builds the same random backbone; tests only).

Weights that cannot be had raise :class:`WeightsUnavailableError` quickly: the Hugging Face cache
is tried first with the hub forced offline, and the network is only used when the hub answers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import open_clip
import torch
from torch import nn

from .config import ACTIVATIONS, env_number
from .errors import ActivationMismatchError, WeightsUnavailableError

log = logging.getLogger(__name__)

_CONFIG_DIR = Path(__file__).with_name("model_configs")
RANDOM_SEED = 0  # the `none` source is random, but the same in every process
_HUB_PROBE_TIMEOUT_S = 5.0  # unless SBIR_HUB_PROBE_TIMEOUT says otherwise (_hub_probe_timeout_s)


def _hub_probe_timeout_s() -> float:
    """SBIR_HUB_PROBE_TIMEOUT in seconds: a bad value is a WeightsUnavailableError naming it."""
    return env_number("SBIR_HUB_PROBE_TIMEOUT", _HUB_PROBE_TIMEOUT_S, minimum=0.0, above=True,
                      what="a number of seconds", error=WeightsUnavailableError)

HOW_TO_SUPPLY = (
    "Supply the weights in one of these ways: "
    "(1) --pretrained /path/to/weights (.bin/.pt/.safetensors, e.g. open_clip_pytorch_model.bin); a plain file "
    "of OpenAI's weights (e.g. ViT-B-32.pt, or open_clip's openai tag saved to a file) was trained with QuickGELU, "
    "which a file does not record: also set SBIR_ACTIVATION=quick_gelu (or --activation quick_gelu); "
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
    activation: str  # the MLP activation the built model computes ("gelu" or "quick_gelu")


def _is_file_like(source: str) -> bool:
    return os.sep in source or source.startswith(".") or source.endswith((".bin", ".pt", ".pth", ".safetensors"))


def _hub_reachable() -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urllib.parse.urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=_hub_probe_timeout_s()):
            return True
    except OSError:
        return False


# open_clip reports a weights cache miss this way; expected while the cache is tried first, noise otherwise.
_CACHE_MISS_MESSAGES = ("Failed to download weights", "Could not find/download default weights")


class _DropCacheMissRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_CACHE_MISS_MESSAGES)


@contextlib.contextmanager
def _without_cache_miss_records():
    """Hide only open_clip's cache-miss records; every other message (its compatibility warnings) is logged."""
    dropper = _DropCacheMissRecords()
    logging.root.addFilter(dropper)
    try:
        yield
    finally:
        logging.root.removeFilter(dropper)


def _open_clip_create(model_name: str, pretrained: str | None, quick_gelu: bool, **kwargs):
    """open_clip's factory; its QuickGELU mismatch warning is an error, its other warnings reach the log."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        created = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, force_quick_gelu=quick_gelu, **kwargs
        )
    for warning in caught:
        message = str(warning.message)
        if "QuickGELU mismatch" in message:
            raise ActivationMismatchError(f"{model_name}/{pretrained}: {message} {HOW_TO_CHOOSE_ACTIVATION}")
        if not issubclass(warning.category, DeprecationWarning):
            log.warning("open_clip: %s", message)
    return created


def _create(model_name: str, pretrained: str | None, quick_gelu: bool, *, offline: bool):
    import huggingface_hub.constants as hf_constants

    patch = mock.patch.object(hf_constants, "HF_HUB_OFFLINE", True) if offline else contextlib.nullcontext()
    with patch:
        return _open_clip_create(model_name, pretrained, quick_gelu, require_pretrained=True)


def _create_with_download(model_name: str, pretrained: str | None, source: str, quick_gelu: bool):
    """Cache first (fast, offline); the network only when allowed and the hub answers."""
    try:
        with _without_cache_miss_records():
            return _create(model_name, pretrained, quick_gelu, offline=True)
    except ActivationMismatchError:
        raise
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
        return _create(model_name, pretrained, quick_gelu, offline=False)
    except ActivationMismatchError:
        raise
    except Exception as error:  # noqa: BLE001
        raise WeightsUnavailableError(
            f"Downloading pretrained weights {source!r} failed: {error}. {HOW_TO_SUPPLY}"
        ) from error


# ----------------------------------------------------------------- activation
HOW_TO_CHOOSE_ACTIVATION = (
    "The activation follows the weights: open_clip tags and open_clip_config.json say which one they were trained "
    "with; for a plain weights file name a '-quickgelu' architecture (e.g. ViT-B-32-quickgelu for OpenAI weights) "
    "or pass --activation quick_gelu (env SBIR_ACTIVATION=quick_gelu)."
)


def _flag(quick_gelu: bool) -> str:
    return "quick_gelu" if quick_gelu else "gelu"


def architecture_activation(model_name: str) -> str:
    """The activation an open_clip architecture name builds by itself (``-quickgelu`` configs say so)."""
    register_model_configs()
    config = open_clip.get_model_config(model_name) or {}
    return _flag(bool(config.get("quick_gelu", False)))


def _config_file(source: str) -> Path | None:
    """Where a ``local-dir:`` or ``hf-hub:`` source keeps its ``open_clip_config.json`` (the hub's: once cached)."""
    if source.startswith("local-dir:"):
        return Path(source.removeprefix("local-dir:")).expanduser() / "open_clip_config.json"
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source.removeprefix("hf-hub:"), "open_clip_config.json")
    return Path(cached) if isinstance(cached, str) else None


def trained_activation(backbone: str, source: str) -> str | None:
    """The activation the weights from ``source`` were trained with, where the source records it.

    An open_clip tag: its pretrained config (``quick_gelu`` for OpenAI's) or the architecture's own; a
    ``local-dir:`` folder or an ``hf-hub:`` repository: its ``open_clip_config.json`` (for the hub, once it is in the
    cache); a plain file or random weights (``none``) record nothing.
    """
    if source.startswith(("local-dir:", "hf-hub:")):
        config_path = _config_file(source)
        if config_path is None:
            return None  # not fetched yet: checked again once the build has fetched it
        try:
            model_cfg = json.loads(config_path.read_text()).get("model_cfg", {})
        except (OSError, ValueError, AttributeError):
            return None  # the build reports the unreadable folder
        if not isinstance(model_cfg, dict):
            return None  # a config of another shape ("model_cfg": null): the build reports it too
        return _flag(bool(model_cfg.get("quick_gelu", False)))
    if source.lower() == "none" or _is_file_like(source):
        return None
    tag_config = open_clip.get_pretrained_cfg(backbone, source) or {}
    if not tag_config:
        return None
    if "quick_gelu" in tag_config:
        return _flag(bool(tag_config["quick_gelu"]))
    return architecture_activation(backbone)


def built_activation(model: nn.Module) -> str:
    """What the built model computes: any open_clip ``QuickGELU`` module means QuickGELU."""
    return _flag(any(type(module).__name__ == "QuickGELU" for module in model.modules()))


def resolve_activation(backbone: str, source: str, requested: str | None) -> str | None:
    """The activation to build: the weights' own; ``requested`` must agree with it where the weights record one."""
    if requested is not None and requested not in ACTIVATIONS:
        raise ActivationMismatchError(f"Unknown activation {requested!r} (known: {', '.join(ACTIVATIONS)}).")
    trained = trained_activation(backbone, source)
    if requested is not None and trained is not None and requested != trained:
        raise ActivationMismatchError(
            f"Weights {backbone}/{source} were trained with {trained}, but {requested} was requested. "
            f"{HOW_TO_CHOOSE_ACTIVATION}"
        )
    return requested or trained


def build_backbone(backbone: str, pretrained: str, activation: str | None = None) -> Backbone:
    """Build the open_clip model ``backbone`` with weights from ``pretrained``, frozen, in eval mode.

    ``activation`` None builds what the weights were trained with; a value that contradicts the weights is an
    :class:`ActivationMismatchError`, as is a built model that does not compute the intended activation.
    """
    register_model_configs()
    source = pretrained.strip()
    random_weights = source.lower() == "none"
    intended = resolve_activation(backbone, source, activation)
    quick_gelu = intended == "quick_gelu"

    if random_weights:
        _require_known(backbone)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            model, train_tf, val_tf = _open_clip_create(backbone, None, quick_gelu)
        model_name = backbone
    elif source.startswith("local-dir:"):
        folder = Path(source.removeprefix("local-dir:")).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise WeightsUnavailableError(f"local-dir source {folder} has no open_clip_config.json. {HOW_TO_SUPPLY}")
        model_name = f"local-dir:{folder}"
        model, train_tf, val_tf = _wrap_errors(
            lambda: _open_clip_create(model_name, None, quick_gelu, require_pretrained=True), source
        )
    elif source.startswith("hf-hub:"):
        model_name = source
        model, train_tf, val_tf = _create_with_download(model_name, None, source, quick_gelu)
    elif _is_file_like(source) or Path(source).expanduser().is_file():
        path = Path(source).expanduser()
        if not path.is_file():
            what = "is a folder (a folder of open_clip_config.json + weights is local-dir:PATH)" if path.is_dir() \
                else "does not exist"
            raise WeightsUnavailableError(f"Pretrained weights file {path} {what}. {HOW_TO_SUPPLY}")
        if path.stat().st_size == 0:
            raise WeightsUnavailableError(f"Pretrained weights file {path} is empty (0 bytes). {HOW_TO_SUPPLY}")
        _require_known(backbone)
        model_name = backbone
        model, train_tf, val_tf = _wrap_errors(
            lambda: _open_clip_create(backbone, str(path), quick_gelu, require_pretrained=True), source
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
        model, train_tf, val_tf = _create_with_download(backbone, source, f"{backbone}/{source}", quick_gelu)

    if source.startswith("hf-hub:"):
        resolve_activation(backbone, source, activation)  # the repository's config is in the cache now
    built = built_activation(model)
    if intended is not None and built != intended:
        # e.g. gelu asked of a '-quickgelu' architecture, or of an hf-hub repo whose config says quick_gelu
        raise ActivationMismatchError(
            f"{model_name} builds {built}, but {intended} was requested. {HOW_TO_CHOOSE_ACTIVATION}"
        )
    model.eval()
    model.requires_grad_(False)
    return Backbone(
        model=model,
        preprocess_train=train_tf,
        preprocess_val=val_tf,
        tokenizer=open_clip.get_tokenizer(model_name),
        random_weights=random_weights,
        source=source,
        activation=built,
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
    except (WeightsUnavailableError, ActivationMismatchError):
        raise
    except Exception as error:  # noqa: BLE001 - any loader failure becomes one documented error
        reason = str(error).rstrip(".") or type(error).__name__  # some loaders raise without a message
        raise WeightsUnavailableError(
            f"Loading pretrained weights {source!r} failed: {reason}. {HOW_TO_SUPPLY}"
        ) from error
