"""Quality of the query kinds on synthetic data (not a test): do words lift sketch search, does `like` find its class.

A tiny CLIP (sbir-tiny: no real weights exist here) is first pretrained contrastively on the synthetic photos and
their class names (--pretrain-steps; 0 keeps the random backbone, whose text tower cannot tell the names apart),
then frozen; its prompts are learned on the synthetic line-pattern classes of the training tests
(tests/training/synthetic_categories.py), with the classification loss that pulls sketches and photos towards the
frozen text tower's prompt for their class. New drawings and
photos of the same classes (another seed) are indexed by index_builder and served by the app in-process;
every query goes through POST /search. Printed (and written as JSON with --json):

* P@10 of every sketch alone, with its class name at each --weights, and of the class name alone;
* P@10 of `like` on every indexed photo (itself left out) ÷ chance ((per-class - 1) / (photos - 1)).

    PYTHONPATH=. python bench/queries.py [--pretrain-steps 400] [--epochs 40] [--cls-weight 3] [--lr-scale 1]
                                         [--weights 0.3 0.5] [--seed 0] [--distinct-names]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from encoder import (  # noqa: E402
    EncoderConfig,
    PromptConfig,
    PromptedCLIP,
    build_backbone,
    build_encoder,
    load_checkpoint,
)
from encoder.model import TEXT_TEMPLATE  # noqa: E402
from index_builder.builder import BuildOptions, build_index  # noqa: E402
from photo_index.backends.folder import IndexReader  # noqa: E402
from tests.training.synthetic_categories import CLASSES, make_dataset  # noqa: E402
from training.category import CategoryOptions, CategoryTask  # noqa: E402
from training.data import CategoryDataset, ClassSplit, known_splits, read_class_list, split_classes_file  # noqa: E402
from training.loop import TrainOptions, train  # noqa: E402


def fresh_encoder(seed: int = 0, pretrained: str = "none") -> PromptedCLIP:
    """The untrained prompted sbir-tiny encoder the synthetic runs start from (``none``: random backbone)."""
    torch.manual_seed(seed)
    return build_encoder(EncoderConfig(backbone="sbir-tiny", pretrained=pretrained, prompts=PromptConfig()), "cpu")


def pretrain_synthetic_clip(data: Path, out: Path, *, steps: int = 400, seed: int = 0) -> Path:
    """A tiny CLIP that knows the synthetic world: both towers of sbir-tiny trained contrastively on the *photos*
    of ``data`` and their class prompts ("a photo of a {class}"), then saved as a plain weights file.

    The stand-in for CLIP's web pretraining, which random weights are not: the frozen text tower then tells the
    classes apart by name, as CLIP's does for real words. Sketches are never seen (the domain gap the prompts close).
    """
    torch.manual_seed(seed)
    backbone = build_backbone("sbir-tiny", "none")
    model = backbone.model.train().requires_grad_(True)
    preprocess = fresh_encoder(seed).preprocess
    classes = sorted(p.name for p in (data / "photo").iterdir() if p.is_dir())
    files = sorted((data / "photo").glob("*/*.jpg"))
    images = torch.stack([preprocess.photo_file(path) for path in files])
    labels = torch.tensor([classes.index(path.parent.name) for path in files])
    tokens = backbone.tokenizer([TEXT_TEMPLATE.format(name) for name in classes])
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(len(images), (64,), generator=generator)
        image_features = F.normalize(model.encode_image(images[batch]), dim=-1)
        text_features = F.normalize(model.encode_text(tokens), dim=-1)
        loss = F.cross_entropy(model.logit_scale.exp() * image_features @ text_features.T, labels[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    path = out / "sbir-tiny-synthetic-clip.pt"
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def name_pool() -> list[str]:
    """Candidate class names: the words of the shipped unseen-class lists (plain nouns)."""
    return sorted({name for split in known_splits() for name in read_class_list(split_classes_file(split))})


@torch.no_grad()
def distinct_names(encoder: PromptedCLIP, pool: Sequence[str], count: int) -> list[str]:
    """`count` names of `pool` whose text-tower prompts are far apart: greedy max-min on their cosines.

    The random text tower maps the patterns' own names ("h2", "h3") to nearly one vector (mean cosine 0.83), so
    a class name could not tell the classes apart; the names are ours to choose, so we choose ones it can.
    """
    features = encoder.text_features(list(pool))
    cosine = features @ features.T
    first, second = divmod(int((cosine + 2 * torch.eye(len(pool))).argmin()), len(pool))
    chosen = [first, second]
    while len(chosen) < count:
        rest = [k for k in range(len(pool)) if k not in chosen]
        chosen.append(min(rest, key=lambda k: float(cosine[k, chosen].max())))
    return [pool[k] for k in chosen]


def synthetic_class_names(seed: int = 0) -> dict[str, str]:
    """Pattern → class folder name: the synthetic classes renamed to names the fresh encoder's text tower separates."""
    return dict(zip(CLASSES, distinct_names(fresh_encoder(seed), name_pool(), len(CLASSES)), strict=True))


def train_synthetic_encoder(data: Path, out: Path, *, epochs: int, cls_weight: float, lr_scale: float = 1.0,
                            seed: int = 0, pretrained: str = "none") -> PromptedCLIP:
    """Prompts learned on every class of `data` (two of them also serve as validation, which the loop needs)."""
    dataset = CategoryDataset.scan(data)
    split = ClassSplit(train=dataset.classes, val=dataset.classes[:2], test=[])
    encoder = fresh_encoder(seed, pretrained)
    task = CategoryTask(dataset, split, encoder, CategoryOptions(batch_size=24, workers=0, augment=False,
                                                                 cls_weight=cls_weight, seed=seed))
    # Random weights need far larger steps than CLIP's 1e-4 / 1e-6 to move in a few epochs (as the training tests).
    options = TrainOptions(epochs=epochs, prompt_lr=1e-2 * lr_scale, ln_lr=1e-1 * lr_scale, progress=False,
                           log_every=10_000, validate_first=False, seed=seed)
    result = train(task, encoder, options, out)
    return load_checkpoint(result.last_checkpoint).eval()


def _precision(body: dict, category: str) -> float:
    results = body["results"]
    return sum(r["category"] == category for r in results) / len(results)


def measure(encoder: PromptedCLIP, data: Path, workdir: Path, weights: Sequence[float] = (0.3,)) -> dict:
    """Index `data`/photo, then P@10 of its sketches (alone, with their class name, the name alone) and of `like`."""
    from fastapi.testclient import TestClient

    index_dir = workdir / "index"
    build_index(encoder, BuildOptions(index_dir=index_dir, gallery=data / "photo", workers=0, faiss_device="cpu",
                                      progress=False))
    with IndexReader.open(index_dir) as reader:
        photos = [(r.id, r.category) for r in reader.records(reader.vectors()[0])]
    sketches = sorted((data / "sketch").glob("*/*.png"))
    alone, text_only = [], []
    composed: dict[float, list[float]] = {w: [] for w in weights}
    app = create_app(Settings(index_dir=index_dir, max_k=10), encoder=encoder)
    with TestClient(app) as client:
        def search(category: str, **fields) -> float:
            files = {"sketch": ("s.png", fields.pop("sketch"), "image/png")} if "sketch" in fields else None
            response = client.post("/search", files=files, data={"k": "10", **fields})
            response.raise_for_status()
            return _precision(response.json(), category)

        for path in sketches:
            category, png = path.parent.name, path.read_bytes()
            alone.append(search(category, sketch=png))
            text_only.append(search(category, text=category))
            for w in weights:
                composed[w].append(search(category, sketch=png, text=category, text_weight=str(w)))
        liked = [search(category, like=str(photo_id)) for photo_id, category in photos]
    per_class = len(photos) / len({c for _, c in photos})
    return {
        "sketches": len(sketches), "photos": len(photos),
        "sketch_p10": float(np.mean(alone)),
        "sketch_text_p10": {str(w): float(np.mean(v)) for w, v in composed.items()},
        "text_p10": float(np.mean(text_only)), "chance": per_class / len(photos),
        "like_p10": float(np.mean(liked)), "like_chance": (per_class - 1) / (len(photos) - 1),
    }


def summary(figures: dict) -> str:
    """The figures as two lines of ratios: words against the sketch alone, like against chance."""
    alone = figures["sketch_p10"]
    lifts = ", ".join(f"w={w} {p:.3f} (×{p / alone:.2f})" for w, p in figures["sketch_text_p10"].items())
    return (f"P@10 sketch alone {alone:.3f}; with its class name: {lifts}; class name alone "
            f"{figures['text_p10']:.3f} (chance {figures['chance']:.3f})\n"
            f"P@10 like {figures['like_p10']:.3f} = ×{figures['like_p10'] / figures['like_chance']:.1f} chance "
            f"({figures['like_chance']:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--cls-weight", type=float, default=3.0, help="λ1 of the classification loss")
    parser.add_argument("--lr-scale", type=float, default=1.0, help="× the training tests' learning rates")
    parser.add_argument("--per-class", type=int, default=12, help="sketches and photos per class, train and test")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.3, 0.5])
    parser.add_argument("--seed", type=int, default=0, help="training seed; the data seeds are 2·seed and 2·seed + 1")
    parser.add_argument("--distinct-names", action="store_true",
                        help="name the classes with the words whose text prompts are furthest apart (not h1…v6)")
    parser.add_argument("--pretrain-steps", type=int, default=400,
                        help="contrastive steps of the tiny CLIP on the training photos and class names before the "
                        "prompts are learned (0: the random backbone and text tower)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    names = synthetic_class_names(args.seed) if args.distinct_names else None
    with tempfile.TemporaryDirectory(prefix="bench-queries-") as tmp:
        root = Path(tmp)
        training_data = make_dataset(root / "train", per_class=args.per_class, seed=2 * args.seed, names=names)
        # new drawings, same classes
        test_data = make_dataset(root / "test", per_class=args.per_class, seed=2 * args.seed + 1, names=names)
        pretrained = str(pretrain_synthetic_clip(training_data, root / "clip", steps=args.pretrain_steps,
                                                 seed=args.seed)) if args.pretrain_steps else "none"
        encoder = train_synthetic_encoder(training_data, root / "run", epochs=args.epochs, cls_weight=args.cls_weight,
                                          lr_scale=args.lr_scale, seed=args.seed, pretrained=pretrained)
        figures = {"machine": "2-core CPU, no GPU (dev box), synthetic data", "epochs": args.epochs,
                   "cls_weight": args.cls_weight, "lr_scale": args.lr_scale, "seed": args.seed,
                   "pretrain_steps": args.pretrain_steps,
                   "class_names": names or "patterns (h1…v6)",
                   **measure(encoder, test_data, root, args.weights)}
    print(json.dumps(figures, indent=2))
    print(summary(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
