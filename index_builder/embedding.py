"""Photo files → vectors in three steps, as clip-retrieval splits them: reader → model → writer.

- reader (:func:`read_photo`): reads a file once, hashes those bytes (the content hash the metadata
  keeps) and decodes them with the encoder's bomb-safe decoder; a file that fails is returned as a
  reason, never raised, so one bad photo cannot stop a run of millions.
- model: the encoder's photo branch on a batch of decoded pixels.
- writer (:class:`StagingWriter`): appends every outcome (vector or failure) to the build's staging, on
  the driver, as results arrive, so a killed build resumes from them.

A :class:`Distributor` decides where the reader and the model run: ``local`` (DataLoader workers + the
encoder in this process, the default) or ``ray`` (Ray tasks + an actor pool on a cluster), registered in
:mod:`index_builder.distributors`. Every distributor feeds the same writer, so staging, skip reasons and the
published index do not depend on it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from encoder import ImageDecodeError, ImageTooLargeError, Preprocessor, PromptedCLIP
from photo_index.errors import BuildError

from .sources import UNREADABLE, Skipped
from .staging import FileKey, Staging

OUT_OF_MEMORY = "out-of-memory"  # decoding ran out of memory (read again next build)
MAX_PHOTO_FILE_BYTES = 512 * 2**20  # at least: more than a photo of the default pixel limit takes, even uncompressed
DECODER_CRASHED = "decoder-crashed"  # decoding it killed the process (a native decoder's crash): remembered


def classify_decode_error(error: Exception) -> str:
    """A short reason key for a file that could not be decoded."""
    if isinstance(error, ImageTooLargeError):
        return "too-large"
    if isinstance(error.__cause__, MemoryError):  # the machine's state, not the file's: not remembered as broken
        return OUT_OF_MEMORY
    cause = str(error.__cause__ or "").lower()
    message = str(error).lower()
    if "not an image" in message:
        return "not-an-image"
    if "zero bytes" in message:
        return "zero-byte"
    if "truncated" in cause:
        return "truncated"
    return "corrupt"


@dataclass
class Decoded:
    """The reader's result for one file: pixels to embed, or a problem, or neither (content already indexed)."""

    index: int  # position in the job's keys
    # [3, S, S] uint8 before normalisation (Preprocessor.photo_file_pixels: a quarter of float32's bytes through the
    # workers' queue); numpy crosses processes by value (no fd passing to race on exit)
    pixels: np.ndarray | None
    sha256: str
    problem: Skipped | None


def max_file_bytes(preprocess: Preprocessor) -> int:
    """The largest file read as a photo: 16-bit RGBA of the pixel limit (SBIR_MAX_IMAGE_PIXELS), uncompressed."""
    return max(MAX_PHOTO_FILE_BYTES, 8 * preprocess.max_pixels)


def read_photo(index: int, path: str, preprocess: Preprocessor, known: Collection[str] = ()) -> Decoded:
    """The reader step: read, hash and decode one file (content hashing to one of ``known``, hashes of indexed
    photos whose vectors can be kept, is not decoded again)."""
    try:
        with open(path, "rb") as handle:
            size, most = os.fstat(handle.fileno()).st_size, max_file_bytes(preprocess)
            if size > most:  # read whole (to hash it) by every worker at once, it would fill the memory
                return Decoded(index, None, "", Skipped(path, "too-large", f"the file is {size:,} bytes, more than the "
                                                        f"{most:,} a photo of the pixel limit can take"))
            data = handle.read()
    except OSError as error:
        return Decoded(index, None, "", Skipped(path, UNREADABLE, f"{type(error).__name__}: {error.strerror}"))
    sha256 = hashlib.sha256(data).hexdigest()
    if not data:
        return Decoded(index, None, sha256, Skipped(path, "zero-byte", "empty file"))
    if sha256 in known:
        return Decoded(index, None, sha256, None)  # content indexed already (here, or moved from elsewhere): keep it
    try:
        pixels = preprocess.photo_file_pixels(data)
    except (ImageDecodeError, ImageTooLargeError) as error:  # siblings under encoder.errors.InputError
        return Decoded(index, None, sha256, Skipped(path, classify_decode_error(error), str(error)))
    except Exception as error:  # noqa: BLE001 - a transform failing on an odd image must not stop the run
        reason = OUT_OF_MEMORY if isinstance(error, MemoryError) else "corrupt"
        return Decoded(index, None, sha256, Skipped(path, reason, f"{type(error).__name__}: {error}"))
    return Decoded(index, pixels, sha256, None)


def embed_pixels(encoder: PromptedCLIP, pixels: np.ndarray) -> np.ndarray:
    """The model step: a stack of the reader's pixels ``[B, 3, S, S]`` → float32 vectors ``[B, D]``; the batch is
    normalised here, in one pass (Preprocessor.photo_batch)."""
    images = encoder.preprocess.photo_batch(torch.from_numpy(pixels))
    if encoder.device.type == "cuda":
        images = images.pin_memory()
    return encoder.encode_photo(images).cpu().numpy()


@dataclass
class Outcome:
    """One file after the reader and the model: ``vector`` when embedded, ``problem`` when skipped,
    neither when its content equals the indexed one."""

    index: int
    sha256: str
    problem: Skipped | None = None
    vector: np.ndarray | None = None


@dataclass
class EmbedJob:
    """What to embed: ``keys[i]`` is the file of index ``i``; ``known[path]`` the content hashes of indexed photos
    it may hold (its own previous content, a moved photo's of its byte size): a match keeps that vector."""

    keys: list[FileKey]
    batch_size: int = 256
    workers: int = 4  # local distributor: DataLoader processes
    known: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def paths(self) -> list[str]:
        return [key[0] for key in self.keys]


class StagingWriter:
    """The writer step: outcomes → staging (vectors, failures) and the set of files whose content is unchanged.

    An outcome for a file already written is ignored: a distributor that re-runs a batch (a retried task
    whose first result did arrive) cannot duplicate a row."""

    def __init__(self, job: EmbedJob, staging: Staging, progress: bool) -> None:
        self.job = job
        self.staging = staging
        self.same: dict[FileKey, str] = {}  # files whose content is indexed already -> its hash
        self.computed = 0  # vectors staged from this run's encoder (not unchanged files, not failures)
        self._done: set[int] = set()
        self._bar = tqdm(total=len(job.keys), desc="embedding", unit="photo", disable=not progress, smoothing=0.1)

    def write(self, outcomes: list[Outcome]) -> None:
        fresh = list({item.index: item for item in outcomes if item.index not in self._done}.values())
        embedded: list[Outcome] = []
        for item in fresh:  # counted written once staged (below): an interrupted write leaves them to do again
            key = self.job.keys[item.index]
            if item.problem is not None:
                self.staging.append_failure(key, item.problem)
            elif item.vector is None:
                self.same[key] = item.sha256
            elif not np.isfinite(item.vector).all():
                self.staging.append_failure(key, Skipped(key[0], "not-finite", "the encoder returned NaN/inf"))
            else:
                embedded.append(item)
        if embedded:
            self.computed += len(embedded)
            self.staging.append([self.job.keys[item.index] for item in embedded], [item.sha256 for item in embedded],
                                np.stack([item.vector for item in embedded]))
        self._done.update(item.index for item in fresh)
        self._bar.update(len(fresh))

    def written(self, index: int) -> bool:
        """Whether file ``index`` of the job has its outcome."""
        return index in self._done

    @property
    def missing(self) -> int:
        """Files of the job with no outcome yet."""
        return len(self.job.keys) - len(self._done)

    def close(self) -> None:
        self._bar.close()


class Distributor(Protocol):
    """Runs the reader and the model over a job and hands every outcome to the writer (in any order).

    ``run`` returns the precision the vectors were computed in when its workers chose it on their own device (Ray
    actors resolving ``auto`` on a GPU), or None when they computed in ``encoder.precision``."""

    name: str

    def run(self, encoder: PromptedCLIP, job: EmbedJob, writer: StagingWriter) -> str | None: ...


@dataclass(frozen=True)
class Embedded:
    """What the embedding step did beyond staging: files found unchanged, and the precision it computed in."""

    same: dict[FileKey, str]  # files whose content is indexed already (at their path or a gone one) -> its hash
    precision: str | None  # None: the encoder's own (or no vector was computed)
    computed: int = 0  # vectors this run computed (0: every file was unchanged, failed, or staged by an earlier run)


def embed_files(
    encoder: PromptedCLIP,
    keys: list[FileKey],
    staging: Staging,
    *,
    distributor: Distributor,
    batch_size: int = 256,
    workers: int = 4,
    progress: bool = True,
    known: dict[str, tuple[str, ...]] | None = None,
) -> Embedded:
    """Embed the files ``keys`` names and append every result (vector or failure) to ``staging``.

    Files whose content hash is one of ``known[path]`` are not embedded; they are returned in ``same`` with their
    hash."""
    if not keys:
        return Embedded({}, None)
    job = EmbedJob(keys, batch_size=batch_size, workers=workers, known=known or {})
    writer = StagingWriter(job, staging, progress)
    try:
        precision = distributor.run(encoder, job, writer)
    finally:
        writer.close()
    if writer.missing:  # a distributor that stopped early must not look like a finished embedding step
        raise BuildError(f"The embedding step returned no result for {writer.missing} of {len(keys)} photos.")
    return Embedded(writer.same, precision, writer.computed)
