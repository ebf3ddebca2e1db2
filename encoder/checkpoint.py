"""Checkpoints: the learned tensors only (safetensors) + the encoder config + a fingerprint.

One ``.safetensors`` file is the checkpoint; its header metadata carries the config JSON, the
library versions and the fingerprint, and a ``.json`` file beside it repeats them for people.
Loading rebuilds the backbone from the config (its weights may be read from another source) and
applies the tensors; anything that does not fit exactly is a :class:`CheckpointError`.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from .backbone import architecture_activation
from .config import (
    DEFAULT_BACKBONE,
    DEFAULT_PRETRAINED,
    ENV_BACKBONE,
    ENV_PRETRAINED,
    EncoderConfig,
    env_activation,
)
from .errors import ActivationMismatchError, CheckpointError
from .lanes import resolve_lanes
from .model import PromptedCLIP, build_encoder, other_weights
from .precision import apply_precision, resolve_precision

FORMAT = "sbir-prompted-clip/1"


def _versions() -> dict[str, str]:
    found = {}
    for package in ("torch", "open_clip_torch", "sketch-search"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "unknown"
    return found


def save_checkpoint(encoder: PromptedCLIP, path: str | Path, extra: dict | None = None) -> Path:
    """Write ``path`` (.safetensors) and ``path.json`` atomically; returns the checkpoint path."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    if encoder.config.is_baseline:
        raise CheckpointError("The frozen-CLIP baseline has nothing learned to save.")
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "format": FORMAT,
        "config": encoder.config.to_dict(),
        "fingerprint": encoder.fingerprint(),
        "backbone_sample": encoder.backbone_sample(),
        "versions": _versions(),
        "extra": extra or {},
    }
    metadata = {"format": FORMAT, "config": encoder.config.to_json(), "fingerprint": info["fingerprint"],
                "info": json.dumps(info, sort_keys=True)}
    # Write-then-rename so a crash never leaves a half-written checkpoint under the real name. The file is opened
    # here (not by mkstemp or safetensors' save_file, which both make it 0600), so its mode follows the umask like
    # every other file the project writes; the learned tensors are small enough to serialise in memory.
    tmp_path = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp_path, "wb") as out:
            out.write(save(encoder.learned_state(), metadata=metadata))
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    path.with_suffix(".json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return path


def read_checkpoint(path: str | Path) -> tuple[EncoderConfig, dict[str, torch.Tensor], dict]:
    """Config, tensors and info of a checkpoint file, without building any model."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a checkpoint file" if path.is_dir() else \
            "is not a regular file (a FIFO, a device, a link that leads nowhere)" if os.path.lexists(path) else \
            "does not exist"
        raise CheckpointError(f"Checkpoint {path} {what}.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"Checkpoint {path} is not a readable safetensors file: {error}") from error
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an encoder checkpoint (format {metadata.get('format')!r}, expected {FORMAT})."
        )
    try:
        stored = json.loads(metadata["config"])
        config = EncoderConfig.from_dict(stored)
        info = json.loads(metadata.get("info", "{}"))
        if not isinstance(info, dict):
            raise TypeError(f"its info is {type(info).__name__}, not an object")
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"Checkpoint {path} has a broken config: {error}") from error
    if config.is_baseline:
        raise CheckpointError(f"Checkpoint {path} has no prompt config.")
    if "activation" not in stored:
        info["activation_recorded"] = False
        config = _with_legacy_activation(config)
    info["fingerprint"] = metadata.get("fingerprint")
    return config, tensors, info


def _with_legacy_activation(config: EncoderConfig) -> EncoderConfig:
    """A checkpoint written before the activation was recorded was trained under what open_clip built then: the
    architecture's own activation for tags and files (never forced), the config file's for local-dir:/hf-hub:."""
    if config.pretrained.startswith(("local-dir:", "hf-hub:")):
        return config
    return replace(config, activation=architecture_activation(config.backbone))


def apply_learned_state(encoder: PromptedCLIP, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Copy ``tensors`` into ``encoder``'s learned parameters; all names and shapes must match exactly."""
    expected = encoder.trainable_parameters()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong_shape = [
        f"{name}: checkpoint {tuple(tensors[name].shape)} vs model {tuple(p.shape)}"
        for name, p in expected.items()
        if name in tensors and tensors[name].shape != p.shape
    ]
    if missing or unexpected or wrong_shape:
        details = []
        if missing:
            details.append(f"missing tensors: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            details.append(f"unexpected tensors: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        if wrong_shape:
            details.append(f"shape mismatch (other width or depth?): {'; '.join(wrong_shape[:3])}")
        raise CheckpointError(f"{source} does not fit backbone {encoder.config.backbone}: " + "; ".join(details))
    # The fingerprint is computed over these very values, so it cannot tell NaN prompts from learned ones: an encoder
    # built on them would answer every search with NaN, which the index turns into no results at all.
    broken = [name for name, tensor in tensors.items()
              if not tensor.is_floating_point() or not bool(torch.isfinite(tensor).all())]
    if broken:
        raise CheckpointError(f"{source} holds tensors that are not finite floating-point numbers (damaged or "
                              f"edited): {', '.join(sorted(broken)[:5])}{' ...' if len(broken) > 5 else ''}")
    with torch.no_grad():
        for name, param in expected.items():
            param.copy_(tensors[name].to(param.dtype))


def load_checkpoint(
    path: str | Path,
    *,
    backbone: str | None = None,
    pretrained: str | None = None,
    activation: str | None = None,
    device: str | torch.device = "cpu",
) -> PromptedCLIP:
    """Rebuild the encoder a checkpoint was trained with and apply its learned tensors.

    ``backbone`` and ``activation``, when given, must equal the checkpoint's; ``pretrained`` reads the backbone
    weights from another source (e.g. a local copy of the same weights).
    """
    config, tensors, info = read_checkpoint(path)
    if backbone is not None and backbone != config.backbone:
        raise CheckpointError(
            f"Checkpoint {path} was trained on backbone {config.backbone!r}, but {backbone!r} was requested."
        )
    if pretrained is not None and pretrained.strip().lower() == "none" and config.pretrained.lower() != "none":
        raise CheckpointError(
            f"Checkpoint {path} was trained on {config.backbone}/{config.pretrained} weights; "
            "refusing to apply it to a randomly initialised backbone (pretrained=none)."
        )
    if activation is not None and config.activation is not None and activation != config.activation:
        raise CheckpointError(
            f"Checkpoint {path} was trained under {config.activation}; refusing to load it under {activation}."
        )
    legacy = not info.get("activation_recorded", True)  # written before the activation was recorded
    try:
        encoder = build_encoder(config, device, weights_source=pretrained)
    except ActivationMismatchError as error:
        recorded = " (it predates recorded activations, so it was trained under the architecture's own)" \
            if legacy else ""
        raise CheckpointError(
            f"Checkpoint {path} was trained under {config.activation}{recorded}, but its backbone weights need "
            f"another activation: {error} Retrain the prompts on the correctly built backbone."
        ) from error
    recorded = info.get("backbone_sample")  # a checkpoint written before it was recorded is not checked
    try:
        differ = other_weights(recorded, encoder.backbone_sample()) if recorded is not None else []
    except ValueError as error:
        raise CheckpointError(f"Checkpoint {path} has a broken backbone sample ({error}).") from None
    if differ:
        raise CheckpointError(
            f"Checkpoint {path} was trained on other {config.backbone} weights than {pretrained or config.pretrained} "
            f"holds ({len(differ)} weights differ, e.g. {differ[0]}): its prompts only fit the weights they were "
            f"learned on. Point --pretrained at those ({config.pretrained}, or a copy of them).")
    apply_learned_state(encoder, tensors, source=f"Checkpoint {path}")
    expected = info.get("fingerprint")
    if expected and expected not in (encoder.fingerprint(), legacy and encoder.fingerprint(record_activation=False)):
        raise CheckpointError(f"Checkpoint {path} fails its fingerprint check (corrupt or edited).")
    return encoder


def named_device(device: str | torch.device | None) -> torch.device | None:
    """The device ``device`` names (``cpu``, ``cuda``, ``cuda:N``), or None for ``auto`` (also None or empty: an
    SBIR_DEVICE set blank); a ValueError for anything else. Whether CUDA is there is not asked."""
    if device is None or str(device).strip() in ("auto", ""):
        return None
    try:
        named = torch.device(device)
    except (RuntimeError, TypeError) as error:  # "tpu", "gpu", "cuda:x": a usage error, not a traceback
        raise ValueError(f"--device {device!r} is not a device: use auto, cpu, cuda or cuda:N.") from error
    if named.type not in ("cpu", "cuda"):  # meta, mps, xla: torch names them, nothing here runs there
        raise ValueError(f"--device {device!r} is not supported: use auto, cpu, cuda or cuda:N.")
    return named


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None, or empty) → CUDA when present, else CPU; else the device named (:func:`named_device`)."""
    resolved = named_device(device)
    if resolved is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA device is available.")
    return resolved


def load_encoder(
    checkpoint: str | Path | None = None,
    *,
    backbone: str | None = None,
    pretrained: str | None = None,
    activation: str | None = None,
    device: str | torch.device | None = "auto",
    precision: str | None = None,
    lanes: str | int | None = 1,
) -> PromptedCLIP:
    """The entry points' one way to get an encoder: a checkpoint, or the frozen-CLIP baseline.

    ``precision`` (``auto``/``fp32``/``bf16``, :mod:`encoder.precision`) is applied after loading; None leaves the
    encoder as built (fp32 weights; CUDA autocast on). ``lanes`` (:mod:`encoder.lanes`; None:
    ``SBIR_ENCODER_LANES``, else auto) splits inference batches over replicas; 1 (the default) does not.

    ``backbone``/``pretrained``/``activation`` default to ``SBIR_BACKBONE``/``SBIR_PRETRAINED``/``SBIR_ACTIVATION``
    (activation ``auto`` or unset: what the weights were trained with).
    """
    backbone = backbone or os.environ.get(ENV_BACKBONE) or None
    pretrained = pretrained or os.environ.get(ENV_PRETRAINED) or None
    activation = env_activation() if activation in (None, "auto") else activation
    device = resolve_device(device)
    if checkpoint:
        encoder = load_checkpoint(checkpoint, backbone=backbone, pretrained=pretrained, activation=activation,
                                  device=device)
    else:
        config = EncoderConfig(
            backbone=backbone or DEFAULT_BACKBONE, pretrained=pretrained or DEFAULT_PRETRAINED, prompts=None,
            activation=activation,
        )
        encoder = build_encoder(config, device)
    if precision is not None:
        apply_precision(encoder, resolve_precision(precision, encoder.device))
    encoder.set_lanes(resolve_lanes(lanes, encoder.device))
    return encoder
