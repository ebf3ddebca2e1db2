"""The fine-grained (cross-category) ZS-SBIR task for the one training loop (method.md, "Fine-grained").

One prompt shared by sketches and photos (``PromptConfig(shared=True)``). The objective

    L = L_tri_hard + λ2 (L_cls(sketch) + L_cls(photo)) + λ3 L_δ + λ4 L_PS

has a hard triplet (negative = another photo of the sketch's own category), the text
classification loss shared with the category-level task, the relative-separation regulariser L_δ
and the patch-shuffling triplet L_PS; each extra term is switched off by a zero weight.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from encoder import PromptedCLIP
from encoder.workers import WorkerInit

from .category import zero_loss
from .data import BadFiles, ClassSplit, DataError, TripletBatch, TripletDataset, class_text, collate_triplets
from .evaluate import embed_samples
from .fg_losses import DELTA_ORDERS, patch_shuffle, relative_separation_loss, separation, shuffle_permutations
from .fg_metrics import DEFAULT_KS, GALLERIES, fine_grained_accuracy
from .loop import DistInfo, current_dist
from .losses import DEFAULT_MARGIN, category_loss, triplet_loss
from .pairs import PairedData, PairSet
from .pk_sampler import hard_triplet_batches, unusable_categories
from .report import format_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FineGrainedLossConfig:
    """Loss weights and margins; defaults from method.md (values marked (?) there are unverified)."""

    margin: float = DEFAULT_MARGIN  # μ of the hard triplet
    cls_weight: float = 0.5  # λ2
    delta_weight: float = 0.1  # λ3
    ps_weight: float = 1.0  # λ4
    ps_margin: float | None = None  # μ_ps; None = μ
    grid: int = 2  # n of the n×n patch-shuffling grid
    delta_order: str = "paper"  # L_δ: δ in batch order (Eq. 4 as written) or "sorted" (ours), fg_losses.DELTA_ORDERS

    def __post_init__(self) -> None:
        if min(self.margin, self.cls_weight, self.delta_weight, self.ps_weight) < 0:
            raise ValueError("loss weights and margins must be >= 0")
        if self.delta_order not in DELTA_ORDERS:
            raise ValueError(f"delta_order must be one of {', '.join(DELTA_ORDERS)}, got {self.delta_order!r}")
        if self.ps_weight and self.grid < 2:
            raise ValueError(f"patch shuffling needs a grid of at least 2, got {self.grid}")


def balanced_positions(groups: torch.Tensor) -> torch.Tensor:
    """Positions keeping the first m items of every group, m = the smallest group's size.

    P×K batches are balanced already; this only matters when unreadable files were dropped.
    """
    _, counts = torch.unique(groups, return_counts=True)
    smallest = int(counts.min())
    keep = torch.zeros_like(groups, dtype=torch.bool)
    for value in torch.unique(groups):
        keep[torch.nonzero(groups == value).flatten()[:smallest]] = True
    return torch.nonzero(keep).flatten()


def fine_grained_loss(
    encoder: PromptedCLIP,
    batch: TripletBatch,
    text_features: torch.Tensor | None,
    config: FineGrainedLossConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The total loss of one batch and its parts (floats, for logging)."""
    sketch_in, photo_in = batch.sketch.to(encoder.device), batch.positive.to(encoder.device)
    sketch = encoder.encode_sketch(sketch_in)
    photo, negative = encoder.encode_photo(torch.cat([photo_in, batch.negative.to(encoder.device)])).chunk(2)
    labels = batch.labels.to(encoder.device)
    total, parts = category_loss(
        sketch,
        photo,
        negative,
        labels,
        text_features,
        encoder.logit_scale,
        margin=config.margin,
        cls_weight=config.cls_weight,
    )
    if config.delta_weight:
        keep = balanced_positions(labels)
        delta = separation(sketch[keep], photo[keep], negative[keep])
        loss_delta = relative_separation_loss(delta, labels[keep], config.delta_order)
        total = total + config.delta_weight * loss_delta
        parts["loss_delta"] = float(loss_delta.detach())
    if config.ps_weight:
        gamma1, gamma2 = shuffle_permutations(len(batch), config.grid, generator=generator, device=sketch_in.device)
        shuffled_sketch = encoder.encode_sketch(patch_shuffle(sketch_in, gamma1, config.grid))
        both = torch.cat([patch_shuffle(photo_in, gamma1, config.grid), patch_shuffle(photo_in, gamma2, config.grid)])
        shuffled_photo, reshuffled_photo = encoder.encode_photo(both).chunk(2)  # p^γ1 (positive), p^γ2 (negative)
        margin = config.margin if config.ps_margin is None else config.ps_margin
        loss_ps = triplet_loss(shuffled_sketch, shuffled_photo, reshuffled_photo, margin)
        total = total + config.ps_weight * loss_ps
        parts["loss_ps"] = float(loss_ps.detach())
    parts["loss"] = float(total.detach())
    return total, parts


# ----------------------------------------------------------------------------------- evaluation
@dataclass
class FineGrainedEvaluation:
    summary: dict  # {"within_category": {"acc_1": ...}, "all_photos": {...}, "n_queries", "n_gallery", ...}
    bad: BadFiles


def evaluate_fine_grained(
    encoder: PromptedCLIP,
    pairs: PairSet,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 128,
    workers: int = 0,
    progress: bool = True,
    bad: BadFiles | None = None,
    amp: bool = False,
) -> FineGrainedEvaluation:
    """acc@k of every sketch in ``pairs`` against all its categories' photos, in both galleries.

    Each image is embedded once. Unreadable photos leave the gallery; sketches that are unreadable or
    whose own photo is are no queries. Both are counted in ``n_unreadable``; ``bad``: where they are
    recorded (a training task passes its own, so each file is warned about once per run). ``amp``:
    embed under CUDA autocast (default fp32).
    """
    bad = BadFiles() if bad is None else bad
    was_training = encoder.training
    encoder.eval()
    try:
        photos, photo_kept = embed_samples(encoder, pairs.photos, pairs.photo_labels, "photo", batch_size=batch_size,
                                           workers=workers, bad=bad, progress=progress, amp=amp)
        sketches, sketch_kept = embed_samples(encoder, pairs.sketches, pairs.sketch_labels, "sketch",
                                              batch_size=batch_size, workers=workers, bad=bad, progress=progress,
                                              amp=amp)
    finally:
        encoder.train(was_training)
    gallery_position = torch.full((len(pairs.photos),), -1, dtype=torch.long)
    gallery_position[torch.as_tensor(photo_kept, dtype=torch.long)] = torch.arange(len(photo_kept))
    targets = gallery_position[torch.as_tensor(pairs.partners, dtype=torch.long)[sketch_kept]]
    queries = targets >= 0
    if not bool(queries.any()):
        raise ValueError(f"Nothing to evaluate: no readable sketch has a readable photo ({len(sketch_kept)} "
                         f"readable sketches, {len(photo_kept)} readable photos).")
    sketch_labels = torch.as_tensor(pairs.sketch_labels)[sketch_kept][queries]
    photo_labels = torch.as_tensor(pairs.photo_labels)[photo_kept]
    scores = fine_grained_accuracy(sketches[queries], photos, targets[queries], sketch_labels, photo_labels, ks)
    summary = {**scores, "n_queries": int(queries.sum()), "n_gallery": len(photo_kept),
               "n_classes": len(pairs.classes), "n_unreadable": len(bad),
               **gallery_sizes(sketch_labels, photo_labels, pairs.classes, ks)}
    return FineGrainedEvaluation(summary, bad)


def gallery_sizes(sketch_labels: torch.Tensor, photo_labels: torch.Tensor, classes: Sequence[str],
                  ks: Sequence[int]) -> dict:
    """Photos per category, and where acc@k says nothing: acc@k is 1 for every query of a category holding ≤ k
    photos (within the category; for the all-photos gallery, when it holds ≤ k). Chance level (a random ranking's
    expected acc@k, min(k, n) / n averaged over the queries) is given beside every acc@k."""
    per_category = torch.bincount(photo_labels, minlength=len(classes))
    queried = torch.unique(sketch_labels)
    sizes = per_category[sketch_labels].double()  # each query's own category gallery
    n_all = int(photo_labels.numel())
    smallest = int(per_category[queried].min())
    return {
        "gallery_per_category": {classes[int(c)]: int(per_category[c]) for c in queried},
        "smallest_category_gallery": smallest,
        "chance": {
            "within_category": {f"acc_{k}": float((sizes.clamp(max=k) / sizes).mean()) for k in ks},
            "all_photos": {f"acc_{k}": min(k, n_all) / n_all for k in ks},
        },
        "not_meaningful": {
            "within_category": [f"acc_{k}" for k in ks if smallest <= k],
            "all_photos": [f"acc_{k}" for k in ks if n_all <= k],
        },
    }


def flat_metrics(summary: dict, prefix: str = "") -> dict[str, float]:
    """``{"acc_1": ..., "acc_1_all": ...}``: within-category keys plain, all-photos keys with ``_all``."""
    flat = {f"{prefix}{k}": v for k, v in summary["within_category"].items()}
    flat |= {f"{prefix}{k}_all": v for k, v in summary["all_photos"].items()}
    return flat


def write_fine_grained_json(evaluation: FineGrainedEvaluation, path: str | Path, extra: dict | None = None) -> None:
    """``{"within_category": {"acc_1", "acc_5", "acc_10"}, "all_photos": {...}, "n_queries", ...}`` + ``extra``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    payload = {**evaluation.summary, **(extra or {}), "unreadable_files": evaluation.bad.errors}
    Path(path).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


PROTOCOL_GALLERY = ("the standard protocol's gallery: Sketchy basic's 100 photos per category (2,100 for the 21 "
                    "unseen classes), so within-category acc@k ranks each sketch's photo among 100; the official "
                    "code's instance-level check ranks among its test sketches' paired photos, one entry per sketch, "
                    "all categories together")


def print_fine_grained(name: str, summary: dict) -> None:
    """One table row per gallery, chance level beside it, a warning for every acc@k that cannot mean anything."""
    keys = [*summary["within_category"], "n_queries", "n_gallery"]
    rows = {}
    for gallery in GALLERIES:
        rows[f"{name} [{gallery}]"] = {**summary[gallery], "n_queries": summary["n_queries"],
                                       "n_gallery": summary["n_gallery"]}
        rows[f"chance [{gallery}]"] = summary["chance"][gallery]
    print(format_table(rows, keys))
    sizes = summary["gallery_per_category"]
    print(f"photos per category: {min(sizes.values())}-{max(sizes.values())} "
          f"({', '.join(f'{c} {n}' for c, n in sorted(sizes.items()))}); {PROTOCOL_GALLERY}")
    for gallery in GALLERIES:
        for key in summary["not_meaningful"][gallery]:
            where = (f"a category holds only {summary['smallest_category_gallery']} photos"
                     if gallery == "within_category" else f"the gallery holds only {summary['n_gallery']} photos")
            print(f"warning: {key} [{gallery}] is not meaningful: {where} (<= k), so its queries score 1 whatever "
                  f"the model; chance level {summary['chance'][gallery][key]:.3f}", file=sys.stderr)


# ----------------------------------------------------------------------------------- the task
@dataclass
class FineGrainedOptions:
    categories_per_batch: int = 16  # P
    pairs_per_category: int = 4  # K (a batch holds P × K triplets)
    workers: int = 8
    seed: int = 0
    # Off by default: independent random flips/crops of a sketch and its photo break the very spatial
    # correspondence fine-grained matching learns (the category-level task augments).
    augment: bool = False
    eval_batch_size: int = 256
    losses: FineGrainedLossConfig = field(default_factory=FineGrainedLossConfig)


class FineGrainedTask:
    """Fine-grained ZS-SBIR for :func:`training.loop.train`: P×K hard-triplet batches, the four losses, and
    acc@k on the validation classes (checkpoints are picked on within-category acc@1)."""

    name = "fine-grained"
    selection_metric = "val_acc_1"

    def __init__(self, data: PairedData, split: ClassSplit, encoder: PromptedCLIP, options: FineGrainedOptions,
                 dist: DistInfo | None = None) -> None:
        self.options, self.dist, self.split = options, dist or current_dist(), split
        self.preprocess = encoder.preprocess
        self.pairs = data.subset(split.train)
        self.left_out = unusable_categories(self.pairs.sketch_labels, self.pairs.photo_labels,
                                            options.pairs_per_category)
        self._warn_left_out()
        self.val_pairs = data.subset(split.val, gallery="paired")  # scored as the test protocol is
        # Frozen text tower: class text features are computed once (method.md).
        self.text_features = encoder.text_features([class_text(c) for c in self.pairs.classes])
        self.bad = BadFiles()  # unreadable training files: skipped from the next epoch on
        self.generator = torch.Generator().manual_seed(options.seed)  # patch-shuffling permutations
        losses, size = options.losses, self.preprocess.image_size
        if losses.ps_weight and losses.grid > size:  # refused now, not after the first validation
            raise DataError(f"A {losses.grid}×{losses.grid} patch-shuffling grid does not fit the model's "
                            f"{size}×{size} input: choose --grid of at most {size}.")
        try:  # fail now, not after the first validation, when the data cannot fill a P×K batch
            if not self._batches(0):
                raise ValueError("the training pairs do not fill a single batch")
        except ValueError as error:
            raise DataError(f"Fine-grained batches of {options.categories_per_batch} categories x "
                            f"{options.pairs_per_category} pairs: {error}.") from error

    def usable(self) -> str:
        """How much of the training split can fill P×K batches, for the start-of-run description."""
        pairs = sum(1 for label in self.pairs.sketch_labels if label not in self.left_out)
        return (f"{len(self.pairs.classes) - len(self.left_out)} of {len(self.pairs.classes)} training classes, "
                f"{pairs} of {len(self.pairs)} pairs fill P x K batches")

    def _warn_left_out(self) -> None:
        if self.left_out:
            named = "; ".join(f"{self.pairs.classes[label]} ({why})" for label, why in self.left_out.items())
            log.warning("%d training classes never fill a batch and take no part in training: %s",
                        len(self.left_out), named)

    def _batches(self, epoch: int) -> list[list[tuple[int, int, int]]]:
        pairs, options = self.pairs, self.options
        skip_sketches, skip_photos = self.bad.left_out(epoch, pairs.sketches, pairs.photos)
        return hard_triplet_batches(
            pairs.sketch_labels, pairs.partners, pairs.photo_labels,
            options.categories_per_batch, options.pairs_per_category,
            seed=options.seed, epoch=epoch, rank=self.dist.rank, world_size=self.dist.world_size,
            skip_sketches=skip_sketches, skip_photos=skip_photos,
        )

    def train_loader(self, epoch: int) -> DataLoader:
        pairs, options = self.pairs, self.options
        batches = self._batches(epoch)
        triples = [t for batch in batches for t in batch]
        starts = itertools.accumulate((len(b) for b in batches), initial=0)
        positions = [list(range(start, start + len(batch))) for start, batch in zip(starts, batches, strict=False)]
        dataset = TripletDataset(pairs.sketches, pairs.photos, pairs.sketch_labels, pairs.photo_labels, triples,
                                 self.preprocess, train=options.augment, draws=(options.seed, epoch, self.dist.rank))
        return DataLoader(dataset, batch_sampler=positions, collate_fn=collate_triplets,
                          num_workers=options.workers, pin_memory=torch.cuda.is_available(),
                          worker_init_fn=WorkerInit())

    def loss(self, encoder: PromptedCLIP, batch: TripletBatch) -> tuple[torch.Tensor, dict[str, float]]:
        self.bad.update(batch.bad)
        if len(batch) == 0:  # every triplet unreadable: a zero step keeps all DDP ranks in step
            return zero_loss(encoder), {}
        text = self.text_features.to(encoder.device) if self.options.losses.cls_weight else None
        return fine_grained_loss(encoder, batch, text, self.options.losses, self.generator)

    def validate(self, encoder: PromptedCLIP) -> dict[str, float]:
        if not self.split.val:  # --val-fraction 0: nothing to select on, the loop keeps last.safetensors
            return {}
        evaluation = evaluate_fine_grained(encoder, self.val_pairs, batch_size=self.options.eval_batch_size,
                                           workers=self.options.workers, progress=False, bad=self.bad)
        return flat_metrics(evaluation.summary, prefix="val_")
