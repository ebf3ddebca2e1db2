"""Lanes: one inference batch split over replicas of the encoder that run at the same time, each in its own thread
with its share of torch's threads.

Why: on a CPU, torch runs each operation in one OpenMP team of all its threads, which meet at a barrier after every
operation. In bf16 on AMX the matmuls are so fast that the operations between them (attention's per-head bmm and
softmax, LayerNorm, GELU, adds) are a quarter of the forward, and a 2-thread team got only 1.55x from its second
core (fp32: 1.96x). Replicas with one thread each, on half a batch each, never wait for each other, and work that
preempts one of them (decoding uploads, the event loop) no longer stalls the other at every barrier. ViT-B-32,
batch 14, 2-core Sapphire Rapids: bf16 86-90 img/s as one team, 116-118 img/s as two lanes of 7; fp32 28.5 vs 29.5.

A replica shares every tensor with the encoder (`PromptedCLIP.replica`): lanes cost threads and activations, not
weights. A batch of one, or a thread budget of one, runs as before in the calling thread with all its threads.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import torch

from .errors import LanesError

log = logging.getLogger("encoder.lanes")


class Replicable(Protocol):
    """What lanes need of an encoder (`encoder.model.PromptedCLIP`; named here without importing it: no cycle)."""

    def encode_here(self, images: torch.Tensor, modality: str) -> torch.Tensor: ...

    def replica(self) -> Replicable: ...


ENV_LANES = "SBIR_ENCODER_LANES"
AUTO_CPU_LANES = 2  # measured on 2 cores only (docs/benchmarks.md); more cores get 2 teams of half of them each


def resolve_lanes(requested: str | int | None, device: torch.device | str) -> int:
    """How many lanes for ``requested`` (None: ``SBIR_ENCODER_LANES``, else ``auto``) on ``device``.

    ``auto``: 1 on a GPU (one device runs one batch at a time anyway), else 2 where torch has 2 threads or more.
    A count above torch's threads is capped at them (logged)."""
    text = str(requested if requested is not None else os.environ.get(ENV_LANES) or "auto").strip().lower()
    if text == "auto":
        if torch.device(device).type != "cpu":
            return 1
        return max(1, min(AUTO_CPU_LANES, torch.get_num_threads()))
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise LanesError(f"encoder lanes must be 'auto' or a positive integer, got {text!r}")
    budget = torch.get_num_threads()
    if count > budget:  # a lane needs a thread of its own: replicas beyond the budget would never run
        log.warning("encoder lanes %d capped at torch's %d thread(s)", count, budget)
        return budget
    return count


def add_lanes_arg(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--encoder-lanes`` for the entry points that embed (default ``SBIR_ENCODER_LANES``, else auto)."""
    parser.add_argument(
        "--encoder-lanes", default=os.environ.get(ENV_LANES) or "auto", metavar="auto|N",
        help=f"split each CPU batch over N encoder replicas with a share of torch's threads each (env {ENV_LANES}; "
        f"auto: {AUTO_CPU_LANES} on a CPU, 1 on a GPU); 1 = one team of all threads")


def _in_lane(encode, images: torch.Tensor, modality: str, threads: int) -> torch.Tensor:
    """``encode`` with ``threads`` torch threads in this (lane) thread; OpenMP's thread count is per thread."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return encode(images, modality)


class EncoderLanes:
    """``count`` replicas of one encoder and the threads that run all but the first (the caller runs that)."""

    def __init__(self, encoder: Replicable, count: int) -> None:
        if count < 2:
            raise LanesError(f"lanes need at least 2 replicas, got {count}")
        self.count = count
        self._replicas = [encoder] + [encoder.replica() for _ in range(count - 1)]
        self._pool = ThreadPoolExecutor(max_workers=count - 1, thread_name_prefix="encoder-lane")

    def encode(self, images: torch.Tensor, modality: str) -> torch.Tensor:
        """``images`` split in ``count`` near-equal parts (fewer for a small batch or a small thread budget), encoded
        at once, concatenated in order."""
        budget = torch.get_num_threads()
        used = min(self.count, len(images), budget)
        if used < 2:
            return self._replicas[0].encode_here(images, modality)
        threads = budget // used
        parts = torch.tensor_split(images, used)
        futures = [self._pool.submit(_in_lane, replica.encode_here, part, modality, threads)
                   for replica, part in zip(self._replicas[1:used], parts[1:], strict=True)]
        try:
            first = _in_lane(self._replicas[0].encode_here, parts[0], modality, threads)
        finally:
            concurrent.futures.wait(futures)  # no lane may outlive this call, even when the caller's part failed
            torch.set_num_threads(budget)  # the caller's own count, and torch's default for threads not yet started
        return torch.cat([first, *(future.result() for future in futures)])

    def close(self) -> None:
        self._pool.shutdown(wait=True)
