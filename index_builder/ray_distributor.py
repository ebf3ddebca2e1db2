"""The Ray Data distributor: the reader in Ray tasks, the model in an actor pool, the writer on the driver.

The driver turns the job's paths into a Dataset; ``map_batches`` runs :func:`read_photo` in tasks (any
node; photos are read by path, so every node needs the gallery at the same path) and
:class:`EncoderActor` in a fixed pool (one encoder per actor, one GPU each on GPU clusters, a fraction of a
CPU on CPU-only ones so that read tasks always find room). Each actor rebuilds the encoder once from the
config and tensors the driver put in the object store: workers need the code, not the checkpoint or
the backbone weights. Outcomes stream back to the driver's writer, batch by batch, into staging.

A crashed actor (or a lost node) is restarted and its batch retried by Ray Data (its default: actors restart
and retry system failures without limit; the reader never raises, so application errors do not occur). The
writer drops any outcome it already has, so a retry cannot duplicate a photo.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from encoder import EncoderConfig, Preprocessor, PromptedCLIP, build_encoder
from encoder.precision import PRECISIONS, PrecisionChoice, apply_precision, resolve_precision
from encoder.workers import available_cpus
from photo_index.errors import BuildError

from .embedding import EmbedJob, Outcome, StagingWriter, embed_pixels, read_photo
from .sources import Skipped

ENV_ADDRESS = "SBIR_RAY_ADDRESS"
ENV_TEMP_DIR = "SBIR_RAY_TMPDIR"
# Ray's Unix sockets live under its temp dir and must stay under ~107 bytes: keep the default short.
DEFAULT_TEMP_DIR = "/tmp/sbir-ray"
# CPUs a read task and an actor reserve on CPU-only clusters: fractional, so that even a 1-CPU node runs an actor
# and a read task at once (an actor holding every CPU starves the reads that feed it, and the run hangs); unequal,
# so that Ray Data does not fuse reading into the actors. Reads are the CPU-heavy side here.
CPU_ONLY_SHARES = (0.5, 0.25)


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - the `data` extra, not only the core
    except ImportError as error:
        raise BuildError("--distributor ray needs Ray Data: pip install 'sketch-search[distributed]' "
                         f"(or 'ray[data]'): {error}") from None
    return ray


def connect(address: str | None = None, temp_dir: str | None = None) -> bool:
    """Join the cluster at ``address`` (else ``SBIR_RAY_ADDRESS``; else start a local one, in ``temp_dir``);
    False when this process was already connected (the caller's connection is then used and kept)."""
    address = address or os.environ.get(ENV_ADDRESS) or None
    # Read when ray is imported: no usage reports from galleries' builds (opt in with RAY_USAGE_STATS_ENABLED=1);
    # a cluster of this machine only binds loopback.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if address:
        _check_reachable(address)  # also when already connected: the address asked for must answer
    ray = _ray()
    if ray.is_initialized():
        return False
    options = {"logging_level": logging.WARNING, "include_dashboard": False}
    try:
        with _own_signal_handlers():
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(address="local", _temp_dir=temp_dir or os.environ.get(ENV_TEMP_DIR) or DEFAULT_TEMP_DIR,
                         **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise BuildError(f"Cannot connect to the Ray cluster at {address or 'a new local cluster'}: {error}") from None
    return True


@contextlib.contextmanager
def _own_signal_handlers():
    """Keep this process's SIGINT and SIGTERM handlers across ``ray.init``, which installs its own (and its C++ core
    a crash handler): a SIGTERM then aborted the build (exit 134, a stack dump) instead of unwinding it (143)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread sets handlers
        yield
        return
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            if handler is not None:  # None: set outside Python, nothing to put back
                signal.signal(signum, handler)


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a ``host:port`` nobody answers on within seconds: ray.init retries it for minutes, saying only
    "Failed to connect to GCS". Other forms (``auto``, ``ray://``) are Ray's to resolve."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not host or "/" in host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except (OSError, ValueError, OverflowError) as error:
        raise BuildError(f"Cannot reach the Ray cluster at {address} ({error}); is its head node running, "
                         "and is the address host:port of its GCS (e.g. 10.0.0.5:6379)?") from None
    if not _speaks_grpc(host, int(port), timeout_s):
        raise BuildError(f"Something answers at {address}, but not a Ray cluster's GCS (no gRPC there: a dashboard "
                         "or another server?); the address is host:port of the head's GCS (e.g. 10.0.0.5:6379).")


def _speaks_grpc(host: str, port: int, timeout_s: float) -> bool:
    """Whether a gRPC (HTTP/2) connection opens to ``host:port`` within ``timeout_s``: the GCS speaks it, a dashboard
    or web server does not, and ray.init retried such an address for minutes. True when it cannot be told (no
    grpc, or TLS, which a plain probe cannot open)."""
    if os.environ.get("RAY_USE_TLS", "").lower() in ("1", "true"):
        return True
    try:
        import grpc
    except ImportError:
        return True
    # No HTTP proxy, as Ray's own channels (an http_proxy variable would make a live GCS look like no GCS)
    channel = grpc.insecure_channel(f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                                    options=[("grpc.enable_http_proxy", 0)])
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()


def read_batch(batch: dict[str, np.ndarray], preprocess: Preprocessor) -> dict[str, np.ndarray]:
    """The reader step over a Ray batch of (index, path, known) rows (known: comma-separated hashes); pixels are
    zeros where nothing decoded."""
    decoded = [read_photo(int(index), str(path), preprocess, tuple(filter(None, str(known).split(","))))
               for index, path, known in zip(batch["index"], batch["path"], batch["known"], strict=True)]
    size = preprocess.image_size
    dtype = next((item.pixels.dtype for item in decoded if item.pixels is not None), np.uint8)
    pixels = np.zeros((len(decoded), 3, size, size), dtype=dtype)
    for row, item in enumerate(decoded):
        if item.pixels is not None:
            pixels[row] = item.pixels
    return {
        "index": np.array([item.index for item in decoded], dtype=np.int64),
        "sha256": np.array([item.sha256 for item in decoded], dtype=object),
        "reason": np.array([item.problem.reason if item.problem else "" for item in decoded], dtype=object),
        "detail": np.array([item.problem.detail if item.problem else "" for item in decoded], dtype=object),
        "decoded": np.array([item.pixels is not None for item in decoded], dtype=bool),
        "pixels": pixels,
    }


@dataclass(frozen=True)
class EncoderPayload:
    """What an actor needs to rebuild the driver's encoder exactly (put in the object store once)."""

    config: EncoderConfig
    state: dict[str, torch.Tensor]  # every tensor, frozen backbone included: no weights needed on workers
    fingerprint: str
    # The driver's precision: actors compute in it when no `requested` is given (a bf16 backbone's state loaded into
    # an fp32 model would otherwise run fp32 on bf16-rounded weights).
    precision: PrecisionChoice
    # A precision each actor resolves on its own device (``auto``: CUDA's autocast on a GPU, bf16 on a CPU with
    # native bf16), from the driver's fp32 state; None: the driver's.
    requested: str | None = None

    @classmethod
    def of(cls, encoder: PromptedCLIP, requested: str | None = None) -> EncoderPayload:
        if requested is not None and encoder.weights_dtype != torch.float32:
            raise BuildError(f"The driver's encoder is already {encoder.precision}: actors choosing their precision "
                             "on their own device need its fp32 weights (load it in fp32).")
        state = {name: tensor.detach().cpu() for name, tensor in encoder.state_dict().items()}
        precision = encoder.precision_choice or PrecisionChoice(encoder.precision, "as built", "the driver's encoder")
        return cls(encoder.config, state, encoder.fingerprint(), precision, requested)

    def build(self, device: str) -> PromptedCLIP:
        encoder = build_encoder(self.config, device, weights_source="none")  # shape only; the state replaces it
        encoder.load_state_dict(self.state, strict=True)
        if encoder.fingerprint() != self.fingerprint:
            raise RuntimeError(f"The encoder rebuilt on this worker has fingerprint {encoder.fingerprint()}, "
                               f"the driver's is {self.fingerprint} (different code versions?).")
        apply_precision(encoder, self.precision if self.requested is None else resolve_precision(self.requested,
                                                                                                  device))
        return encoder


class EncoderActor:
    """The model step in a Ray actor: one encoder, built once, embeds batch after batch."""

    def __init__(self, payload: list, fail_once: str | None = None, threads: int | None = None) -> None:
        import ray

        device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        if device == "cpu" and threads:  # Ray sets 1 thread for an actor of a fraction of a CPU
            torch.set_num_threads(max(1, min(threads, available_cpus())))
        self.encoder = ray.get(payload[0]).build(device)  # in a list: Ray leaves nested refs unresolved
        self.fail_once = fail_once

    def _maybe_fail(self) -> None:
        """Test hook: the first actor to claim ``fail_once`` (a file path) dies mid-batch."""
        try:
            with open(self.fail_once, "x"):
                pass
        except FileExistsError:
            return
        os._exit(1)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.fail_once:
            self._maybe_fail()
        decoded = batch["decoded"]
        vectors = np.zeros((len(decoded), self.encoder.embed_dim), dtype=np.float32)
        if decoded.any():
            vectors[decoded] = embed_pixels(self.encoder, np.ascontiguousarray(batch["pixels"][decoded]))
        return {**{name: batch[name] for name in ("index", "sha256", "reason", "detail", "decoded")},
                "vector": vectors, "precision": np.full(len(decoded), self.encoder.precision, dtype=object)}


def outcomes(batch: dict[str, np.ndarray], job: EmbedJob) -> list[Outcome]:
    """A result batch of the actor pool → outcomes for the writer."""
    found = []
    for row, index in enumerate(batch["index"].tolist()):
        reason = str(batch["reason"][row])
        problem = Skipped(job.keys[index][0], reason, str(batch["detail"][row])) if reason else None
        vector = batch["vector"][row] if batch["decoded"][row] else None
        found.append(Outcome(index, str(batch["sha256"][row]), problem, vector))
    return found


@dataclass
class RayDistributor:
    """Embed on a Ray cluster: ``address`` (else ``SBIR_RAY_ADDRESS``, else a local cluster for this run)."""

    address: str | None = None
    actors: int | None = None  # encoder actors; default one per GPU of the cluster, 1 on CPU-only clusters
    decoders: int | None = None  # most read tasks at once; default as many as the cluster's CPUs allow
    actor_device: str = "auto"  # where actors embed: auto (GPUs when the cluster has them) | cpu | cuda (needs GPUs)
    temp_dir: str | None = None  # a local cluster's temp dir (default SBIR_RAY_TMPDIR, else /tmp/sbir-ray)
    # What actors compute in (--precision): resolved by each actor on its device, so `auto` is the autocast on a GPU
    # actor whatever the driver's CPU has; None: the precision of the driver's encoder.
    precision: str | None = None
    fail_once: str | None = None  # tests: see EncoderActor._maybe_fail
    name: str = "ray"

    def __post_init__(self) -> None:
        if self.actors is not None and self.actors < 1 or self.decoders is not None and self.decoders < 1:
            raise BuildError("--ray-actors and --ray-decoders must be >= 1.")
        if self.actor_device not in ("auto", "cpu", "cuda"):
            raise BuildError(f"Ray actors run on auto, cpu or cuda, not {self.actor_device!r}.")
        if self.precision is not None:
            self.precision = self.precision.strip().lower()  # as resolve_precision reads SBIR_PRECISION
            if self.precision not in PRECISIONS:
                raise BuildError(f"Ray actors compute in {', '.join(PRECISIONS)}, not {self.precision!r}.")

    def run(self, encoder: PromptedCLIP, job: EmbedJob, writer: StagingWriter) -> str | None:
        """Embeds on the cluster; returns the precision the actors computed in (``a+b`` where actors differed)."""
        ray = _ray()
        # Ray prints its cluster's messages ("(raylet) A worker died ...") to stdout, which is the report's with
        # --json: they go to stderr, with the rest of what a build says along the way.
        with contextlib.redirect_stdout(sys.stderr):
            connected_here = connect(self.address, self.temp_dir)
            try:
                return self._embed(ray, encoder, job, writer)
            except ray.exceptions.RayError as error:
                raise BuildError(f"The Ray embedding step failed ({type(error).__name__}: {error}); the photos "
                                 "embedded so far are staged and the next run resumes from them.") from None
            finally:
                if connected_here:
                    ray.shutdown()

    @staticmethod
    def _check_room(resources: dict, actors: int, actor_cpus: float, on_gpu: bool, reader_cpus: float) -> None:
        """Refuse more actors than the cluster can place beside one read task: Ray Data would wait for them
        for ever, embedding nothing."""
        cpus, gpus = float(resources.get("CPU", 0)), int(resources.get("GPU", 0))
        most = min(gpus, int((cpus - reader_cpus) // actor_cpus)) if on_gpu else int((cpus - reader_cpus) // actor_cpus)
        if actors > most:
            raise BuildError(f"--ray-actors {actors} cannot all be placed: the cluster ({cpus:g} CPUs, {gpus} GPUs) "
                             f"holds at most {max(most, 0)} encoder actors beside a read task.")

    def _embed(self, ray: Any, encoder: PromptedCLIP, job: EmbedJob, writer: StagingWriter) -> str | None:
        import pyarrow as pa

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the writer's bar counts photos; Ray's would interleave with it
        context.print_on_execution_start = False
        resources = ray.cluster_resources()  # one ask of the cluster for the placement below
        gpus = int(resources.get("GPU", 0))
        if self.actor_device == "cuda" and not gpus:
            raise BuildError("--device cuda was requested but the Ray cluster has no GPU.")
        on_gpu = gpus > 0 and self.actor_device != "cpu"
        reader_cpus, actor_cpus = (1, 1) if on_gpu else CPU_ONLY_SHARES
        actors = self.actors or (gpus if on_gpu else 1)
        self._check_room(resources, actors, actor_cpus, on_gpu, reader_cpus)
        # On CPUs an actor computes with its share of the cluster's cores (at most its node's), as a local build does
        threads = None if on_gpu else max(1, int(resources.get("CPU", 1)) // actors)
        payload = ray.put(EncoderPayload.of(encoder, self.precision))
        step = job.batch_size  # one block per batch: every batch can be read by another task at once
        blocks = [pa.table({
            "index": pa.array(range(start, min(start + step, len(job.keys))), pa.int64()),
            "path": [key[0] for key in job.keys[start:start + step]],
            "known": [",".join(job.known.get(key[0], ())) for key in job.keys[start:start + step]],
        }) for start in range(0, len(job.keys), step)]
        results = ray.data.from_arrow(blocks).map_batches(
            read_batch, fn_kwargs={"preprocess": encoder.preprocess}, batch_size=job.batch_size,
            batch_format="numpy", num_cpus=reader_cpus, compute=ray.data.TaskPoolStrategy(size=self.decoders),
        ).map_batches(
            EncoderActor, fn_constructor_kwargs={"payload": [payload], "fail_once": self.fail_once, "threads": threads},
            batch_size=job.batch_size, batch_format="numpy", num_cpus=actor_cpus, num_gpus=1 if on_gpu else 0,
            compute=ray.data.ActorPoolStrategy(size=actors),
        )
        computed_in = set()
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            writer.write(outcomes(batch, job))
            computed_in.update(batch["precision"][batch["decoded"]].tolist())  # rows an actor computed a vector for
        return "+".join(sorted(computed_in)) or None
