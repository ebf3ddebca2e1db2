"""The protocol choices docs/training.md tabulates: our defaults, and the official code's one flag away."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.imagegen import random_photo
from training.category import CategoryOptions
from training.cli import build_parser
from training.data import Sample
from training.fine_grained import FineGrainedLossConfig
from training.galleries import choose_gallery, deduplicate
from training.protocols import compare_counts
from training.samplers import category_triplets


def _parse(*argv: str):
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("command", ["category", "fine-grained"])
def test_the_triplet_margin_defaults_to_the_official_codes_0_2_and_0_3_is_one_flag_away(command):
    assert _parse(command, "--data", "d", "--out", "o").margin == 0.2
    assert _parse(command, "--data", "d", "--out", "o", "--margin", "0.3").margin == 0.3
    assert CategoryOptions().margin == 0.2 and FineGrainedLossConfig().margin == 0.2


def test_training_frames_sketches_by_their_canvas_and_evaluation_follows_the_checkpoint_by_default():
    assert _parse("category", "--data", "d", "--out", "o").sketch_framing == "canvas"
    assert _parse("fine-grained", "--data", "d", "--out", "o", "--sketch-framing", "ink").sketch_framing == "ink"
    assert _parse("evaluate", "--data", "d").sketch_framing == "auto"


def test_l_delta_follows_the_paper_by_default_and_ours_is_an_option():
    assert FineGrainedLossConfig().delta_order == "paper"
    assert _parse("fine-grained", "--data", "d", "--out", "o").delta_order == "paper"
    assert _parse("fine-grained", "--data", "d", "--out", "o", "--delta-order", "sorted").delta_order == "sorted"
    with pytest.raises(ValueError, match="delta_order"):
        FineGrainedLossConfig(delta_order="random")


# ----------------------------------------------------------------------------------------- samplers
SKETCH_LABELS = [2, 0, 1, 0, 2, 1, 0, 2, 1]  # scan order, as the dataset lists them
PHOTO_LABELS = [0, 0, 1, 1, 2, 2]


def test_the_official_sampler_yields_class_runs_in_a_fixed_order_every_epoch():
    assert _parse("category", "--data", "d", "--out", "o").sampler == "shuffled"
    assert _parse("category", "--data", "d", "--out", "o", "--sampler", "official").sampler == "official"
    epochs = [category_triplets(SKETCH_LABELS, PHOTO_LABELS, seed=0, epoch=e, order="official") for e in range(3)]
    anchors = [[t[0] for t in triples] for triples in epochs]
    # class 0's sketches in scan order, then class 1's, then class 2's; the same in every epoch
    assert anchors[0] == anchors[1] == anchors[2] == [1, 3, 6, 2, 5, 8, 0, 4, 7]
    for triples in epochs:
        for anchor, positive, negative in triples:
            assert PHOTO_LABELS[positive] == SKETCH_LABELS[anchor] != PHOTO_LABELS[negative]


def test_our_sampler_mixes_classes_in_every_batch_and_reorders_each_epoch():
    labels = [c for c in range(4) for _ in range(25)]
    photos = [c for c in range(4) for _ in range(3)]
    first, second = (category_triplets(labels, photos, seed=0, epoch=e) for e in (0, 1))
    assert [t[0] for t in first] != [t[0] for t in second]
    batches = [first[i:i + 10] for i in range(0, 100, 10)]
    assert all(len({labels[t[0]] for t in batch}) > 1 for batch in batches)
    official = category_triplets(labels, photos, seed=0, epoch=0, order="official")
    assert sum(len({labels[t[0]] for t in official[i:i + 10]}) == 1 for i in range(0, 100, 10)) >= 7


# ----------------------------------------------------------------------------------------- galleries
def _photo(tmp_path, name: str, image: Image.Image, category: str = "cow", **save) -> Sample:
    path = tmp_path / category / name
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save)
    return Sample(str(path), category)


def test_dedup_drops_copies_of_one_image_in_a_category_and_list_keeps_every_file(tmp_path):
    original = random_photo((32, 24), seed=1).resize((640, 480), Image.Resampling.BICUBIC)
    photos = [
        _photo(tmp_path, "a.jpg", original, quality=90),
        _photo(tmp_path, "b.jpg", random_photo((32, 24), seed=2).resize((640, 480), Image.Resampling.BICUBIC)),
        _photo(tmp_path, "a_copy.jpg", original, quality=75),  # re-encoded copy
        _photo(tmp_path, "a_large.jpg", original.resize((1280, 960)), quality=85),  # resized copy
        _photo(tmp_path, "a.png", original),  # the same pixels in another format (decoded in full, not DCT-scaled)
        _photo(tmp_path, "a.jpg", original, category="saw", quality=90),  # in another class it is no duplicate
    ]
    gallery = deduplicate(photos)
    assert [p.path for p in gallery.photos] == [photos[0].path, photos[1].path, photos[5].path]
    assert [(d.path, o.path) for d, o in gallery.duplicates] == [(p.path, photos[0].path) for p in photos[2:5]]
    assert "3 photos (dedup: 3 duplicate images dropped" in gallery.describe()
    listed = choose_gallery(photos, "list")
    assert listed.photos == photos and "6 photos (list" in listed.describe()


def test_unreadable_photos_stay_in_the_deduplicated_gallery_to_be_reported_where_they_are_read(tmp_path):
    broken = tmp_path / "cow" / "broken.jpg"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a jpeg")
    assert deduplicate([Sample(str(broken), "cow")]).photos == [Sample(str(broken), "cow")]


def test_the_standard_sketchy21_gallery_size_follows_the_chosen_gallery():
    line, standard = compare_counts("sketchy21", 12_694, 10_453)
    assert standard["photos"] == 10_453 and "x 10,453 photos" in line
    line, standard = compare_counts("sketchy21", 12_694, 12_553, gallery="list")
    assert standard["photos"] == 12_553 and "x 12,553 photos" in line
