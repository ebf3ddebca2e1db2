"""``python -m training {category,fine-grained,evaluate} ...``: flags in the paper's spirit, errors as messages.

Each subcommand is an entry of :data:`COMMANDS` (name → (add its arguments, run it)); a new task
adds its own entry and reuses the argument groups defined here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from encoder import EncoderConfig, PromptConfig, SBIRError, add_encoder_args, build_encoder, load_encoder
from encoder.checkpoint import named_device, read_checkpoint
from encoder.config import SKETCH_FRAMINGS, TRAINABLE_SETS, env_activation, env_backbone, env_pretrained
from encoder.folder_lock import FolderBusyError, folder_lock
from encoder.model import PROMPT_INITS
from encoder.precision import add_precision_arg
from encoder.workers import available_cpus

from .data import (
    DEFAULT_AUGMENTATION,
    DEFAULT_VAL_FRACTION,
    CategoryDataset,
    ClassSplit,
    class_key,
    known_splits,
    make_split,
)
from .fg_losses import DELTA_ORDERS
from .galleries import GALLERIES, choose_gallery
from .loop import TrainOptions, check_out_dir, current_dist, init_distributed
from .losses import DEFAULT_MARGIN
from .pairs import GALLERY_CHOICES
from .protocols import compare_counts
from .samplers import CATEGORY_SAMPLERS

log = logging.getLogger("training")


# ------------------------------------------------------------------------------ argument groups
def int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer >= ``minimum`` (and <= ``maximum``), so a bad count is a usage error, not a crash
    mid-run."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {value}")
        return value

    return parse


positive_int, non_negative_int = int_at_least(1), int_at_least(0)
# torch seeds are 64-bit: a larger seed failed deep inside as "Overflow when unpacking long long"; 2**63 - 1 leaves
# room for the per-rank offset (seed + rank)
seed_int = int_at_least(0, 2**63 - 1)


def float_in(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite float in [low, high] ((low, high] with ``low_open``): NaN, infinity or an absurd
    value is a usage error, not a run that diverges to NaN and saves it as its best checkpoint."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value > high or (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"must be a finite number in {'(' if low_open else '['}{low:g}, "
                                             f"{high:g}], got {text!r}")
        return value

    return parse


learning_rate, non_negative_weight = float_in(0.0, 1.0, low_open=True), float_in(0.0, 1e3)
unseen_count = float_in(0.0, 1e6, low_open=True)  # a count (>= 1) or a fraction (< 1) of the classes


# The API, the indexer and training share the device setting (docs/deploy.md)
ENV_DEVICE = "SBIR_DEVICE"


def device_name(text: str) -> str:
    """argparse type: ``auto`` or a torch device (cpu, cuda, cuda:N). argparse converts a string default too, so a
    bad SBIR_DEVICE is a usage error naming it; whether CUDA is there is checked when the device is taken."""
    try:
        named = named_device(text)  # the encoder's rule, as the API's: empty is auto; only cpu and cuda
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a device: use auto, cpu, cuda or cuda:N (the flag, or "
                                         f"{ENV_DEVICE})") from None
    return "auto" if named is None else text.strip()


def add_device_arg(group: argparse._ArgumentGroup, what: str) -> None:
    group.add_argument("--device", type=device_name, default=os.environ.get(ENV_DEVICE, ""),
                       help=f"auto | cpu | cuda | cuda:N{what} (env {ENV_DEVICE}; unset or empty: auto)")


def add_data_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data and split")
    group.add_argument("--data", required=True, help="dataset root holding sketch/<category>/* and photo/<category>/*")
    group.add_argument("--split", default="sketchy21", choices=[*known_splits(), "random", "none"],
                       help="unseen (test) classes: a shipped split, 'random' (seeded, see --n-unseen), or 'none' "
                       "(--data is split already: training trains on all its classes, evaluate scores all of them)")
    group.add_argument("--unseen-classes", "--unseen_classes", metavar="FILE", default=None,
                       help="file with one unseen class per line (overrides --split)")
    group.add_argument("--n-unseen", "--n_unseen", type=unseen_count, default=0.2,
                       help="random split: number (>= 1) or fraction (< 1) of classes held out as unseen")
    group.add_argument("--val-fraction", "--val_fraction", type=float, default=DEFAULT_VAL_FRACTION,
                       help="share of the seen classes held out of training to select checkpoints; 0: train on "
                       "every seen class for --epochs and keep last.safetensors")
    group.add_argument("--seed", type=seed_int, default=0,
                       help="seeds the random split, the validation slice, sampling (0 to 2**63 - 1)")
    group.add_argument("--augmentation", default=DEFAULT_AUGMENTATION,
                       help="raw Sketchy download (sketch/tx_*/<category>, photo/tx_*/<category>): the augmentation "
                       f"folder to read (default {DEFAULT_AUGMENTATION}); ignored for other layouts")


def add_training_encoder_args(parser: argparse.ArgumentParser) -> None:
    """The encoder flags of a training command: ``--checkpoint`` continues that checkpoint only when given on the
    command line (never from SBIR_CHECKPOINT, which names the checkpoint a service serves: a new run would
    quietly fine-tune it, ignoring the prompt flags)."""
    add_encoder_args(parser, checkpoint=False)
    parser.add_argument("--checkpoint", default=None,
                        help="continue training this checkpoint (.safetensors): its prompt settings and framing "
                        "replace the prompt flags (not read from SBIR_CHECKPOINT)")


def add_prompt_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("prompts")
    group.add_argument("--n_prompts", "--n-prompts", type=int, default=3)
    group.add_argument("--prompt-depth", "--prompt_depth", choices=["shallow", "deep"], default="shallow")
    group.add_argument("--prompt-init", choices=list(PROMPT_INITS), default="normal",
                       help="fresh prompts from N(0, 1) as the official code (normal), or N(0, 1/width) (scaled)")
    group.add_argument("--separate-ln", "--separate_ln", action="store_true",
                       help="separate LayerNorm parameters per modality")
    group.add_argument("--no-ln-tuning", "--no_ln_tuning", action="store_true", help="freeze the LayerNorms")
    group.add_argument("--trainable", choices=list(TRAINABLE_SETS), default="prompts+ln",
                       help="what is learned: prompts + LayerNorms (default), or 'official' (as the official code's "
                       "freezing: also QKV in-projections, class/positional embeddings, visual projection, at the "
                       "LayerNorm lr) to reproduce its numbers")
    group.add_argument("--sketch-framing", "--sketch_framing", choices=list(SKETCH_FRAMINGS), default="canvas",
                       help="how training sketches are framed: the whole canvas padded to square (canvas, default: "
                       "a stroke keeps its place in the frame it shares with its photo, as in the official code), "
                       "or cropped to the ink (ink); recorded in the checkpoint, evaluation follows it")


def add_train_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("optimisation")
    group.add_argument("--prompt_lr", "--prompt-lr", type=learning_rate, default=1e-4)
    group.add_argument("--clip_LN_lr", "--clip-ln-lr", dest="ln_lr", type=learning_rate, default=1e-6)
    group.add_argument("--weight_decay", "--weight-decay", type=non_negative_weight, default=0.0,
                       help="AdamW, prompts only")
    group.add_argument("--batch_size", "--batch-size", type=positive_int, default=192)
    group.add_argument("--workers", type=non_negative_int, default=8, help="DataLoader worker processes")
    group.add_argument("--epochs", type=positive_int, default=60)
    group.add_argument("--out", required=True, help="run folder: checkpoints, log.csv, curves.png")
    group.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    group.add_argument("--refit", action="store_true",
                       help="select the epoch count on the validation slice (run in OUT/select), then retrain on "
                       "every seen class for that many epochs (OUT/last.safetensors): the paper's training set")
    group.add_argument("--max-steps", "--max_steps", type=non_negative_int, default=None,
                       help="stop after this many steps")
    group.add_argument("--log-every", "--log_every", type=positive_int, default=10, help="steps between CSV log rows")
    group.add_argument("--no-amp", "--no_amp", action="store_true", help="full precision on CUDA")
    group.add_argument("--no-augment", "--no_augment", action="store_true", help="no train-time augmentation")
    add_device_arg(group, " (under torchrun: this rank's GPU)")
    group.add_argument("--no-progress", "--no_progress", action="store_true", help="no progress bars")


def train_options(args: argparse.Namespace) -> TrainOptions:
    earlier = trained_classes_of(args.checkpoint) if args.checkpoint else []
    return TrainOptions(epochs=args.epochs, prompt_lr=args.prompt_lr, ln_lr=args.ln_lr,
                        weight_decay=args.weight_decay, amp=not args.no_amp, seed=args.seed, resume=args.resume,
                        max_steps=args.max_steps, log_every=args.log_every, progress=not args.no_progress,
                        earlier_classes=None if earlier is None else tuple(earlier))


def split_from_args(args: argparse.Namespace, data: CategoryDataset, *, for_training: bool = True) -> ClassSplit:
    n_unseen = int(args.n_unseen) if args.n_unseen >= 1 else args.n_unseen
    return make_split(data.classes, split=args.split, unseen_file=args.unseen_classes, n_unseen=n_unseen,
                      val_fraction=args.val_fraction, seed=args.seed, for_training=for_training)


def training_encoder(args: argparse.Namespace, device: torch.device, *, shared: bool):
    """A fresh prompted encoder from the flags, or the one in --checkpoint to continue training it."""
    if args.checkpoint:
        encoder = load_encoder(args.checkpoint, backbone=args.backbone, pretrained=args.pretrained,
                               activation=args.activation, device=device)
        print(f"starting from {args.checkpoint}: its prompts ({encoder.config.prompts}) and sketch framing "
              f"({encoder.config.sketch_framing}) are kept; the prompt flags do not apply")
        return encoder
    prompts = PromptConfig(n_prompts=args.n_prompts, depth=args.prompt_depth, shared=shared,
                           separate_ln=args.separate_ln, tune_ln=not args.no_ln_tuning, trainable=args.trainable)
    torch.manual_seed(args.seed)  # prompt initialisation
    activation = env_activation() if args.activation in (None, "auto") else args.activation
    config = EncoderConfig(backbone=args.backbone or env_backbone(), pretrained=args.pretrained or env_pretrained(),
                           prompts=prompts, activation=activation, sketch_framing=args.sketch_framing)
    return build_encoder(config, device, prompt_init=args.prompt_init)


# What a resumed run must keep, by what each flag defines (docs/training.md, "Resuming"). Every other flag (--epochs,
# --max-steps, --workers, --device, --log-every, --no-progress, --data) says how long, where or how visibly the run
# goes on, not what it learns, and may change; the split, the task and the encoder config are compared whole.
RUN_DEFINING_FLAGS = (
    # every batch, its size, its order or the files it reads: the saved position counts batches of that size, in
    # that order, over those files (another seed would train some sketches of the epoch twice and others never)
    "batch_size", "pairs_per_category", "seed", "sampler", "augmentation",
    # the objective: a loss changed mid-run trains a model that no single setting describes
    "margin", "cls_weight", "delta_weight", "ps_weight", "ps_margin", "grid", "delta_order", "no_augment", "augment",
    # the optimisation: the saved optimiser state carries the old learning rates and weight decay (a new one would
    # be ignored while run.json reported it)
    "prompt_lr", "ln_lr", "weight_decay", "no_amp",
    # its recipe (not --checkpoint: on resume it only names the config, which is compared whole, and a start file
    # moved since, or named by another path, must not block the run)
    "prompt_init", "refit",
)
FLAG_NAMES = {"ln_lr": "clip_LN_lr"}  # dests whose flag is spelled otherwise
NOT_A_CHANGE = ("resume",)  # --resume says how this process started, not what the run is


def write_run_record(out: Path, args: argparse.Namespace, split: ClassSplit, encoder,
                     extra: dict | None = None) -> None:
    """``run.json``: flags, class split and encoder (+ ``extra``); a resumed run must have the same split, task,
    encoder and :data:`RUN_DEFINING_FLAGS`, and its record keeps every resume's changed flags (``resumes``)."""
    check_out_dir(out, args.resume)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "run.json"
    record = {"args": {k: v for k, v in vars(args).items() if k != "func"},
              "split": split.to_dict(), "encoder": encoder.config.to_dict(), **(extra or {})}
    if args.resume and path.is_file():  # refuse before writing: a refused resume leaves the run's record intact
        before = _run_record(path)
        _check_resumable(path, before, record, args)
        record["resumes"] = [*_list(before.get("resumes")), {"changed": _changed_flags(before, record)}]
    path.write_text(json.dumps(record, indent=2) + "\n")


def check_resume_flags(out: Path, args: argparse.Namespace) -> None:
    """Refuse at once (before any encoder is built or any selection run trained) a ``--resume`` of the run in
    ``out`` as another task or under other :data:`RUN_DEFINING_FLAGS`."""
    path = out / "run.json"
    if args.resume and path.is_file():
        _check_same_flags(path, _was_args(_run_record(path)), args)


def _check_resumable(path: Path, before: dict, record: dict, args: argparse.Namespace) -> None:
    """Refuse a resume under another split, task, encoder or run-defining flag."""
    if before.get("split") != record["split"]:
        raise SBIRError(f"{path} was trained on another class split; refusing to resume with this one.")
    _check_same_flags(path, _was_args(before), args)
    if before.get("encoder") != record["encoder"]:
        raise SBIRError(f"{path} was trained with encoder {before.get('encoder')}; refusing to resume it with "
                        f"{record['encoder']} (resume with the flags it was trained with).")


def _check_same_flags(path: Path, was_args: dict, args: argparse.Namespace) -> None:
    """The task and every run-defining flag as recorded, or one line naming each difference, old and new."""
    if was_args.get("command") != getattr(args, "command", None):
        raise SBIRError(f"{path} is a {was_args.get('command')} run; "
                        f"refusing to resume it as {getattr(args, 'command', None)}.")
    # a flag the old record lacks (a run started before it existed) cannot be compared
    differing = [flag for flag in RUN_DEFINING_FLAGS
                 if flag in was_args and was_args[flag] != getattr(args, flag, None)]
    if differing:
        was = ", ".join(_shown(flag, was_args[flag]) for flag in differing)
        now = ", ".join(_shown(flag, getattr(args, flag, None)) for flag in differing)
        raise SBIRError(f"{path} was trained with {was}; refusing to resume it with {now} (these define the run: "
                        "resume with the values it was trained with, or start a new run in another --out).")


def _changed_flags(before: dict, record: dict) -> dict:
    """``{flag: {"was": ..., "now": ...}}`` for the flags a resume changed (those it may: --epochs, --workers, ...)."""
    was_args, now_args = _was_args(before), record["args"]
    return {flag: {"was": was_args.get(flag), "now": now_args.get(flag)}
            for flag in sorted(set(was_args) | set(now_args))
            if flag not in NOT_A_CHANGE and was_args.get(flag) != now_args.get(flag)}


def _was_args(record: dict) -> dict:
    return record.get("args") if isinstance(record.get("args"), dict) else {}


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _shown(flag: str, value) -> str:
    """A flag as a command line gives it: ``--margin 0.2``, ``--no_amp``, or ``no --checkpoint`` when unset."""
    name = f"--{FLAG_NAMES.get(flag, flag)}"
    if value is None or value is False:
        return f"no {name}"
    return name if value is True else f"{name} {value}"


# ------------------------------------------------------------------------------ category
def add_category_args(parser: argparse.ArgumentParser) -> None:
    add_training_encoder_args(parser)
    add_data_args(parser)
    add_prompt_args(parser)
    add_train_args(parser)
    group = parser.add_argument_group("losses")
    group.add_argument("--margin", type=non_negative_weight, default=DEFAULT_MARGIN,
                       help=f"triplet margin μ on d = 1 - cos (default {DEFAULT_MARGIN}, the official code's; "
                       "0.3: the paper's as secondary summaries report it)")
    group.add_argument("--cls_weight", "--cls-weight", "--lambda1", type=non_negative_weight, default=0.5,
                       help="λ1: weight of the text classification loss (sketch + photo); 0 switches it off")
    group.add_argument("--sampler", choices=list(CATEGORY_SAMPLERS), default="shuffled",
                       help="batch order: shuffled (default: every batch mixes classes, new order each epoch), or "
                       "official (class after class in a fixed order, as the official code's unshuffled loader)")


def run_category(args: argparse.Namespace) -> int:
    from .category import CategoryOptions, CategoryTask

    rank, device = init_distributed(args.device)
    data = CategoryDataset.scan(args.data, args.augmentation)
    options = CategoryOptions(batch_size=args.batch_size, workers=args.workers, margin=args.margin,
                              cls_weight=args.cls_weight, seed=args.seed, augment=not args.no_augment,
                              sampler=args.sampler)

    def make_task(split: ClassSplit, encoder):
        return CategoryTask(data, split, encoder, options, rank)

    def describe(task, encoder) -> str:
        split = task.split
        return (f"classes: {len(split.train)} train, {len(split.val)} validation, {len(split.test)} unseen "
                f"({split.source}); encoder {encoder.config.backbone}/{encoder.config.pretrained} on {device}"
                f"{' (RANDOM WEIGHTS)' if encoder.random_weights else ''}; {rank.world_size} process(es)")

    return train_recipe(args, data, make_task, describe, device, shared=False, evaluate_flags=())


# ------------------------------------------------------------------------------ recipes
def train_recipe(args: argparse.Namespace, data, make_task, describe, device: torch.device, *, shared: bool,
                 evaluate_flags: Sequence[str]) -> int:
    """One run on the split (``--val-fraction 0``: on every seen class, keeping ``last``), or with
    ``--refit`` two: the epoch count chosen on the validation slice in ``OUT/select``, then a fresh
    run on every seen class for that many epochs in ``OUT``."""
    rank = current_dist()
    split, out = split_from_args(args, data), Path(args.out)
    check_resume_flags(out, args)
    if not args.refit:
        task, result = _train_run(args, split, make_task, describe, device, shared=shared, out=out,
                                  epochs=args.epochs)
    else:
        if not split.val:
            raise SBIRError("--refit selects the epoch count on the validation slice: give --val-fraction > 0.")
        check_out_dir(out, args.resume)  # refuse now, not after the whole selection run
        _, selection = _train_run(args, split, make_task, describe, device, shared=shared, out=out / "select",
                                  epochs=args.epochs)
        if not selection.best_epoch:
            raise SBIRError(f"The selection run in {out / 'select'} stopped before an epoch was validated "
                            "(--max-steps?): there is no epoch count to refit with.")
        refit = {"refit": {"epochs": selection.best_epoch, "selection_run": str(out / "select"),
                           "selection_metric": selection.best_metric}}
        if rank.is_main:
            print(f"refit: {selection.best_epoch} epoch(s) selected on the validation slice "
                  f"({selection.best_metric:.4f}); retraining on all {len(split.train) + len(split.val)} seen classes")
        task, result = _train_run(args, split.without_validation(), make_task, describe, device, shared=shared,
                                  out=out, epochs=selection.best_epoch, extra=refit)
    if rank.is_main:
        _report_run(args, task, result, out, evaluate_flags=evaluate_flags)
    return 0


def _train_run(args, split: ClassSplit, make_task, describe, device, *, shared: bool, out: Path, epochs: int,
               extra: dict | None = None):
    from .loop import train

    rank = current_dist()
    encoder = training_encoder(args, device, shared=shared)
    task = make_task(split, encoder)  # refuses unusable data before anything is written
    with _run_lock(out):
        if rank.is_main:
            write_run_record(out, args, split, encoder, extra)
            print(describe(task, encoder))  # the task's own view: what of the split it can use
        options = train_options(args)
        options.epochs = epochs
        return task, train(task, encoder, options, out)


@contextlib.contextmanager
def _run_lock(out: Path) -> Iterator[None]:
    """One training run at a time per run folder (rank 0 holds it: the other ranks write nothing)."""
    with contextlib.ExitStack() as held:
        if current_dist().is_main:
            out.mkdir(parents=True, exist_ok=True)
            try:
                held.enter_context(folder_lock(out))
            except FolderBusyError as error:
                raise SBIRError(f"Another training run is using {out} ({error.holder}): let it finish, or choose "
                                "another --out.") from None
        yield


# ------------------------------------------------------------------------------ fine-grained
def add_fine_grained_args(parser: argparse.ArgumentParser) -> None:
    add_training_encoder_args(parser)
    add_data_args(parser)
    add_prompt_args(parser)
    add_train_args(parser)
    parser.set_defaults(batch_size=64)
    parser.description = (f"{parser.description}. --data is a folder in Sketchy's layout "
                          "(sketch/<c>/<photo_id>-<n>.png drawn from photo/<c>/<photo_id>.jpg) or a CSV of "
                          "sketch,photo[,category] paths; --batch_size = P categories x K pairs.")
    group = parser.add_argument_group("fine-grained batches and losses (0 switches a term off)")
    group.add_argument("--pairs-per-category", "--pairs_per_category", type=positive_int, default=4,
                       help="K: pairs per category in a batch; P = batch_size // K categories")
    group.add_argument("--augment", action="store_true",
                       help="train-time augmentation (off: independent flips/crops break sketch-photo alignment)")
    group.add_argument("--margin", type=non_negative_weight, default=DEFAULT_MARGIN,
                       help=f"μ of the hard triplet on d = 1 - cos (default {DEFAULT_MARGIN}, the official code's; "
                       "0.3: the paper's as secondary summaries report it)")
    group.add_argument("--cls_weight", "--cls-weight", "--lambda2", type=non_negative_weight, default=0.5,
                       help="λ2: text classification loss (sketch + photo)")
    group.add_argument("--delta_weight", "--delta-weight", "--lambda3", type=non_negative_weight, default=0.1,
                       help="λ3: relative-separation regulariser L_δ")
    group.add_argument("--ps_weight", "--ps-weight", "--lambda4", type=non_negative_weight, default=1.0,
                       help="λ4: patch-shuffling triplet L_PS")
    group.add_argument("--ps_margin", "--ps-margin", type=non_negative_weight, default=None,
                       help="μ_ps (default: --margin)")
    group.add_argument("--grid", type=positive_int, default=2, help="n of the n x n patch-shuffling grid")
    group.add_argument("--delta-order", "--delta_order", choices=list(DELTA_ORDERS), default="paper",
                       help="L_δ: each category's δ in batch order before the softmax (paper, Eq. 4 as written), or "
                       "sorted (ours: independent of the order the sampler drew the triplets in)")


def run_fine_grained(args: argparse.Namespace) -> int:
    from .fine_grained import FineGrainedLossConfig, FineGrainedOptions, FineGrainedTask
    from .pairs import load_pairs

    rank, device = init_distributed(args.device)
    data = load_pairs(args.data, args.augmentation)
    if args.batch_size < args.pairs_per_category:
        raise SBIRError(f"--batch_size {args.batch_size} is smaller than --pairs-per-category "
                        f"{args.pairs_per_category}")
    losses = FineGrainedLossConfig(margin=args.margin, cls_weight=args.cls_weight, delta_weight=args.delta_weight,
                                   ps_weight=args.ps_weight, ps_margin=args.ps_margin, grid=args.grid,
                                   delta_order=args.delta_order)
    options = FineGrainedOptions(categories_per_batch=args.batch_size // args.pairs_per_category,
                                 pairs_per_category=args.pairs_per_category, workers=args.workers, seed=args.seed,
                                 augment=args.augment and not args.no_augment, losses=losses)
    if args.delta_weight > 0 and (options.categories_per_batch < 2 or options.pairs_per_category < 2):
        # KL between the softmaxes of K deltas, over pairs of P categories: one category or one pair gives 0
        log.warning("L_δ (--delta-weight %g) is 0 with batches of %d categories x %d pairs: it needs at least 2 of "
                    "each (--batch_size = P x --pairs-per-category); the term has no effect", args.delta_weight,
                    options.categories_per_batch, options.pairs_per_category)

    def make_task(split: ClassSplit, encoder):
        if not (encoder.config.prompts and encoder.config.prompts.shared):
            raise SBIRError("Fine-grained training uses one prompt shared by sketches and photos; "
                            f"{args.checkpoint} has separate ones.")
        return FineGrainedTask(data, split, encoder, options, rank)

    def describe(task, encoder) -> str:
        split = task.split
        return (f"pairs: {data.summary()}\n"
                f"classes: {len(split.train)} train, {len(split.val)} validation, {len(split.test)} unseen "
                f"({split.source}); batches of {options.categories_per_batch} x {options.pairs_per_category}: "
                f"{task.usable()}; "
                f"encoder {encoder.config.backbone}/{encoder.config.pretrained} on {device}"
                f"{' (RANDOM WEIGHTS)' if encoder.random_weights else ''}; {rank.world_size} process(es)")

    return train_recipe(args, data, make_task, describe, device, shared=True, evaluate_flags=("--fine-grained",))


def _report_run(args: argparse.Namespace, task, result, out: Path, evaluate_flags: Sequence[str]) -> None:
    """After training: unreadable files, and the command that evaluates the chosen checkpoint."""
    print(f"unreadable files: {task.bad.summary()}")
    if len(task.bad):
        task.bad.write(out / "unreadable_files.json")
    best = result.best_checkpoint or result.last_checkpoint
    print(f"evaluate on the unseen classes with:\n  {evaluate_command(args, best, out, evaluate_flags)}")


def evaluate_command(args: argparse.Namespace, checkpoint: str | Path, out: Path, task_flags: Sequence[str]) -> str:
    """The ``evaluate`` command line for a finished run, shell-quoted (paths may hold spaces), with every data flag
    that changes which files are scored."""
    # --split none: the unseen classes live in another folder, which only the user can name
    data = "UNSEEN_CLASSES_ROOT" if args.split == "none" and not args.unseen_classes else args.data
    argv = ["python", "-m", "training", "evaluate", *task_flags, "--checkpoint", str(checkpoint), "--data", str(data),
            *_split_flags(args)]
    if args.augmentation != DEFAULT_AUGMENTATION:
        argv += ["--augmentation", args.augmentation]
    return shlex.join([*argv, "--json", str(out / "test_metrics.json")])


def _split_flags(args: argparse.Namespace) -> list[str]:
    if args.unseen_classes:
        return ["--unseen-classes", str(args.unseen_classes)]
    if args.split == "random":
        # repr, not :g (6 digits): 0.1666666 printed as 0.166667 drew another split on some class counts
        count = float(args.n_unseen)
        return ["--split", "random", "--n-unseen", str(int(count)) if count.is_integer() else repr(count),
                "--seed", str(args.seed)]
    return ["--split", args.split]


# ------------------------------------------------------------------------------ evaluate
def add_evaluate_args(parser: argparse.ArgumentParser) -> None:
    add_encoder_args(parser)
    add_data_args(parser)
    group = parser.add_argument_group("evaluation")
    group.add_argument("--classes", choices=["test", "val"], default="test",
                       help="score the unseen (test) classes, or the validation slice of the seen ones")
    group.add_argument("--fine-grained", "--fine_grained", action="store_true",
                       help="instance retrieval on sketch-photo pairs (--data: Sketchy layout or pairs CSV): "
                       "acc@1/5/10 within the category and among all test photos")
    group.add_argument("--fg-gallery", "--fg_gallery", choices=list(GALLERY_CHOICES), default="paired",
                       help="fine-grained gallery: the photos the test sketches were drawn from (the protocol: "
                       "Sketchy basic's, also inside Sketchy-Extended's folders), or every photo found")
    group.add_argument("--gallery", choices=list(GALLERIES), default="dedup",
                       help="category-level gallery: every photo found with duplicate images dropped (dedup, "
                       "default: 10,453 photos for sketchy21), or every photo file as the ZSE-SBIR / SAKE test "
                       "lists count them (list: 12,553)")
    group.add_argument("--sketch-framing", "--sketch_framing", choices=["auto", *SKETCH_FRAMINGS], default="auto",
                       help="how test sketches are framed: auto (as the checkpoint was trained; canvas for the "
                       "frozen-CLIP baseline, as the official code), canvas (whole canvas padded square) or ink "
                       "(cropped to the ink)")
    group.add_argument("--allow-seen", "--allow_seen", action="store_true",
                       help="score classes the checkpoint was trained on (refused by default: not zero-shot); the "
                       "overlap is recorded in the JSON (trained_class_overlap)")
    group.add_argument("--json", default=None, help="write the metrics here (map_all, map_200, p_100, p_200, ...)")
    group.add_argument("--per-class", "--per_class", default=None, help="per-class AP CSV")
    group.add_argument("--grid", default=None, help="PNG grid of sample queries and their top-k photos")
    group.add_argument("--out", default=None,
                       help="folder for metrics.json, per_class_ap.csv and queries.png when those are not named")
    group.add_argument("--grid-queries", "--grid_queries", type=non_negative_int, default=8)
    group.add_argument("--top-k", "--top_k", type=positive_int, default=8, help="photos per query in the grid")
    group.add_argument("--grid-tile", "--grid_tile", type=positive_int, default=96, help="grid cell size in pixels")
    group.add_argument("--batch_size", "--batch-size", type=positive_int, default=256)
    group.add_argument("--workers", type=non_negative_int, default=available_cpus(),
                       help="DataLoader worker processes that decode the images (default: the CPUs this process may "
                       "use, %(default)s here)")
    add_device_arg(group, "")
    group.add_argument("--amp", action="store_true",
                       help="embed under CUDA autocast (bf16) as indexing and serving do; default: full precision")
    add_precision_arg(group, default="fp32")  # scores are measured in fp32 unless asked
    group.add_argument("--no-progress", "--no_progress", action="store_true")


def _run_record(path: Path) -> dict:
    """A run's ``run.json``; one that cannot be read, or holds no record, is a clear error naming it."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SBIRError(f"{path} cannot be read ({error}); the run cannot resume from it: start a fresh run in "
                        "another --out.") from None
    if not isinstance(record, dict):
        raise SBIRError(f"{path} holds a {type(record).__name__}, not a run record; the run cannot resume from it.")
    return record


def checkpoint_extra(checkpoint: str | None) -> dict:
    """What a checkpoint says of its training (task, position, metrics, split); ``{}`` for the baseline or a
    checkpoint of another shape."""
    extra = read_checkpoint(checkpoint)[2].get("extra") if checkpoint else None
    return extra if isinstance(extra, dict) else {}


def trained_classes_of(checkpoint: str | None) -> list[str] | None:
    """Every class a checkpoint was trained on, the runs it continued included; None when it records none."""
    return _trained_classes_in(checkpoint_extra(checkpoint))


def _recorded_split(extra: dict) -> dict:
    return extra["split"] if isinstance(extra.get("split"), dict) else {}


def _trained_classes_in(extra: dict) -> list[str] | None:
    trained = extra["trained_classes"] if "trained_classes" in extra else _recorded_split(extra).get("train")
    return [str(name) for name in trained] if isinstance(trained, list) else None


def checkpoint_task(checkpoint: str | None, scored_as: str) -> str | None:
    """The task a checkpoint was trained for (``None``: baseline or unknown); warns when it is not
    ``scored_as``: scoring across tasks is allowed, but a forgotten ``--fine-grained`` must not pass unnoticed."""
    trained = checkpoint_extra(checkpoint).get("task")  # a checkpoint of another shape: task unknown
    if trained and trained != scored_as:
        other = "with --fine-grained" if trained == "fine-grained" else "without --fine-grained"
        print(f"warning: {checkpoint} was trained for the {trained} task but is scored with the {scored_as} "
              f"protocol here (evaluate it {other} for its own task's metrics)", file=sys.stderr)
    return trained


def trained_class_overlap(args: argparse.Namespace, classes: Sequence[str]) -> dict:
    """The scored classes the checkpoint was trained on (names matched as splits match them), for the report.

    Refuses an overlap (its scores are not zero-shot) unless ``--allow-seen``. A checkpoint that records no split
    (written before it was kept, or the frozen-CLIP baseline) is scored as before, saying once that it was not
    checked."""
    extra = checkpoint_extra(args.checkpoint)
    trained_names = _trained_classes_in(extra)
    if trained_names is None:
        what = args.checkpoint or "the frozen-CLIP baseline"
        print(f"note: {what} records no training classes (or continued a checkpoint that recorded none): whether "
              "the scored classes are unseen cannot be checked")
        return {"checked": False, "training_split": None, "classes": []}
    split = _recorded_split(extra)
    trained = {class_key(name) for name in trained_names}
    seen = [name for name in classes if class_key(name) in trained]
    shown = f"{', '.join(seen[:10])}{' ...' if len(seen) > 10 else ''}"
    if seen and not args.allow_seen:
        raise SBIRError(f"{len(seen)} of the {len(classes)} scored classes were training classes of {args.checkpoint} "
                        f"(split {split.get('source') or '?'}): {shown}; their scores are not zero-shot. Score its "
                        "unseen classes (the split it was trained with), or pass --allow-seen to score them anyway.")
    if seen:
        log.warning("--allow-seen: %d of the %d scored classes were training classes of %s: %s", len(seen),
                    len(classes), args.checkpoint, shown)
    return {"checked": True, "training_split": split.get("source"), "classes": seen}


def evaluation_framing(args: argparse.Namespace, encoder) -> str:
    """Frame the test sketches as the encoder's training sketches were (or as asked), and say so."""
    if args.sketch_framing != "auto":
        framing, why = args.sketch_framing, "--sketch-framing"
    elif args.checkpoint:
        framing, why = encoder.config.sketch_framing, "as the checkpoint was trained"
    else:
        framing, why = "canvas", "the benchmark framing, as the official code, for the frozen-CLIP baseline"
    encoder.preprocess.sketch_framing = framing
    print(f"sketch framing: {framing} ({why})")
    return framing


def scored_classes(args: argparse.Namespace, split: ClassSplit) -> list[str]:
    classes = split.test if args.classes == "test" else split.val
    if not classes:  # e.g. --classes val with --split none or --val-fraction 0
        raise SBIRError(f"The split ({split.source}) has no {args.classes} classes to score.")
    return classes


def check_report_paths(args: argparse.Namespace) -> None:
    """Refuse report paths that cannot be written before anything is embedded (on Sketchy that is minutes)."""
    files = [Path(path) for path in (args.json, args.per_class, args.grid) if path]
    for file in files:
        if file.is_dir():
            raise SBIRError(f"The report file {file} is a folder; name a file in it.")
    folders = [Path(args.out)] if args.out else []
    folders += [file.parent for file in files]
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SBIRError(f"The report folder {folder} cannot be made: {error.strerror or error}.") from None
        if not os.access(folder, os.W_OK):
            raise SBIRError(f"The report folder {folder} is not writable.")


def run_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_category, print_summary, scored_precision, write_category_report

    check_report_paths(args)
    if args.fine_grained:
        return run_evaluate_fine_grained(args)
    data = CategoryDataset.scan(args.data, args.augmentation)
    split = split_from_args(args, data, for_training=False)
    classes = scored_classes(args, split)
    encoder = load_encoder(args.checkpoint, backbone=args.backbone, pretrained=args.pretrained,
                           activation=args.activation, device=args.device, precision=args.precision)
    trained_for = checkpoint_task(args.checkpoint, "category")
    overlap = trained_class_overlap(args, classes)
    framing = evaluation_framing(args, encoder)
    sketches, found = data.subset(classes)
    gallery = choose_gallery(found, args.gallery)
    photos = gallery.photos
    name = "frozen CLIP (baseline)" if encoder.config.is_baseline else Path(args.checkpoint).name
    print(f"evaluating {name} on {len(classes)} {args.classes} classes ({split.source}): "
          f"{len(sketches)} sketches x {len(photos)} photos{' (RANDOM WEIGHTS)' if encoder.random_weights else ''}")
    print(gallery.describe())
    counts, standard = compare_counts(split.source, len(sketches), len(photos), gallery=gallery.name)
    print(counts)
    evaluation = evaluate_category(encoder, sketches, photos, batch_size=args.batch_size, workers=args.workers,
                                   keep_top=args.top_k, progress=not args.no_progress, amp=args.amp)
    if len(set(evaluation.gallery_labels.tolist())) == 1:
        log.warning("the gallery is one class (%s): every photo is relevant to every query, so mAP and precision "
                    "are 1.0 for any model; score at least 2 classes", evaluation.classes[evaluation.gallery_labels[0]])
    out = Path(args.out) if args.out else None
    json_path = args.json or (out / "metrics.json" if out else None)
    extra = {"checkpoint": args.checkpoint, "checkpoint_task": trained_for, "encoder": encoder.describe(),
             "classes": classes, "split": split.source, "class_set": args.classes, "standard_test_set": standard,
             "precision": scored_precision(encoder, args.amp), "gallery": gallery.name, "photos_found": len(found),
             "n_duplicates_dropped": len(gallery.duplicates), "sketch_framing": framing,
             "trained_class_overlap": overlap}
    write_category_report(evaluation, json_path=json_path,
                          per_class_csv=args.per_class or (out / "per_class_ap.csv" if out else None),
                          grid_png=args.grid or (out / "queries.png" if out else None),
                          n_grid=args.grid_queries, tile=args.grid_tile, seed=args.seed, extra=extra)
    print_summary(f"{name} [gallery {gallery.name}: {evaluation.summary['n_gallery']:,} photos]", evaluation.summary)
    print(f"unreadable files: {evaluation.bad.summary()}")
    return 0


def run_evaluate_fine_grained(args: argparse.Namespace) -> int:
    from .evaluate import scored_precision
    from .fine_grained import evaluate_fine_grained, print_fine_grained, write_fine_grained_json
    from .pairs import load_pairs

    ignored = [flag for flag, value in (("--per-class", args.per_class), ("--grid", args.grid),
                                        ("--gallery", args.gallery != "dedup")) if value]
    if ignored:
        log.warning("%s: category-level evaluation only; ignored with --fine-grained", ", ".join(ignored))
    data = load_pairs(args.data, args.augmentation)
    split = split_from_args(args, data, for_training=False)
    classes = scored_classes(args, split)
    encoder = load_encoder(args.checkpoint, backbone=args.backbone, pretrained=args.pretrained,
                           activation=args.activation, device=args.device, precision=args.precision)
    trained_for = checkpoint_task(args.checkpoint, "fine-grained")
    overlap = trained_class_overlap(args, classes)
    framing = evaluation_framing(args, encoder)
    pairs = data.subset(classes, gallery=args.fg_gallery)
    name = "frozen CLIP (baseline)" if encoder.config.is_baseline else Path(args.checkpoint).name
    found = sum(len(data.photos[c]) for c in classes)
    print(f"evaluating {name} (fine-grained) on {len(classes)} {args.classes} classes ({split.source}): "
          f"{len(pairs)} sketches x {len(pairs.photos)} photos{' (RANDOM WEIGHTS)' if encoder.random_weights else ''}")
    print(f"gallery: {len(pairs.photos):,} photos ({args.fg_gallery}: "
          + ("the photos the test sketches were drawn from" if args.fg_gallery == "paired" else "every photo found")
          + f"; {found:,} found in these classes)")
    counts, standard = compare_counts(split.source, len(pairs), len(pairs.photos), fine_grained=True)
    print(counts)
    evaluation = evaluate_fine_grained(encoder, pairs, batch_size=args.batch_size, workers=args.workers,
                                       progress=not args.no_progress, amp=args.amp)
    json_path = args.json or (Path(args.out) / "metrics.json" if args.out else None)
    if json_path:
        extra = {"checkpoint": args.checkpoint, "checkpoint_task": trained_for, "encoder": encoder.describe(),
                 "classes": classes, "split": split.source, "class_set": args.classes, "pairs": data.summary(),
                 "gallery": args.fg_gallery, "photos_found": found, "standard_test_set": standard,
                 "precision": scored_precision(encoder, args.amp), "sketch_framing": framing,
                 "trained_class_overlap": overlap}
        write_fine_grained_json(evaluation, json_path, extra)
    print_fine_grained(name, evaluation.summary)
    print(f"unreadable files: {evaluation.bad.summary()}")
    return 0


# ------------------------------------------------------------------------------ entry point
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "category": ("train category-level zero-shot SBIR prompts", add_category_args, run_category),
    "fine-grained": ("train fine-grained (instance-level) zero-shot SBIR prompts on sketch-photo pairs",
                     add_fine_grained_args, run_fine_grained),
    "evaluate": ("score a checkpoint (or the frozen-CLIP baseline) on unseen classes", add_evaluate_args,
                 run_evaluate),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args, run) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_args(sub)
        sub.set_defaults(func=run)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (``docker stop``, a scheduler's kill) taken as Ctrl-C: a run saves where it stands and can resume."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        previous = signal.signal(signal.SIGTERM, _terminated)
    except ValueError:  # not the main thread (a test's or a host's): its own handlers stay
        previous = None
    try:
        return args.func(args)
    except (SBIRError, FileExistsError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:  # torch's: out of memory, an unreadable state file, an absurd allocation
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
