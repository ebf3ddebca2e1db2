"""Photo files → vectors: DataLoader workers read, hash and decode; the encoder's photo branch embeds.

Each worker reads a file once, hashes those bytes (the content hash the metadata keeps) and decodes
them with the encoder's bomb-safe decoder. A file that fails is returned as a reason, never raised,
so one bad photo cannot stop a run of millions. Workers die with the build, even a SIGKILLed one
(``encoder.workers.WorkerInit``).
"""

from __future__ import annotations

import hashlib
import signal
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from encoder import ImageDecodeError, ImageTooLargeError, Preprocessor, PromptedCLIP
from encoder.workers import WorkerInit

from .sources import Skipped
from .staging import FileKey, Staging


def classify_decode_error(error: Exception) -> str:
    """A short reason key for a file that could not be decoded."""
    if isinstance(error, ImageTooLargeError):
        return "too-large"
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
    index: int
    pixels: np.ndarray | None  # [3, S, S]; numpy crosses from workers by value (no fd passing to race on exit)
    sha256: str
    problem: Skipped | None


class PhotoFiles(Dataset):
    """Reads, hashes and preprocesses photo files; picklable for DataLoader workers."""

    def __init__(self, paths: list[str], preprocess: Preprocessor, known: dict[str, str] | None = None) -> None:
        self.paths = paths
        self.preprocess = preprocess
        self.known = known or {}  # path -> sha256 of the indexed content: equal bytes are not decoded again

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Decoded:
        path = self.paths[index]
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as error:
            return Decoded(index, None, "", Skipped(path, "unreadable", f"{type(error).__name__}: {error.strerror}"))
        sha256 = hashlib.sha256(data).hexdigest()
        if not data:
            return Decoded(index, None, sha256, Skipped(path, "zero-byte", "empty file"))
        if self.known.get(path) == sha256:
            return Decoded(index, None, sha256, None)  # same content as indexed: keep its vector
        try:
            pixels = self.preprocess.photo_file(data).numpy()
        except (ImageDecodeError, ImageTooLargeError) as error:  # siblings under encoder.errors.InputError
            return Decoded(index, None, sha256, Skipped(path, classify_decode_error(error), str(error)))
        except Exception as error:  # noqa: BLE001 - a transform failing on an odd image must not stop the run
            return Decoded(index, None, sha256, Skipped(path, "corrupt", f"{type(error).__name__}: {error}"))
        return Decoded(index, pixels, sha256, None)


def _collate(items: list[Decoded]) -> list[Decoded]:
    return items


def _quiet_worker(_worker_id: int) -> None:
    torch.set_num_threads(1)  # workers decode; the main process owns the compute threads
    # Ctrl-C / SIGTERM reach the whole process group: the main process unwinds and stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(dataset: Dataset, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        worker_init_fn=WorkerInit(_quiet_worker) if workers > 0 else None,  # a killed build leaves no worker
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )


def embed_files(
    encoder: PromptedCLIP,
    keys: list[FileKey],
    staging: Staging,
    *,
    batch_size: int = 256,
    workers: int = 4,
    progress: bool = True,
    known: dict[str, str] | None = None,
) -> set[FileKey]:
    """Embed the files ``keys`` names and append every result (vector or failure) to ``staging``.

    Files whose content hash equals ``known[path]`` are not embedded; their keys are returned."""
    same: set[FileKey] = set()
    if not keys:
        return same
    dataset = PhotoFiles([key[0] for key in keys], encoder.preprocess, known)
    loader = make_loader(dataset, batch_size, workers)
    with tqdm(total=len(keys), desc="embedding", unit="photo", disable=not progress, smoothing=0.1) as bar:
        for batch in loader:
            good = [item for item in batch if item.pixels is not None]
            for item in batch:
                if item.problem is not None:
                    staging.append_failure(keys[item.index], item.problem)
                elif item.pixels is None:
                    same.add(keys[item.index])
            if good:
                images = torch.from_numpy(np.stack([item.pixels for item in good]))
                if encoder.device.type == "cuda":
                    images = images.pin_memory()
                vectors = encoder.encode_photo(images).cpu().numpy()
                finite = np.isfinite(vectors).all(axis=1)
                for item, ok in zip(good, finite, strict=True):
                    if not ok:
                        staging.append_failure(keys[item.index], Skipped(dataset.paths[item.index], "not-finite",
                                                                         "the encoder returned NaN/inf"))
                kept = [item for item, ok in zip(good, finite, strict=True) if ok]
                staging.append([keys[item.index] for item in kept], [item.sha256 for item in kept], vectors[finite])
            bar.update(len(batch))
    return same
