"""The prompted, frozen CLIP image encoder shared by training, index_builder and app.

Prompts enter open_clip's ``VisionTransformer`` through narrow seams (method.md): a forward
pre-hook on ``ln_pre`` appends the shallow prompts to the token sequence after the positional
embedding; for deep prompts, pre-hooks on every later residual block replace the previous layer's
prompt outputs with fresh ones. LayerNorm affine parameters are trained as copies applied with
``torch.func.functional_call``, so the backbone's own tensors are never modified and one backbone
can carry a separate LayerNorm set per modality.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .backbone import Backbone, build_backbone, trained_activation
from .config import EncoderConfig
from .lanes import EncoderLanes
from .precision import PrecisionChoice
from .preprocess import Preprocessor

Modality = Literal["sketch", "photo"]
MODALITIES: tuple[Modality, ...] = ("sketch", "photo")
SHARED = "shared"
TEXT_TEMPLATE = "a photo of a {}"
# How fresh prompts are drawn. "normal": N(0, 1), as the official code (torch.randn); "scaled": N(0, 1/width), the
# scale of CLIP's own embeddings. The prompts pass through ln_pre, so the forward is the same, but Adam's steps are
# ~width^0.5 (28x for ViT-B/32) larger relative to a scaled prompt: the two train differently at one learning rate.
PROMPT_INITS = ("normal", "scaled")


def class_text(category: str) -> str:
    """A class name (folder name or typed words) → the words of the text prompt: ``teddy_bear`` → ``teddy bear``."""
    return re.sub(r"\s+", " ", category.replace("_", " ")).strip()


def _escape(name: str) -> str:
    return name.replace(".", "__")


def _unescape(name: str) -> str:
    return name.replace("__", ".")


SAMPLE_VALUES = 4  # values from each end of every backbone weight in PromptedCLIP.backbone_sample
SAMPLE_RTOL = 1e-2  # a bf16 copy moves a value by 0.4 % at most, another training run by far more


SAMPLE_NAMES = 16  # backbone weights an index manifest records (compact_sample): enough to tell weights apart


def other_weights(recorded: object, current: dict[str, list[float]]) -> list[str]:
    """The weights (by name) whose recorded sample values differ from ``current``'s beyond a bf16 rounding; names
    only one side has are not compared (a library version may name them otherwise). A record that is not a mapping
    of lists of finite numbers raises ValueError (a damaged record, not other weights)."""
    if not isinstance(recorded, dict):
        raise ValueError("it is not a mapping of weight names to values")
    differ = []
    for name in sorted(set(recorded) & set(current)):
        a, b = _sample_values(name, recorded[name]), np.asarray(current[name], dtype=np.float64)
        if a.shape != b.shape or not np.allclose(a, b, rtol=SAMPLE_RTOL, atol=1e-6):
            differ.append(name)
    return differ


def _sample_values(name: str, values: object) -> np.ndarray:
    if not isinstance(values, list) or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                               for v in values):
        raise ValueError(f"the recorded sample of {name} is not a list of numbers")
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():  # weights are finite: NaN here is a damaged record, not other weights
        raise ValueError(f"the recorded sample of {name} holds NaN or infinite numbers")
    return array


def compact_sample(sample: dict[str, list[float]], names: int = SAMPLE_NAMES) -> dict[str, list[float]]:
    """``names`` weights of a backbone sample, spread evenly over its sorted names (the same ones for the same
    architecture): what an index manifest records of the weights its vectors came from."""
    return {name: sample[name] for name in _spread(sorted(sample), names)}


def _spread(ordered: list[str], count: int) -> list[str]:
    """``count`` of ``ordered``, evenly spaced, first and last included (all of them when there are fewer)."""
    if len(ordered) <= count:
        return ordered
    return [ordered[i] for i in sorted({round(i * (len(ordered) - 1) / (count - 1)) for i in range(count)})]


class PromptedCLIP(nn.Module):
    """Frozen open_clip + learned visual prompts (+ LayerNorm affines) → L2-normalised embeddings."""

    def __init__(self, config: EncoderConfig, backbone: Backbone, *, prompt_init: str = "normal") -> None:
        super().__init__()
        if prompt_init not in PROMPT_INITS:
            raise ValueError(f"prompt_init must be one of {', '.join(PROMPT_INITS)}, got {prompt_init!r}")
        if config.activation not in (None, backbone.activation):
            raise ValueError(f"config asks for {config.activation}, but the backbone computes {backbone.activation}")
        self.config = replace(config, activation=backbone.activation)
        self.clip = backbone.model
        self.clip.requires_grad_(False)
        self.tokenizer = backbone.tokenizer
        self.random_weights = backbone.random_weights
        self.weights_source = backbone.source
        visual = self.clip.visual
        if not hasattr(visual, "ln_pre") or not hasattr(visual, "transformer"):
            raise ValueError(f"Backbone {config.backbone} has no ViT image tower; prompts need one.")
        self.width = visual.conv1.out_channels
        self.n_layers = len(visual.transformer.resblocks)
        image_size = visual.image_size
        self.image_size = int(image_size[0] if isinstance(image_size, tuple | list) else image_size)
        self.embed_dim = int(visual.output_dim)
        self.preprocess = Preprocessor(self.image_size, backbone.preprocess_val, backbone.preprocess_train,
                                       sketch_framing=config.sketch_framing)

        self.prompts = nn.ParameterDict()
        self.layer_norms = nn.ModuleDict()
        self.backbone_tensors = nn.ParameterDict()  # trainable="official": copies, shared by both modalities
        self._lock = threading.RLock()  # forwards read per-call prompt state set on self
        self._active_prompt: torch.Tensor | None = None
        self._prompt_hooks: list[tuple[str, int]] = []  # (visual submodule, hook id): what `replica` re-binds
        self._lanes: EncoderLanes | None = None  # set_lanes: batches split over replicas on a CPU
        # bf16 (fp16) autocast on CUDA: indexing, serving and training; evaluation turns it off (fp32 metrics)
        self.amp = True
        # how `encoder.precision.apply_precision` set this encoder up (None: as built, fp32 weights)
        self.precision_choice: PrecisionChoice | None = None
        self._cast_cache: dict[str, tuple[int, torch.Tensor]] = {}  # learned tensors in a bf16 backbone's dtype
        prompt_cfg = config.prompts
        if prompt_cfg is not None:
            depth = self.n_layers if prompt_cfg.depth == "deep" else 1
            groups = [SHARED] if prompt_cfg.shared else list(MODALITIES)
            scale = self.width**-0.5 if prompt_init == "scaled" else 1.0
            for group in groups:
                self.prompts[group] = nn.Parameter(torch.randn(depth, prompt_cfg.n_prompts, self.width) * scale)
            if prompt_cfg.tune_ln:
                ln_groups = list(MODALITIES) if prompt_cfg.separate_ln else [SHARED]
                for group in ln_groups:
                    self.layer_norms[group] = nn.ParameterDict(
                        {_escape(n): nn.Parameter(p.detach().clone().float()) for n, p in self._visual_ln_params()}
                    )
            if prompt_cfg.trainable == "official":
                for name, param in self._official_params():
                    self.backbone_tensors[_escape(name)] = nn.Parameter(param.detach().clone().float())
            self._install_hooks(prompt_cfg.depth, prompt_cfg.n_prompts)

    # ----------------------------------------------------------------- trainable state
    def _visual_ln_params(self) -> Iterator[tuple[str, nn.Parameter]]:
        for module_name, module in self.clip.visual.named_modules():
            if isinstance(module, nn.LayerNorm) and module.elementwise_affine:
                for param_name, param in module.named_parameters(recurse=False):
                    yield f"{module_name}.{param_name}", param

    def _official_params(self) -> Iterator[tuple[str, nn.Parameter]]:
        """What the official code's freezing left trainable besides LayerNorms: it froze ``.weight`` and
        ``.bias`` of every other module, so QKV in-projections, class/positional embeddings and ``proj`` stayed."""
        layer_norms = {name for name, _ in self._visual_ln_params()}
        for name, param in self.clip.visual.named_parameters():
            if name.rsplit(".", 1)[-1] not in ("weight", "bias") and name not in layer_norms:
                yield name, param

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """Exactly the learned tensors: prompts, (copies of) the visual LayerNorm affines and, with
        ``trainable="official"``, (copies of) the official code's extra tensors."""
        return {name: p for name, p in self.named_parameters() if not name.startswith("clip.")}

    def param_groups(self, prompt_lr: float, ln_lr: float, weight_decay: float = 0.0) -> list[dict]:
        """Optimiser groups: prompts and LayerNorms get their own learning rates."""
        groups = [
            {
                "name": "prompts",
                "params": list(self.prompts.parameters()),
                "lr": prompt_lr,
                "weight_decay": weight_decay,
            },
            {"name": "layer_norms", "params": list(self.layer_norms.parameters()), "lr": ln_lr, "weight_decay": 0.0},
            # the official code trained these at its LayerNorm rate
            {"name": "backbone", "params": list(self.backbone_tensors.parameters()), "lr": ln_lr, "weight_decay": 0.0},
        ]
        return [g for g in groups if g["params"]]

    def learned_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().cpu().contiguous() for name, p in self.trainable_parameters().items()}

    def weights_digest(self) -> str:
        """A hash of the sampled backbone weights that a bf16 copy of them shares (each value is taken to bf16
        first, as casting the model does): it changes when the weights do, not with the precision they run in."""
        sampled = self._sampled_weights()
        digest = hashlib.sha256()
        for name in _spread(sorted(sampled), SAMPLE_NAMES):
            digest.update(name.encode())
            digest.update(sampled[name].to(torch.bfloat16).float().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    def _sampled_weights(self) -> dict[str, torch.Tensor]:
        """The first and last ``SAMPLE_VALUES`` of every floating backbone parameter (buffers and their names move
        between library versions), in the backbone's dtype."""
        sampled = {}
        for name, tensor in self.clip.named_parameters():
            flat = tensor.detach().reshape(-1)
            if flat.is_floating_point() and len(flat):
                sampled[name] = torch.cat([flat[:SAMPLE_VALUES], flat[-SAMPLE_VALUES:]])
        return sampled

    def backbone_sample(self) -> dict[str, list[float]]:
        """A few values of every backbone weight (the first and last ``SAMPLE_VALUES``): what a checkpoint records
        of the weights it was trained on, so that its prompts are not applied to other weights read under the same
        architecture (another tag, another file), which the fingerprint cannot see: it names where the weights come
        from, not what they are. Values, not a hash, so that a bf16 or fp16 copy of the same weights compares equal
        (:func:`other_weights`); parameters only (buffers and their names move between library versions)."""
        return {name: [float(f"{v:.6g}") for v in values.float().cpu().tolist()]
                for name, values in self._sampled_weights().items()}

    def fingerprint(self, *, record_activation: bool = True) -> str:
        """Identity of the encoder: config (minus where weights are read from) + learned tensors.

        GELU was the implicit activation of every config written before the field existed, so it stays out of the
        identity: those checkpoints and indexes keep their fingerprints, while a QuickGELU encoder gets a new one.
        ``record_activation=False`` gives the fingerprint such an older record was written with.
        """
        digest = hashlib.sha256()
        identity = self.config.to_dict()
        if identity.get("activation") == "gelu" or not record_activation:
            identity.pop("activation", None)
        digest.update(repr(sorted(identity.items())).encode())
        for name, tensor in sorted(self.learned_state().items()):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(tensor.float().numpy()).tobytes())
        return digest.hexdigest()[:32]

    # ----------------------------------------------------------------- prompt injection
    def _install_hooks(self, depth: str, n_prompts: int) -> None:
        visual = self.clip.visual
        batch_first = getattr(visual.transformer, "batch_first", True)

        # With no active prompt (the backbone called directly, outside encode) the hooks do nothing.
        def append_prompts(_module: nn.Module, args: tuple) -> tuple | None:
            if self._active_prompt is None:
                return None
            tokens = args[0]  # [B, 1 + grid², width], positional embedding already added
            prompt = self._active_prompt[0].to(tokens.dtype)
            prompt = prompt.unsqueeze(0).expand(tokens.shape[0], -1, -1)
            return (torch.cat([tokens, prompt], dim=1), *args[1:])

        self._prompt_hooks.append(("ln_pre", visual.ln_pre.register_forward_pre_hook(append_prompts).id))
        if depth == "deep":
            for layer, block in enumerate(visual.transformer.resblocks):
                if layer == 0:
                    continue

                def replace_prompts(_module: nn.Module, args: tuple, layer: int = layer) -> tuple | None:
                    if self._active_prompt is None:
                        return None
                    tokens = args[0]
                    prompt = self._active_prompt[layer].to(tokens.dtype)
                    if batch_first:  # [B, L, W]
                        fresh = prompt.unsqueeze(0).expand(tokens.shape[0], -1, -1)
                        tokens = torch.cat([tokens[:, :-n_prompts], fresh], dim=1)
                    else:  # [L, B, W]
                        fresh = prompt.unsqueeze(1).expand(-1, tokens.shape[1], -1)
                        tokens = torch.cat([tokens[:-n_prompts], fresh], dim=0)
                    return (tokens, *args[1:])

                handle = block.register_forward_pre_hook(replace_prompts)
                self._prompt_hooks.append((f"transformer.resblocks.{layer}", handle.id))

    def _group(self, table: nn.ModuleDict | nn.ParameterDict, modality: Modality):
        if modality in table:
            return table[modality]
        return table[SHARED] if SHARED in table else None  # noqa: SIM401 - ModuleDict has no .get

    # ----------------------------------------------------------------- encoding
    @property
    def device(self) -> torch.device:
        return next(self.clip.parameters()).device

    @property
    def weights_dtype(self) -> torch.dtype:
        return self.clip.visual.conv1.weight.dtype

    @property
    def precision(self) -> str:
        """What the forwards compute in: ``bf16`` (weights and inputs), ``bf16-autocast``/``fp16-autocast``
        (CUDA) or ``fp32``."""
        if self.weights_dtype == torch.bfloat16:
            return "bf16"
        if self.device.type == "cuda" and self.amp:
            return f"{'bf16' if torch.cuda.is_bf16_supported() else 'fp16'}-autocast"
        return "fp32"

    def _in_dtype(self, name: str, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A learned fp32 tensor in the backbone's dtype, cast once per change of the tensor (not per call)."""
        if tensor.dtype == dtype:
            return tensor
        if self.training:  # gradients must reach the fp32 tensor
            return tensor.to(dtype)
        cached = self._cast_cache.get(name)
        if cached is None or cached[0] != tensor._version:
            cached = (tensor._version, tensor.detach().to(dtype))
            self._cast_cache[name] = cached
        return cached[1]

    def _autocast(self, device: torch.device):
        if device.type == "cuda" and self.amp:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast(device_type="cuda", dtype=dtype)
        return contextlib.nullcontext()

    def encode(self, images: torch.Tensor, modality: Modality) -> torch.Tensor:
        """Image batch ``[B, 3, H, W]`` → L2-normalised float32 embeddings ``[B, D]``."""
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        lanes = self._lanes
        if lanes is not None and not self.training and len(images) > 1:
            with self._lock:  # one split batch at a time: the replicas are this encoder's
                return lanes.encode(images, modality)
        return self.encode_here(images, modality)

    def encode_here(self, images: torch.Tensor, modality: Modality) -> torch.Tensor:
        """`encode` in the calling thread, never split over lanes."""
        device, dtype = self.device, self.weights_dtype
        images = images.to(device, dtype=dtype, non_blocking=True)
        grad_mode = contextlib.nullcontext() if self.training else torch.inference_mode()
        with grad_mode, self._autocast(device), self._lock:
            visual = self.clip.visual
            self._active_prompt = self._group(self.prompts, modality)
            try:
                layer_norms = self._group(self.layer_norms, modality)
                learned = [(f"ln/{modality}/{name}", name, p) for name, p in (layer_norms or {}).items()]
                learned += [(f"backbone/{name}", name, p) for name, p in self.backbone_tensors.items()]
                overrides = {_unescape(name): self._in_dtype(key, p, dtype) for key, name, p in learned}
                features = functional_call(visual, overrides, (images,), strict=False) if overrides else visual(images)
            finally:
                self._active_prompt = None
            if isinstance(features, tuple):  # output_tokens=True backbones
                features = features[0]
            return F.normalize(features.float(), dim=-1)

    # ----------------------------------------------------------------- lanes (CPU inference)
    @property
    def lanes(self) -> int:
        return self._lanes.count if self._lanes is not None else 1

    def set_lanes(self, count: int) -> None:
        """Split each inference batch over ``count`` replicas, each in its own thread with its share of torch's
        threads (``encoder.lanes``); 1 turns lanes off. Call after `apply_precision` and moving the encoder."""
        if self._lanes is not None:
            self._lanes.close()
        self._lanes = EncoderLanes(self, count) if count > 1 else None

    def replica(self) -> PromptedCLIP:
        """Another forward path over this encoder's tensors (shared, not copied): its own modules, prompt hooks,
        lock and cast cache, so that it encodes in another thread at the same time as this one. Changes to the
        shared tensors made in place (``load_state_dict``) reach it; ``.to()`` and `apply_precision` do not."""
        memo: dict[int, object] = {id(t): t for t in itertools.chain(self.parameters(), self.buffers())}
        memo.update({id(self._lock): threading.RLock(), id(self._cast_cache): {}, id(self._prompt_hooks): [],
                     id(self._lanes): None, id(self.preprocess): self.preprocess, id(self.tokenizer): self.tokenizer})
        twin = copy.deepcopy(self, memo)
        visual = twin.clip.visual
        for module_name, hook_id in self._prompt_hooks:  # the copies still call back into this encoder's state
            del visual.get_submodule(module_name)._forward_pre_hooks[hook_id]
        if self.config.prompts is not None:
            twin._install_hooks(self.config.prompts.depth, self.config.prompts.n_prompts)
        return twin

    def encode_sketch(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images, "sketch")

    def encode_photo(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images, "photo")

    @torch.no_grad()
    def text_features(self, class_names: Sequence[str], template: str = TEXT_TEMPLATE) -> torch.Tensor:
        """Frozen text-tower features ``[C, D]`` (normalised) for "a photo of a {name}"."""
        tokens = self.tokenizer([template.format(name) for name in class_names]).to(self.device)
        with self._autocast(self.device):
            features = self.clip.encode_text(tokens)
        return F.normalize(features.float(), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Free text (queries) → ``[B, D]`` through the frozen text tower, with the prompt the training uses."""
        return self.text_features([class_text(text) for text in texts])

    @property
    def has_text_tower(self) -> bool:
        return self.tokenizer is not None and callable(getattr(self.clip, "encode_text", None))

    @property
    def logit_scale(self) -> float:
        return float(self.clip.logit_scale.exp().item())

    def describe(self) -> dict:
        """A JSON-friendly summary for logs, CLIs and the service's /info."""
        return {
            "config": self.config.to_dict(),
            "fingerprint": self.fingerprint(),
            "embed_dim": self.embed_dim,
            "image_size": self.image_size,
            "weights_source": self.weights_source,
            "random_weights": self.random_weights,
            "baseline": self.config.is_baseline,
            "device": str(self.device),
            "precision": self.precision,
            "precision_reason": self.precision_choice.reason if self.precision_choice else None,
            "lanes": self.lanes,
        }


def build_encoder(
    config: EncoderConfig,
    device: str | torch.device = "cpu",
    *,
    weights_source: str | None = None,
    prompt_init: str = "normal",
) -> PromptedCLIP:
    """A fresh encoder (random prompts, LayerNorms copied from the backbone) on ``device``.

    ``weights_source`` reads the backbone weights from elsewhere (a local copy of the same
    weights) while ``config.pretrained`` keeps naming their identity, and so the activation they need.
    """
    activation = config.activation or trained_activation(config.backbone, config.pretrained.strip())
    backbone = build_backbone(config.backbone, weights_source or config.pretrained, activation)
    encoder = PromptedCLIP(config, backbone, prompt_init=prompt_init)
    return encoder.to(device).eval()
