"""The default distributor: DataLoader worker processes run the reader, this process runs the model.

Workers die with the build, even a SIGKILLed one (``encoder.workers.WorkerInit``). A worker that dies itself (a
native decoder crashing on a malformed file, the out-of-memory killer) stops its loader: the files that were in
flight are then decoded one after another in a child process of their own, the one that kills it is skipped
(``decoder-crashed``, remembered like a corrupt file; ``out-of-memory`` after a SIGKILL, read again next build), and
the loader starts again on the files left. Before, every run died at the same batch."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from encoder import Preprocessor, PromptedCLIP
from encoder.workers import WorkerInit
from photo_index.errors import BuildError

from .embedding import (
    DECODER_CRASHED,
    OUT_OF_MEMORY,
    Decoded,
    EmbedJob,
    Outcome,
    StagingWriter,
    embed_pixels,
    read_photo,
)
from .sources import Skipped

PREFETCH_FACTOR = 4  # batches each worker decodes ahead
MAX_FRUITLESS_DEATHS = 3  # dead workers in a row whose files all decode alone: killed from outside, give up
log = logging.getLogger("index_builder")


class PhotoFiles(Dataset):
    """The reader over a job's files; picklable for DataLoader workers."""

    def __init__(self, paths: list[str], preprocess: Preprocessor, known: dict[str, tuple[str, ...]] | None = None,
                 indices: list[int] | None = None) -> None:
        self.paths = paths
        self.preprocess = preprocess
        self.known = known or {}  # path -> hashes of indexed contents it may hold: equal bytes are not decoded again
        self.indices = list(range(len(paths))) if indices is None else indices  # which of ``paths`` to read

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Decoded:
        index = self.indices[position]
        path = self.paths[index]
        return read_photo(index, path, self.preprocess, self.known.get(path, ()))


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
        prefetch_factor=PREFETCH_FACTOR if workers > 0 else None,
        persistent_workers=False,
    )


@dataclass
class LocalDistributor:
    name: str = "local"

    def run(self, encoder: PromptedCLIP, job: EmbedJob, writer: StagingWriter) -> None:
        """Embeds in this process, in ``encoder.precision``; goes on past files that kill a decoding worker."""
        left = list(range(len(job.keys)))
        # What the loader may hold undelivered when a worker dies: the batches its workers decode ahead, plus the
        # one handed out while the batch before it is embedded
        window = job.batch_size * (max(job.workers, 1) * PREFETCH_FACTOR + 1)
        fruitless = 0
        while True:
            try:
                return self._embed(encoder, job, writer, left)
            except RuntimeError as error:
                if "DataLoader worker" not in str(error):  # torch's words for a worker that died
                    raise
                if (stop := _interruption_behind(error)) is not None:  # SIGTERM came first: it is what ends the run
                    raise stop from None
                log.warning("a decoding worker died (%s); decoding the files it may have held one by one", error)
            left = [index for index in left if not writer.written(index)]
            crashed = find_crashers(left[:window], job, encoder.preprocess)
            writer.write([Outcome(index, "", problem) for index, problem in crashed.items()])
            left = [index for index in left if index not in crashed]
            fruitless = 0 if crashed else fruitless + 1
            if fruitless >= MAX_FRUITLESS_DEATHS:
                raise BuildError(f"Decoding workers died {fruitless} times in a row and no file among those they "
                                 "held kills a decoder alone (killed from outside, or out of memory?); the photos "
                                 "embedded so far are staged and the next run resumes from them.")
            window *= 1 if crashed else 2  # found nothing: the culprit lay further on

    def _embed(self, encoder: PromptedCLIP, job: EmbedJob, writer: StagingWriter, indices: list[int]) -> None:
        batches = -(-len(indices) // job.batch_size)  # a worker per batch at most: more would only start and wait
        loader = make_loader(PhotoFiles(job.paths, encoder.preprocess, job.known, indices), job.batch_size,
                             min(job.workers, batches))
        batches_of = iter(loader)  # torch installs its SIGCHLD handler here (once, in the main thread)
        held = HeldSigchld()
        with held.installed(loader.num_workers > 0):
            for batch in batches_of:
                self._embed_batch(encoder, batch, writer, held)

    @staticmethod
    def _embed_batch(encoder: PromptedCLIP, batch: list[Decoded], writer: StagingWriter, held: HeldSigchld) -> None:
        # torch's SIGCHLD handler raises "DataLoader worker ... killed" wherever the main thread is: held back while a
        # batch is embedded and staged (a write cut in half would pair a photo with another's vector), it is raised
        # once the batch is staged, where the recovery above can go on
        with held.held():
            good = [item for item in batch if item.pixels is not None]
            vectors: list[np.ndarray | None] = []
            if good:
                vectors = list(embed_pixels(encoder, np.stack([item.pixels for item in good])))
            embedded = dict(zip((item.index for item in good), vectors, strict=True))
            writer.write([Outcome(item.index, item.sha256, item.problem, embedded.get(item.index))
                          for item in batch])


class HeldSigchld:
    """Wraps the SIGCHLD handler (torch's) so that, inside ``held()``, a signal only waits: the handler runs when the
    block ends. (Masking the signal does not do it: the kernel hands it to another thread, and Python runs the handler
    in the main thread all the same.) Off the main thread no handler is installed: torch polls its workers there."""

    def __init__(self) -> None:
        self.holding = self.pending = False
        self.previous: object = None

    def _handler(self, signum: int, frame: object) -> None:
        if self.holding:
            self.pending = True
        elif callable(self.previous):
            self.previous(signum, frame)

    @contextlib.contextmanager
    def installed(self, workers: bool) -> Iterator[None]:
        if not workers or threading.current_thread() is not threading.main_thread():
            yield
            return
        self.previous = signal.signal(signal.SIGCHLD, self._handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGCHLD, self.previous if self.previous is not None else signal.SIG_DFL)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
            if self.pending:
                self.pending = False
                self._handler(signal.SIGCHLD, None)


def _interruption_behind(error: BaseException) -> BaseException | None:
    """An interruption (Ctrl-C, SIGTERM: not an Exception) the error was raised while handling, if any."""
    seen = error.__context__
    while seen is not None:
        if not isinstance(seen, Exception):
            return seen
        seen = seen.__context__
    return None


def find_crashers(indices: list[int], job: EmbedJob, preprocess: Preprocessor) -> dict[int, Skipped]:
    """The files among ``indices`` whose decoding kills the process decoding it, each as a failure: they are read as
    the workers read them, in order, in a forked child, started again after the file it died on."""
    crashed: dict[int, Skipped] = {}
    context = multiprocessing.get_context("fork")  # as the DataLoader's workers: the preprocessing as it is here
    rest = list(indices)
    while rest:
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(target=_decode_each, daemon=True,
                                args=(WorkerInit(_decoding_worker), sender, rest, job, preprocess))
        try:
            child.start()
            sender.close()
            done = 0
            with contextlib.suppress(EOFError):
                while receiver.recv():
                    done += 1
            child.join()
        finally:  # interrupted: the child does not outlive this
            receiver.close()
            if child.is_alive():
                child.kill()
                child.join()
        if child.exitcode == 0 or done >= len(rest):
            break
        index = rest[done]
        killed = child.exitcode == -signal.SIGKILL  # the out-of-memory killer's signal: the machine's state
        how = signal.Signals(-child.exitcode).name if child.exitcode < 0 else f"exit {child.exitcode}"
        crashed[index] = Skipped(job.paths[index], OUT_OF_MEMORY if killed else DECODER_CRASHED,
                                 f"decoding it killed the decoding process ({how})")
        log.warning("%s killed its decoding process (%s): skipped", job.paths[index], how)
        rest = rest[done + 1:]
    return crashed


def _decode_each(init: WorkerInit, sender, indices: list[int], job: EmbedJob, preprocess: Preprocessor) -> None:
    init(0)
    files = PhotoFiles(job.paths, preprocess, job.known, indices)  # read as a loader's worker reads them
    for position in range(len(files)):
        files[position]  # decoded only to see whether it kills this process
        sender.send(True)
    sender.send(False)
