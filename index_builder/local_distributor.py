"""The default distributor: DataLoader worker processes run the reader, this process runs the model.

Workers die with the build, even a SIGKILLed one (``encoder.workers.WorkerInit``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from encoder import Preprocessor, PromptedCLIP
from encoder.workers import WorkerInit

from .embedding import Decoded, EmbedJob, Outcome, StagingWriter, embed_pixels, read_photo


class PhotoFiles(Dataset):
    """The reader over a job's files; picklable for DataLoader workers."""

    def __init__(self, paths: list[str], preprocess: Preprocessor, known: dict[str, str] | None = None) -> None:
        self.paths = paths
        self.preprocess = preprocess
        self.known = known or {}  # path -> sha256 of the indexed content: equal bytes are not decoded again

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Decoded:
        path = self.paths[index]
        return read_photo(index, path, self.preprocess, self.known.get(path))


def _collate(items: list[Decoded]) -> list[Decoded]:
    return items


def _decoding_worker(_worker_id: int) -> None:
    torch.set_num_threads(1)  # workers decode; the main process owns the compute threads
    # (Ctrl-C / SIGTERM to the build's process group do not reach them: WorkerInit gives each a group of its own.)


def make_loader(dataset: Dataset, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        worker_init_fn=WorkerInit(_decoding_worker) if workers > 0 else None,  # a killed build leaves no worker
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )


@dataclass
class LocalDistributor:
    name: str = "local"

    def run(self, encoder: PromptedCLIP, job: EmbedJob, writer: StagingWriter) -> None:
        """Embeds in this process, in ``encoder.precision``."""
        batches = -(-len(job.paths) // job.batch_size)  # a worker per batch at most: more would only start and wait
        loader = make_loader(PhotoFiles(job.paths, encoder.preprocess, job.known), job.batch_size,
                             min(job.workers, batches))
        for batch in loader:
            good = [item for item in batch if item.pixels is not None]
            vectors: list[np.ndarray | None] = []
            if good:
                vectors = list(embed_pixels(encoder, np.stack([item.pixels for item in good])))
            embedded = dict(zip((item.index for item in good), vectors, strict=True))
            writer.write([Outcome(item.index, item.sha256, item.problem, embedded.get(item.index))
                          for item in batch])
