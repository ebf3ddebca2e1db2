"""The one training loop, for every task (category-level, fine-grained): read it top to bottom.

A :class:`Task` supplies batches, the loss and a validation score; the loop owns everything else:
AdamW over the encoder's two parameter groups (prompts, LayerNorms), mixed precision on CUDA,
data parallelism under ``torchrun`` (DDP), a checkpoint every epoch (``last.safetensors`` plus
``last_state.pt`` for ``--resume``), ``best.safetensors`` on the task's selection metric, a CSV
log, PNG curves and progress bars. Only rank 0 validates, logs and writes files.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import os
import pickle
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, SequentialSampler, Subset
from tqdm.auto import tqdm

from encoder import CheckpointError, PromptedCLIP, SBIRError, resolve_device, save_checkpoint
from encoder.checkpoint import apply_learned_state, read_checkpoint

from .data import BadFiles, ClassSplit, DataError

log = logging.getLogger(__name__)

LAST, BEST, STATE, LOG, CURVES = "last.safetensors", "best.safetensors", "last_state.pt", "log.csv", "curves.png"
LOG_FIELDS = ["step", "epoch", "phase", "metric", "value", "time"]
# Options a resumed run must keep: the saved optimiser state carries the learning rates and weight decay (loading it
# would silently undo new ones), the grad scaler's state belongs to one precision, and the seed orders the batches
# whose position the state counts. The CLI refuses these (and the loss flags) earlier, naming its flags.
RESUME_OPTIONS = ("prompt_lr", "ln_lr", "weight_decay", "amp", "seed")


class TrainingDivergedError(SBIRError):
    """The learned parameters became NaN or infinite (a learning rate far too high): the run stops unsaved."""


class Task(Protocol):
    """What a training task tells the loop (see docs/training.md)."""

    name: str  # "category" | "fine-grained"
    selection_metric: str  # key of validate()'s dict, higher is better
    # The classes it trains on, selects on and never sees: recorded in every checkpoint, so `evaluate` can tell
    # whether it scores classes the checkpoint was trained on.
    split: ClassSplit
    bad: BadFiles  # unreadable files met so far: shared by the DDP ranks after each epoch, kept in the state
    # Random draws the task makes in this process as it trains (fine-grained: the patch shuffles), or None; its state
    # is kept in the run's state, so a resumed run draws what an unbroken one would.
    generator: torch.Generator | None

    def train_loader(self, epoch: int) -> Iterable[Any]:
        """Batches of one epoch (sampler seeded by epoch; this DDP rank's share)."""

    def loss(self, encoder: PromptedCLIP, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss (a scalar with grad) and its parts for the log; no parts when nothing in the batch
        was readable (the loss is then a zero that keeps the DDP ranks in step)."""

    def validate(self, encoder: PromptedCLIP) -> dict[str, float]:
        """Scores on the validation slice of the training classes; ``{}`` when there is none
        (``--val-fraction 0``: no best.safetensors, the run's checkpoint is last.safetensors)."""


@dataclass
class TrainOptions:
    epochs: int = 60
    prompt_lr: float = 1e-4
    ln_lr: float = 1e-6
    weight_decay: float = 0.0
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16 with a grad scaler)
    seed: int = 0
    resume: bool = False
    max_steps: int | None = None  # stop after this many optimiser steps in total (tests, smoke runs)
    log_every: int = 10
    validate_first: bool = True  # score the untrained encoder as epoch 0
    progress: bool = True
    # Classes the starting checkpoint (--checkpoint) had been trained on: a continued run's checkpoints record them
    # with its own, so `evaluate` still sees them as seen. None: it recorded none (then no checkpoint claims to know).
    earlier_classes: tuple[str, ...] | None = ()


@dataclass
class TrainResult:
    steps: int
    epochs_done: int
    best_metric: float | None
    best_epoch: int | None
    out_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)  # one row per validation

    @property
    def last_checkpoint(self) -> Path:
        return self.out_dir / LAST

    @property
    def best_checkpoint(self) -> Path | None:
        path = self.out_dir / BEST
        return path if path.is_file() else None


# ----------------------------------------------------------------------------------- distribution
@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1); pick this rank's device.

    NCCL on GPUs, gloo on CPU. A single process needs nothing and returns rank 0 of 1.
    """
    info = DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))
    chosen = resolve_device(device)
    if chosen.type == "cuda" and (chosen.index is None or info.world_size > 1):
        if chosen.index not in (None, info.local_rank):  # e.g. SBIR_DEVICE=cuda:0 meant for the service: every rank
            log.warning("--device %s ignored under torchrun: rank %d takes its own GPU, cuda:%d", chosen, info.rank,
                        info.local_rank)  # on one GPU, NCCL refuses
        chosen = torch.device("cuda", info.local_rank)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if info.world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return info, chosen


def current_dist() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


class _TaskStep(nn.Module):
    """``task.loss`` as a module forward, so DDP can wrap it and all-reduce the learned tensors' grads."""

    def __init__(self, task: Task, encoder: PromptedCLIP) -> None:
        super().__init__()
        self.encoder = encoder
        self.task = task

    def forward(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        return self.task.loss(self.encoder, batch)


# ----------------------------------------------------------------------------------- logging
class CsvLog:
    """Long-format CSV (step, epoch, phase, metric, value, time): any task's metrics fit one file."""

    def __init__(self, path: Path, keep_until_step: int | None = None) -> None:
        self.path = path
        rows = []
        if keep_until_step is not None and path.is_file():  # resuming: drop rows written after the checkpoint
            rows = [r for r in read_log(path) if int(r["step"]) <= keep_until_step]
        self._write(rows, "w")

    def _write(self, rows: list[dict], mode: str) -> None:
        with open(self.path, mode, newline="") as handle:
            writer = csv.DictWriter(handle, LOG_FIELDS)
            if mode == "w":
                writer.writeheader()
            writer.writerows(rows)

    def add(self, step: int, epoch: int, phase: str, metrics: dict[str, float]) -> None:
        now = round(time.time(), 3)
        self._write([{"step": step, "epoch": epoch, "phase": phase, "metric": k, "value": v, "time": now}
                     for k, v in metrics.items()], "a")


def read_log(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ----------------------------------------------------------------------------------- the loop
def check_out_dir(out_dir: str | Path, resume: bool) -> None:
    """A finished or interrupted run is never overwritten by a fresh one: not by a run without --resume, and not
    by --resume in a folder whose checkpoints have lost their state (it would start afresh over ``best``)."""
    out_dir = Path(out_dir)
    held = [name for name in (STATE, LAST, BEST) if (out_dir / name).is_file()]
    if held and not resume:
        raise FileExistsError(f"{out_dir} already holds a run ({', '.join(held)}): pass --resume to continue it, "
                              "or choose another --out.")
    if held and resume and STATE not in held:
        raise FileExistsError(f"{out_dir} holds {', '.join(held)} but no {STATE} to resume from; a fresh run would "
                              f"overwrite them: continue from a checkpoint with --checkpoint {out_dir / held[0]} "
                              "and another --out.")


def train(task: Task, encoder: PromptedCLIP, options: TrainOptions, out_dir: str | Path) -> TrainResult:
    """Train ``encoder``'s prompts (and LayerNorms) on ``task``; files go to ``out_dir``."""
    run = _Run(task, encoder, options, Path(out_dir))
    run.start_or_resume()
    if options.validate_first and not run.resumed:
        run.validate(0)
    encoder.train()
    step_fn = _step_module(task, encoder, run.rank)
    start_time = time.time()
    while run.epoch < options.epochs:
        if run.train_epoch(step_fn):  # stopped mid-epoch (--max-steps): saved where it stands
            break
        run.end_epoch()
        if options.max_steps is not None and run.step >= options.max_steps:
            break
    return run.finish(time.time() - start_time)


def _step_module(task: Task, encoder: PromptedCLIP, rank: DistInfo) -> nn.Module:
    """``task.loss`` as a module; under DDP wrapped so the learned tensors' gradients are all-reduced."""
    step_fn: nn.Module = _TaskStep(task, encoder)
    if rank.world_size > 1:
        device = encoder.device
        device_ids = [device.index] if device.type == "cuda" else None
        step_fn = nn.parallel.DistributedDataParallel(step_fn, device_ids=device_ids)
    return step_fn


class _Run:
    """One run's state and its steps (start or resume, validate, train an epoch, save, finish), in the order
    :func:`train` calls them. Only rank 0 validates, logs and writes files."""

    def __init__(self, task: Task, encoder: PromptedCLIP, options: TrainOptions, out_dir: Path) -> None:
        self.task, self.encoder, self.options, self.out_dir = task, encoder, options, out_dir
        self.rank = current_dist()
        device = encoder.device
        torch.manual_seed(options.seed + self.rank.rank)
        encoder.amp = options.amp  # the encoder autocasts on CUDA by default; full precision on request
        fp16 = options.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        self.optimizer = torch.optim.AdamW(encoder.param_groups(options.prompt_lr, options.ln_lr,
                                                                options.weight_decay))
        if not self.optimizer.param_groups:
            raise CheckpointError("The encoder has nothing to train (the frozen-CLIP baseline has no prompts).")
        self.epoch, self.step, self.skip_batches, self.epoch_batches = 0, 0, 0, 0
        self.best, self.best_epoch, self.history = -math.inf, None, []
        self.resumed = False
        self.csv_log: CsvLog | None = None

    # ---- start or resume
    def start_or_resume(self) -> None:
        out_dir, options = self.out_dir, self.options
        if self.rank.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
        check_out_dir(out_dir, options.resume)  # before saying anything of a fresh run it may refuse
        self.resumed = options.resume and (out_dir / STATE).is_file()
        if options.resume and not self.resumed and self.rank.is_main:
            log.warning("--resume: no %s in %s; starting a fresh run", STATE, out_dir)
        if self.resumed:
            self._restore()
        if self.rank.is_main:
            self.csv_log = CsvLog(out_dir / LOG, keep_until_step=self.step if self.resumed else None)

    def _restore(self) -> None:
        out_dir, encoder = self.out_dir, self.encoder
        unreadable = f"{out_dir / STATE} is unreadable"
        advice = "the run cannot resume from it: start a fresh run in another --out."
        try:
            state = torch.load(out_dir / STATE, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as error:  # "PytorchStreamReader failed"
            raise CheckpointError(f"{unreadable} ({type(error).__name__}); {advice}") from None
        config, tensors, _info = read_checkpoint(out_dir / LAST)
        if config != encoder.config:
            raise CheckpointError(f"{out_dir / LAST} was trained with {config}, not {encoder.config}.")
        try:  # a state of another shape (edited, or not this program's) stops the run before it trains on any of it
            if not isinstance(state, dict):
                raise TypeError(f"it holds a {type(state).__name__}, not a training state")
            self._check_same_options(state)
            # The state's own copy of the weights (one moment with its optimiser); a state saved before it had one
            # uses last.safetensors.
            apply_learned_state(encoder, state.get("learned") or tensors, source=str(out_dir / STATE))
            self.optimizer.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
            self.epoch, self.step, self.skip_batches = (_count(state, name) for name in ("epoch", "step",
                                                                                      "batches_done"))
            best = state["best"]
            if best is not None and (isinstance(best, bool) or not isinstance(best, int | float)
                                     or not math.isfinite(best)):
                raise TypeError(f"best is {best!r}, not a score")
            self.best = float(best) if best is not None else -math.inf
            self.best_epoch = None if state["best_epoch"] is None else _count(state, "best_epoch")
            self.history = json.loads(state["history"])
            if not isinstance(self.history, list) or not all(isinstance(entry, dict) for entry in self.history):
                raise TypeError("history is not a list of per-epoch records")
            if "unreadable" in state:  # a state saved before it was kept: the files are found again
                self.task.bad.load_state_dict(state["unreadable"])
            if state.get("generator") is not None and self.task.generator is not None:  # older states: drawn anew
                self.task.generator.set_state(state["generator"])
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as error:  # RuntimeError: torch's
            raise CheckpointError(f"{unreadable} ({type(error).__name__}: {error}); {advice}") from None
        if self.rank.is_main:
            print(f"resuming {self.task.name} from epoch {self.epoch}, step {self.step} "
                  f"({self.skip_batches} batches into the epoch)")

    def _check_same_options(self, state: dict) -> None:
        """Refuse to resume under other :data:`RESUME_OPTIONS` than the state was saved with (a state saved before
        it kept its options resumes unchecked)."""
        saved = json.loads(state.get("options") or "{}")
        if not isinstance(saved, dict):
            raise TypeError(f"its options are a {type(saved).__name__}, not a record")
        now = asdict(self.options)
        differing = [name for name in RESUME_OPTIONS if name in saved and saved[name] != now[name]]
        if differing:
            raise CheckpointError(
                f"{self.out_dir / STATE} was saved with {', '.join(f'{n}={saved[n]!r}' for n in differing)}; refusing "
                f"to resume it with {', '.join(f'{n}={now[n]!r}' for n in differing)} (resume with the values it was "
                "trained with, or start a new run in another folder).")

    # ---- files
    def save(self, epoch: int, batches_done: int, metrics: dict[str, float] | None,
             draws: torch.Tensor | None = None) -> None:
        """``last.safetensors`` + ``last_state.pt`` (written then renamed), ``batches_done`` into ``epoch``;
        ``draws``: the task generator's state to keep, when not its state now."""
        if draws is None and self.task.generator is not None:
            draws = self.task.generator.get_state()
        save_checkpoint(self.encoder, self.out_dir / LAST, extra=self._checkpoint_extra(epoch, metrics))
        # The learned tensors go into the state too: it is written whole or not at all (a rename), so --resume
        # restores weights and optimiser of one moment even if a kill fell between the two files.
        learned = {name: p.detach().cpu().clone() for name, p in self.encoder.trainable_parameters().items()}
        state = {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(), "epoch": epoch,
                 "step": self.step, "batches_done": batches_done, "learned": learned,
                 "best": self.best if self.best > -math.inf else None, "best_epoch": self.best_epoch,
                 "history": json.dumps(self.history), "options": json.dumps(asdict(self.options)),
                 "unreadable": self.task.bad.state_dict(),
                 "generator": draws}
        tmp = self.out_dir / (STATE + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.out_dir / STATE)

    def _checkpoint_extra(self, epoch: int, metrics: dict[str, float] | None) -> dict:
        """What a checkpoint says of its training: task, position, metrics and the class split it was trained on."""
        earlier = self.options.earlier_classes
        trained = None if earlier is None else sorted({*self.task.split.train, *earlier})
        return {"task": self.task.name, "epoch": epoch, "step": self.step, "metrics": metrics or {},
                "split": self.task.split.to_dict(), "trained_classes": trained}

    # ---- validation
    def validate(self, epoch: int) -> tuple[dict[str, float] | None, bool]:
        """Score on rank 0; returns (metrics, whether they are the best so far)."""
        metrics, improved = None, False
        if self.rank.is_main:
            metrics, improved = self._score(epoch)
        if self.rank.world_size > 1:
            dist.barrier()
        return metrics, improved

    def _score(self, epoch: int) -> tuple[dict[str, float] | None, bool]:
        task, encoder = self.task, self.encoder
        encoder.eval()
        metrics: dict[str, float] | None = {k: float(v) for k, v in task.validate(encoder).items()}
        encoder.train()
        if not metrics:  # no validation slice: nothing to log or select
            return None, False
        if task.selection_metric not in metrics:
            raise KeyError(f"validate() returned {sorted(metrics)}, without {task.selection_metric!r}")
        self.csv_log.add(self.step, epoch, "val", metrics)
        self.history.append({"epoch": epoch, "step": self.step, **metrics})
        score = metrics[task.selection_metric]
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        improved = epoch > 0 and score > self.best  # the untrained encoder (epoch 0) is only a reference
        if improved:
            self.best, self.best_epoch = score, epoch
        tqdm.write(f"[{task.name}] epoch {epoch} step {self.step}: {shown}{' (best)' if improved else ''}")
        return metrics, improved

    # ---- one epoch
    def train_epoch(self, step_fn: nn.Module) -> bool:
        """Train this epoch's batches (after those a resumed run did); True when stopped mid-epoch."""
        task, options, rank = self.task, self.options, self.rank
        loader = task.train_loader(self.epoch)
        batches: Iterable[Any] = loader
        if self.skip_batches:
            batches = _skip_batches(loader, self.skip_batches)  # same seeded order: skip what was done
        total = _safe_len(loader)
        bar = tqdm(batches, total=total, initial=self.skip_batches,
                   desc=f"{task.name} epoch {self.epoch + 1}/{options.epochs}",
                   disable=not (options.progress and rank.is_main), dynamic_ncols=True, leave=False)
        window: dict[str, list[float]] = defaultdict(list)
        done = started = self.skip_batches
        self.skip_batches = 0
        stopped, learned, draws = False, 0, None
        try:
            for batch in bar:
                if options.max_steps is not None and self.step >= options.max_steps:  # already there (a resume)
                    stopped = True
                    break
                draws = None if task.generator is None else task.generator.get_state()
                learned += self._optimise(step_fn, batch, window)
                done += 1
                draws = None  # the step is done: what it drew counts
                if rank.is_main and (self.step % options.log_every == 0 or done == total):
                    means = {k: sum(v) / len(v) for k, v in window.items()}
                    self.csv_log.add(self.step, self.epoch + 1, "train", means)
                    bar.set_postfix({k: f"{v:.4f}" for k, v in means.items() if k == "loss"})
                    window.clear()
                if options.max_steps is not None and self.step >= options.max_steps:
                    stopped = total is None or done < total
                    break
        except KeyboardInterrupt:  # Ctrl-C mid-epoch: keep the steps done, so --resume continues at this batch
            bar.close()
            if rank.is_main and done > started:  # (the generator as it was before the step that was cut short)
                self.save(self.epoch, done, None, draws=draws)
                tqdm.write(f"[{task.name}] interrupted at step {self.step} ({done} batches into epoch "
                           f"{self.epoch + 1}); saved to {self.out_dir}, --resume continues from there")
            raise
        bar.close()
        self.epoch_batches = done
        self._share_unreadable()
        if not stopped and started == 0 and not self._any_rank(learned):
            raise DataError(f"Epoch {self.epoch + 1} had nothing to learn from: every training batch was unreadable "
                            f"({self.task.bad.summary()}). Nothing of it was saved; check --data.")
        if stopped and rank.is_main:  # mid-epoch: save where we are so --resume picks up at this very batch
            self.save(self.epoch, done, None)
        return stopped

    def _optimise(self, step_fn: nn.Module, batch: Any, window: dict[str, list[float]]) -> bool:
        """One optimiser step on ``batch``; its loss parts join the log window; False when nothing in the batch was
        readable. Parameters that became NaN or infinite stop the run (:class:`TrainingDivergedError`) before
        anything of them is saved; a non-finite loss alone may be fp16 overflow, which the grad scaler skips."""
        loss, parts = step_fn(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):  # one sync a step
            raise TrainingDivergedError(
                f"Training diverged at step {self.step} (epoch {self.epoch + 1}): the learned parameters are NaN or "
                f"infinite (loss {float(loss.detach()):.4g}). Nothing of this was saved; lower --prompt_lr / "
                f"--clip_LN_lr and start again (the checkpoints in {self.out_dir} are from before).")
        for key, value in parts.items():
            window[key].append(value)
        return bool(parts)

    def _share_unreadable(self) -> None:
        """Every rank learns the unreadable files the others met, so the next epoch's batches (drawn without
        them) are the same on every rank and rank 0 reports them all."""
        if self.rank.world_size > 1:
            found: list[dict[str, str]] = [{} for _ in range(self.rank.world_size)]
            dist.all_gather_object(found, self.task.bad.errors)
            for errors in found:
                self.task.bad.merge(errors)

    def _any_rank(self, count: int) -> bool:
        """Whether ``count`` is non-zero on any rank (every rank gets the same answer)."""
        if self.rank.world_size > 1:
            total = torch.tensor([count], device=self.encoder.device if dist.get_backend() == "nccl" else "cpu")
            dist.all_reduce(total)
            count = int(total.item())
        return count > 0

    def end_epoch(self) -> None:
        """Count the epoch, validate it, save ``last`` (and ``best`` when it improved), redraw the curves."""
        try:
            metrics, improved = self.validate(self.epoch + 1)
        except KeyboardInterrupt:  # Ctrl-C while validating: the epoch's training is kept, --resume validates it
            if self.rank.is_main and self.epoch_batches:
                self.save(self.epoch, self.epoch_batches, None)
                tqdm.write(f"[{self.task.name}] interrupted while validating epoch {self.epoch + 1}; its training "
                           f"is saved to {self.out_dir}, --resume validates it")
            raise
        self.epoch += 1
        if self.rank.is_main:
            self.save(self.epoch, 0, metrics)
            if improved:
                save_checkpoint(self.encoder, self.out_dir / BEST, extra=self._checkpoint_extra(self.epoch, metrics))
            _plot(self.out_dir)

    # ---- the end
    def finish(self, elapsed: float) -> TrainResult:
        """Final curves and summary line; under DDP every rank returns rank 0's selection (``--refit`` uses it)."""
        task, rank = self.task, self.rank
        if rank.is_main:
            _plot(self.out_dir)
            if self.best_epoch:
                best_text = f"best {task.selection_metric}={self.best:.4f} at epoch {self.best_epoch}"
            else:
                best_text = ("no best yet" if self.history
                             else "no validation slice: last.safetensors is the run's checkpoint")
            print(f"[{task.name}] {self.step} steps, {self.epoch} epochs in {elapsed:.0f}s; {best_text}; "
                  f"files in {self.out_dir}")
        self.encoder.eval()
        if rank.world_size > 1:  # only rank 0 validated: every rank returns its selection
            shared = [self.best, self.best_epoch, self.history]
            dist.broadcast_object_list(shared, src=0)
            self.best, self.best_epoch, self.history = shared
        return TrainResult(self.step, self.epoch, self.best if self.best_epoch else None, self.best_epoch,
                           self.out_dir, self.history)


def _count(state: dict, name: str) -> int:
    """``state[name]`` as a count (an int of 0 or more); anything else is a state of another shape."""
    value = state[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} is {value!r}, not a count")
    return value


def _skip_batches(loader: Iterable[Any], n: int) -> Iterable[Any]:
    """The loader without its first ``n`` batches; a plain in-order DataLoader skips without reading them."""
    if isinstance(loader, DataLoader) and isinstance(loader.sampler, SequentialSampler) and loader.batch_size:
        rest = Subset(loader.dataset, range(min(n * loader.batch_size, len(loader.dataset)), len(loader.dataset)))
        return DataLoader(rest, batch_size=loader.batch_size, num_workers=loader.num_workers,
                          collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                          worker_init_fn=loader.worker_init_fn)
    return itertools.islice(loader, n, None)


def _safe_len(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def _plot(out_dir: Path) -> None:
    from .report import plot_curves

    try:
        plot_curves(out_dir / LOG, out_dir / CURVES)
    except Exception as error:  # noqa: BLE001 - a plot must never cost a training run
        log.warning("could not plot curves: %s", error)
