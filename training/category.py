"""The category-level task (method.md): separate sketch/photo prompts, triplets of (sketch, photo of
its class, photo of another class), triplet + text-classification loss, validation mAP on held-out
training classes."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from encoder import PromptedCLIP
from encoder.workers import WorkerInit

from .data import BadFiles, CategoryDataset, ClassSplit, TripletBatch, TripletDataset, class_text
from .data import collate_triplets as collate
from .evaluate import evaluate_category
from .loop import DistInfo, current_dist
from .losses import DEFAULT_MARGIN, category_loss
from .samplers import category_triplets, shard

log = logging.getLogger(__name__)


@dataclass
class CategoryOptions:
    batch_size: int = 192
    workers: int = 8
    margin: float = DEFAULT_MARGIN  # μ of the triplet loss
    cls_weight: float = 0.5  # λ1 of the classification loss (0 switches it off)
    seed: int = 0
    augment: bool = True  # train-time photo/sketch augmentation of the encoder's preprocessor
    # "shuffled" (ours): every batch mixes classes; "official": class runs in a fixed order, as the official code
    sampler: str = "shuffled"
    eval_batch_size: int = 256


def zero_loss(encoder: PromptedCLIP) -> torch.Tensor:
    """A zero that still touches every learned tensor (a batch whose files were all unreadable)."""
    return sum(p.sum() * 0.0 for p in encoder.trainable_parameters().values())


class CategoryTask:
    name = "category"
    selection_metric = "val_map_all"

    def __init__(self, data: CategoryDataset, split: ClassSplit, encoder: PromptedCLIP, options: CategoryOptions,
                 dist: DistInfo | None = None) -> None:
        if len(split.val) == 1:  # every validation photo is relevant to every query: mAP is 1 whatever the model
            log.warning("the validation slice is one class (%s): its mAP is 1.0 for any model, so best.safetensors "
                        "cannot be chosen on it; raise --val-fraction to hold out at least 2 classes", split.val[0])
        self.options, self.dist, self.split = options, dist or current_dist(), split
        self.preprocess = encoder.preprocess
        self.sketches, self.photos = data.subset(split.train)
        index = {c: i for i, c in enumerate(split.train)}
        self.sketch_labels = [index[s.category] for s in self.sketches]
        self.photo_labels = [index[p.category] for p in self.photos]
        self.val_sketches, self.val_photos = data.subset(split.val)
        # Frozen text tower: class text features are computed once (method.md).
        self.text_features = encoder.text_features([class_text(c) for c in split.train])
        self.logit_scale = encoder.logit_scale
        self.bad = BadFiles()
        self.generator = None  # the augmentations are drawn per triplet (TripletDataset): nothing to keep

    def train_loader(self, epoch: int) -> DataLoader:
        skip_s, skip_p = self.bad.left_out(epoch, self.sketches, self.photos)
        triples = category_triplets(self.sketch_labels, self.photo_labels, seed=self.options.seed, epoch=epoch,
                                    skip_sketches=skip_s, skip_photos=skip_p, order=self.options.sampler)
        triples = shard(triples, self.dist.rank, self.dist.world_size)
        dataset = TripletDataset(self.sketches, self.photos, self.sketch_labels, self.photo_labels, triples,
                                 self.preprocess, train=self.options.augment,
                                 draws=(self.options.seed, epoch, self.dist.rank))
        return DataLoader(dataset, batch_size=self.options.batch_size, shuffle=False,
                          num_workers=self.options.workers, collate_fn=collate,
                          pin_memory=torch.cuda.is_available(), persistent_workers=False,
                          worker_init_fn=WorkerInit())

    def loss(self, encoder: PromptedCLIP, batch: TripletBatch) -> tuple[torch.Tensor, dict[str, float]]:
        self.bad.update(batch.bad)
        if len(batch) == 0:
            return zero_loss(encoder), {}
        sketch = encoder.encode_sketch(batch.sketch)
        photos = encoder.encode_photo(torch.cat([batch.positive, batch.negative]))
        positive, negative = photos.chunk(2)
        return category_loss(sketch, positive, negative, batch.labels.to(sketch.device), self.text_features,
                             self.logit_scale, margin=self.options.margin, cls_weight=self.options.cls_weight)

    def validate(self, encoder: PromptedCLIP) -> dict[str, float]:
        if not self.split.val:  # --val-fraction 0: nothing to select on, the loop keeps last.safetensors
            return {}
        evaluation = evaluate_category(encoder, self.val_sketches, self.val_photos,
                                       batch_size=self.options.eval_batch_size, workers=self.options.workers,
                                       progress=False, bad=self.bad)
        return {f"val_{k}": float(v) for k, v in evaluation.summary.items() if not k.startswith("n_")}
