"""Inference precision: fp32, or bf16 weights and inputs where the hardware computes bf16 natively.

``auto`` on a CPU picks bf16 when the CPU has AMX (``amx_bf16``: several times fp32's speed) and, when it has only
``avx512_bf16`` (or Arm's ``bf16``) or its flags cannot be read, when a short timing probe shows bf16 matmuls clearly
faster; fp32 elsewhere, so ``auto`` never picks a path slower than fp32. bf16 means the backbone's weights and the
inputs are bf16 (``model.to(torch.bfloat16)``: oneDNN then runs AMX kernels); ``torch.autocast`` on the CPU was measured
slower than fp32 (issue 22), so it is never used. On CUDA ``auto`` keeps the encoder's autocast (bf16, or fp16
where bf16 is unsupported: fp16 stays a GPU choice).

Precision is how vectors are computed, not which encoder makes them: bf16 and fp32 vectors of one image agree to
cosine >= 0.999 (tested), so it stays out of the encoder's fingerprint and an index embedded in one precision is
searched in another (:func:`precision_note` says so once).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import PrecisionError
from .workers import available_cpus

log = logging.getLogger("encoder.precision")

PRECISIONS = ("auto", "fp32", "bf16")
ENV_PRECISION = "SBIR_PRECISION"
AMX_FLAG = "amx_bf16"
AVX512_BF16_FLAG = "avx512_bf16"
ARM_BF16_FLAG = "bf16"  # Arm's BFDOT/BFMMLA (Graviton 3+, Neoverse V1/V2): a dot product, like avx512_bf16
# Native bf16 arithmetic without AMX's tiles: bf16 may or may not beat fp32 there, so a timing probe decides.
PROBED_FLAGS = (AVX512_BF16_FLAG, ARM_BF16_FLAG)
# bf16 must beat fp32 by this factor in the probe to be picked: a margin for timing noise, so that `auto` never
# lands on a path that is in fact slower.
PROBE_MIN_SPEEDUP = 1.2
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class PrecisionChoice:
    """What runs (``fp32``, ``bf16``, or on CUDA ``bf16-autocast``/``fp16-autocast``), what was asked, and why."""

    precision: str
    requested: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"precision": self.precision, "requested": self.requested, "reason": self.reason}


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str] | None:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``), or None where they cannot be read (another OS)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / ARM spelling
            return frozenset(value.split())
    return None


def native_bf16_flags(flags: frozenset[str] | None) -> list[str]:
    """The flags among ``flags`` that mean the CPU computes bf16 natively (for logs and benchmarks)."""
    return sorted((flags or frozenset()) & {AMX_FLAG, AVX512_BF16_FLAG, "amx_tile", "amx_int8", "bf16"})


def cpu_description(cpuinfo: Path = CPUINFO) -> dict:
    """The CPU for benchmark reports: model name, cores, native bf16 flags (empty where unknown)."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        model = next((line.partition(":")[2].strip() for line in cpuinfo.read_text(errors="replace").splitlines()
                      if line.startswith("model name")), model)
    return {"model": model, "cores": available_cpus(), "bf16_flags": native_bf16_flags(cpu_flags(cpuinfo))}


def probe_bf16_speedup(size: int = 384, reps: int = 5) -> float:
    """fp32 time ÷ bf16 time of a transformer-sized matmul on this CPU (interleaved medians; ~50 ms)."""
    a = torch.randn(size, size * 2)
    b = torch.randn(size * 2, size * 2)
    pairs = {torch.float32: (a, b), torch.bfloat16: (a.bfloat16(), b.bfloat16())}
    times: dict[torch.dtype, list[float]] = {dtype: [] for dtype in pairs}
    with torch.inference_mode():
        for rep in range(reps + 1):
            for dtype, (x, y) in pairs.items():
                started = time.perf_counter()
                torch.mm(x, y)
                if rep:  # the first round warms oneDNN's kernels up
                    times[dtype].append(time.perf_counter() - started)
    return statistics.median(times[torch.float32]) / statistics.median(times[torch.bfloat16])


def choose_cpu_precision(flags: frozenset[str] | None,
                         probe: Callable[[], float] = probe_bf16_speedup) -> tuple[str, str]:
    """``auto`` on a CPU: (precision, reason). AMX decides alone; ``avx512_bf16``, Arm's ``bf16`` or unknown flags
    ask ``probe``."""
    if flags is not None and AMX_FLAG in flags:
        return "bf16", f"the CPU has {AMX_FLAG} (AMX)"
    native = [flag for flag in PROBED_FLAGS if flag in (flags or ())]
    if flags is not None and not native:
        return "fp32", "the CPU has no native bf16 (no amx_bf16, avx512_bf16 or Arm bf16)"
    what = f"the CPU has {native[0]} but no AMX" if flags is not None else "the CPU's flags are unknown"
    speedup = probe()
    if speedup >= PROBE_MIN_SPEEDUP:
        return "bf16", f"{what}; a timing probe found bf16 {speedup:.2f}x fp32"
    return "fp32", f"{what}; a timing probe found bf16 only {speedup:.2f}x fp32 (< {PROBE_MIN_SPEEDUP})"


def resolve_precision(requested: str | None, device: torch.device | str, *,
                      flags: frozenset[str] | None | str = "read",
                      probe: Callable[[], float] = probe_bf16_speedup) -> PrecisionChoice:
    """The precision to run for ``requested`` (None: ``SBIR_PRECISION``, else auto) on ``device``.

    ``flags`` defaults to this CPU's; tests pass their own (and a ``probe``) to force either branch."""
    requested = (requested or os.environ.get(ENV_PRECISION) or "auto").strip().lower()
    if requested not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    device = torch.device(device)
    if requested != "auto":
        return PrecisionChoice(requested, requested, "asked for")
    if device.type == "cuda":
        autocast = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return PrecisionChoice(f"{autocast}-autocast", requested, "CUDA: the encoder's autocast")
    if device.type != "cpu":
        return PrecisionChoice("fp32", requested, f"no bf16 choice made for device {device.type}")
    precision, reason = choose_cpu_precision(cpu_flags() if flags == "read" else flags, probe)
    return PrecisionChoice(precision, requested, reason)


def apply_precision(encoder, choice: PrecisionChoice) -> PrecisionChoice:
    """Run ``encoder`` (a :class:`~encoder.model.PromptedCLIP`) at ``choice``; logs what was chosen and why.

    Only the frozen backbone is cast: the learned tensors (prompts, LayerNorm copies) stay fp32, so the fingerprint
    and a checkpoint saved from this encoder do not change; they are cast per call (cached) to the backbone's dtype.
    A bf16 backbone cannot go back to fp32 exactly: load the encoder again for that."""
    current = encoder.weights_dtype
    if choice.precision == "bf16":
        encoder.clip.to(torch.bfloat16)
    elif current != torch.float32:
        raise PrecisionError(f"the encoder's backbone is already {current}; load it again to run it in fp32")
    encoder.amp = choice.precision.endswith("-autocast")
    encoder.precision_choice = choice
    if encoder.lanes > 1:  # replicas share the parameters, not the buffers the cast replaced: make them again
        encoder.set_lanes(encoder.lanes)
    log.info("encoder precision %s (%s: %s)", encoder.precision, choice.requested, choice.reason)
    return choice


def precision_note(recorded: str | None, running: str, newcomers: str = "queries") -> str | None:
    """A line for the log when vectors recorded at ``recorded`` precision meet a ``running`` encoder's, else None.

    They mix fine (cosine >= 0.999, well inside the distances that separate neighbours); a version written before
    precision was recorded was embedded in fp32 or under CUDA autocast."""
    recorded = recorded or "fp32 (not recorded)"
    if recorded.split()[0] == running:
        return None
    return (f"the index's vectors were embedded in {recorded}, {newcomers} are embedded in {running}: they agree to "
            "cosine >= 0.999, so search works; rebuild the index to have one precision throughout")


def add_precision_arg(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, default: str = "auto") -> None:
    """``--precision`` for every entry point (default ``SBIR_PRECISION``, else ``default``)."""
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=os.environ.get(ENV_PRECISION) or default,
        help=f"inference precision (env {ENV_PRECISION}, default {default}): auto = bf16 weights and inputs on a CPU "
        "with native bf16 (AMX, or avx512_bf16 confirmed by a timing probe), the autocast on CUDA, fp32 elsewhere")
