"""Sketch–photo pairs: Sketchy's layout, pair CSVs, hard-negative P×K triplets, unreadable files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.imagegen import draw_sketch, random_photo
from training.data import DataError, TripletDataset, collate_triplets
from training.fine_grained import balanced_positions, evaluate_fine_grained
from training.pairs import NOT_A_SKETCH_NAME, load_pairs, read_pair_csv, scan_sketchy_pairs
from training.pk_sampler import hard_triplet_batches


def drawn_from(sketch_path: str) -> str:
    return Path(sketch_path).stem.rsplit("-", 1)[0]


def sketchy_tree(root, layout: dict[str, dict[str, int]]):
    """``layout``: category → photo id → number of sketches."""
    for category, photos in layout.items():
        (root / "photo" / category).mkdir(parents=True)
        (root / "sketch" / category).mkdir(parents=True)
        for i, (photo_id, n_sketches) in enumerate(photos.items()):
            suffix = ".jpg" if i % 2 == 0 else ".png"  # any common image extension
            random_photo(seed=i).save(root / "photo" / category / f"{photo_id}{suffix}")
            for n in range(1, n_sketches + 1):
                draw_sketch(seed=n).save(root / "sketch" / category / f"{photo_id}-{n}.png")
    return root


def test_sketchy_layout_pairs_each_sketch_with_the_photo_it_was_drawn_from(tmp_path):
    sketchy_tree(tmp_path, {"cat": {"n01_1": 2, "n01_2": 1, "n01_3": 0}, "dog": {"n02-7": 3, "n02_8": 1}})
    draw_sketch().save(tmp_path / "sketch" / "cat" / "n01_9-1.png")  # its photo does not exist
    draw_sketch().save(tmp_path / "sketch" / "dog" / "nodash.png")  # not <photo_id>-<n>
    data = scan_sketchy_pairs(tmp_path)
    assert data.classes == ["cat", "dog"]
    for category, pairs in data.pairs.items():
        for sketch, photo in pairs:
            assert sketch.category == photo.category == category
            assert drawn_from(sketch.path) == Path(photo.path).stem
    assert len(data.pairs["cat"]) == 3 and len(data.pairs["dog"]) == 4  # "n02-7" keeps its own dash
    assert len(data.photos["cat"]) == 3  # the unsketched photo stays in the gallery
    assert data.skipped_counts() == {NOT_A_SKETCH_NAME: 1, "without their photo": 1}
    assert "7 pairs, 5 photos (4 paired), 2 categories" in data.summary()


def test_paired_gallery_keeps_only_the_photos_sketches_were_drawn_from(tmp_path):
    # Sketchy-Extended's photo folders hold many unsketched photos beside Sketchy basic's
    data = scan_sketchy_pairs(sketchy_tree(tmp_path, {"a": {"x": 2, "y": 0, "u": 0}, "b": {"z": 1, "w": 0}}))
    paired, every = data.subset(["a", "b"], gallery="paired"), data.subset(["a", "b"], gallery="all")
    assert len(every.photos) == 5 and len(paired.photos) == 2
    assert sorted(Path(p.path).stem for p in paired.photos) == ["x", "z"]
    assert len(paired) == len(every) == 3
    for label, partner in zip(paired.sketch_labels, paired.partners, strict=True):
        assert paired.photo_labels[partner] == label
    for sketch, partner in zip(paired.sketches, paired.partners, strict=True):
        assert drawn_from(sketch.path) == Path(paired.photos[partner].path).stem
    with pytest.raises(ValueError, match="gallery"):
        data.subset(["a"], gallery="some")


def test_duplicate_photo_ids_in_a_category_are_warned_about(tmp_path, caplog):
    sketchy_tree(tmp_path, {"a": {"x": 1, "y": 1}})
    random_photo(seed=9).save(tmp_path / "photo" / "a" / "x.png")  # x.jpg exists too
    data = scan_sketchy_pairs(tmp_path)
    assert "photo/a: 1 photo ids appear more than once (e.g. x:" in caplog.text
    assert Path(data.pairs["a"][0][1].path).name == "x.jpg"  # the first one found is the pair


def test_subset_flattens_pairs_with_partner_indices(tmp_path):
    data = scan_sketchy_pairs(sketchy_tree(tmp_path, {"a": {"x": 2, "y": 1}, "b": {"z": 1, "w": 0}, "c": {"v": 1}}))
    pairs = data.subset(["b", "a"])
    assert pairs.classes == ["a", "b"]
    assert len(pairs) == 4 and len(pairs.photos) == 4
    for sketch, label, partner in zip(pairs.sketches, pairs.sketch_labels, pairs.partners, strict=True):
        assert pairs.photo_labels[partner] == label
        assert pairs.classes[label] == sketch.category == pairs.photos[partner].category
        assert drawn_from(sketch.path) == Path(pairs.photos[partner].path).stem


def test_pair_csv_with_or_without_header_and_category(tmp_path):
    for name in ("s1.png", "s2.png", "s3.png"):
        draw_sketch().save(tmp_path / name)
    (tmp_path / "shoes").mkdir()
    for name in ("p1.jpg", "p2.jpg"):
        random_photo().save(tmp_path / "shoes" / name)
    (tmp_path / "pairs.csv").write_text(
        "sketch,photo,category\ns1.png,shoes/p1.jpg,\ns2.png,shoes/p2.jpg,boots\ns3.png,shoes/p1.jpg\n"
        "only-one-column\n\n"
    )
    data = read_pair_csv(tmp_path / "pairs.csv")
    assert data.classes == ["boots", "shoes"]  # without a category: the photo's folder
    assert [len(data.pairs[c]) for c in data.classes] == [1, 2]
    assert len(data.photos["shoes"]) == 1  # a photo named twice is one gallery item
    assert data.skipped_counts() == {"malformed csv rows": 1}
    (tmp_path / "plain.csv").write_text(f"{tmp_path / 's1.png'},{tmp_path / 'shoes' / 'p2.jpg'}\n")
    assert load_pairs(tmp_path / "plain.csv").classes == ["shoes"]


def test_unusable_sources_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="neither"):
        load_pairs(tmp_path / "missing")
    (tmp_path / "empty.csv").write_text("sketch,photo\n")
    with pytest.raises(DataError, match="No usable"):
        load_pairs(tmp_path / "empty.csv")


def test_hard_triplets_pair_the_own_photo_with_another_photo_of_the_same_category():
    photo_labels = [0, 0, 0, 1, 1, 2, 2, 2, 3]  # category 3 has one photo: no hard negative possible
    partners = [0, 0, 1, 2, 3, 3, 4, 4, 5, 6, 7, 7, 8, 8]
    sketch_labels = [photo_labels[p] for p in partners]
    for epoch in range(4):
        batches = hard_triplet_batches(sketch_labels, partners, photo_labels, 3, 2, seed=0, epoch=epoch)
        assert batches
        for batch in batches:
            assert set(Counter(sketch_labels[s] for s, _, _ in batch).values()) == {2}
            for sketch, positive, negative in batch:
                assert positive == partners[sketch] and negative != positive
                assert photo_labels[negative] == photo_labels[positive] == sketch_labels[sketch] != 3


def test_hard_triplets_skip_known_unreadable_files():
    photo_labels = [0, 0, 0, 1, 1, 1]
    partners = [0, 0, 1, 2, 3, 4, 4, 5]
    sketch_labels = [photo_labels[p] for p in partners]
    batches = hard_triplet_batches(sketch_labels, partners, photo_labels, 2, 2, seed=1, epoch=0,
                                   skip_sketches={7}, skip_photos={1})
    triples = [t for batch in batches for t in batch]
    assert all(s not in (2, 7) and 1 not in (p, n) for s, p, n in triples)


def test_an_unreadable_file_is_dropped_from_the_batch_and_the_rest_rebalanced(tmp_path, tiny_encoder):
    data = scan_sketchy_pairs(sketchy_tree(tmp_path, {"a": {"x": 2, "y": 2}, "b": {"z": 2, "w": 2}}))
    pairs = data.subset(data.classes)
    broken = pairs.sketches[0]
    (tmp_path / broken.path).write_bytes(b"not an image")
    triples = [t for batch in hard_triplet_batches(pairs.sketch_labels, pairs.partners, pairs.photo_labels, 2, 2,
                                                   seed=0, epoch=0) for t in batch]
    dataset = TripletDataset(pairs.sketches, pairs.photos, pairs.sketch_labels, pairs.photo_labels, triples,
                             tiny_encoder.preprocess, train=False)
    batch = collate_triplets([dataset[i] for i in range(len(dataset))])
    assert len(batch) == len(triples) - sum(t[0] == 0 for t in triples)
    assert [key for key, _ in batch.bad] == [broken.key] * (len(triples) - len(batch))
    keep = balanced_positions(batch.labels)
    assert set(Counter(batch.labels[keep].tolist()).values()) == {min(Counter(batch.labels.tolist()).values())}
    assert torch.equal(balanced_positions(torch.tensor([1, 1, 0, 0])), torch.arange(4))


def test_evaluation_leaves_unreadable_photos_out_of_gallery_and_queries(tmp_path, tiny_encoder):
    data = scan_sketchy_pairs(sketchy_tree(tmp_path, {"a": {"x": 2, "y": 1, "u": 0}, "b": {"z": 2, "w": 1}}))
    pairs = data.subset(data.classes)
    broken = next(p for p in pairs.photos if Path(p.path).stem == "x")
    Path(broken.path).write_bytes(b"")
    summary = evaluate_fine_grained(tiny_encoder, pairs, progress=False).summary
    assert summary["n_gallery"] == 4 and summary["n_queries"] == 4  # x and its two sketches are gone
    assert summary["n_unreadable"] == 1
    assert summary["within_category"]["acc_10"] == summary["all_photos"]["acc_10"] == 1.0


def test_qmul_sketch_names_pair_with_their_photo_and_sketchy_ids_with_underscores_still_pair(tmp_path):
    # was: QMUL ShoeV2 / ChairV2's <photo_id>_<n>.png → "No usable sketch–photo pairs"
    for folder in ("photo/shoe", "sketch/shoe", "photo/cat", "sketch/cat"):
        (tmp_path / folder).mkdir(parents=True)
    for photo_id in ("1135045020", "1135045021"):
        random_photo(seed=1).save(tmp_path / "photo" / "shoe" / f"{photo_id}.png")
    for name in ("1135045020_1", "1135045020_2", "1135045021_1"):
        draw_sketch().save(tmp_path / "sketch" / "shoe" / f"{name}.png")
    random_photo().save(tmp_path / "photo" / "cat" / "n01_1.jpg")  # Sketchy: the photo id holds "_"
    random_photo().save(tmp_path / "photo" / "cat" / "n01.jpg")  # a decoy the "_1" must not be read into
    draw_sketch().save(tmp_path / "sketch" / "cat" / "n01_1-3.png")
    data = load_pairs(tmp_path)
    drawn = {Path(s.path).stem: Path(p.path).stem for pairs in data.pairs.values() for s, p in pairs}
    assert drawn == {"1135045020_1": "1135045020", "1135045020_2": "1135045020", "1135045021_1": "1135045021",
                     "n01_1-3": "n01_1"}


def test_sketch_and_photo_folders_spelled_differently_still_pair(tmp_path):
    # was: sketch/teddy bear vs photo/teddy-bear → every sketch "without their photo"
    sketchy_tree(tmp_path, {"teddy-bear": {"p1": 2}, "cat": {"c1": 1}})
    (tmp_path / "sketch" / "teddy-bear").rename(tmp_path / "sketch" / "teddy bear")
    data = scan_sketchy_pairs(tmp_path)
    assert data.classes == ["cat", "teddy-bear"] and len(data.pairs["teddy-bear"]) == 2
    assert len(data.subset(["teddy-bear"])) == 2


def test_a_thumbnail_in_a_hidden_subfolder_is_no_photo_to_pair_with(tmp_path):
    # was: photo/cat/.thumbnails/p1.jpg sorted first and every sketch of p1 paired with the thumbnail
    sketchy_tree(tmp_path, {"cat": {"p1": 2, "p2": 1}})
    (tmp_path / "photo" / "cat" / ".thumbnails").mkdir()
    random_photo().save(tmp_path / "photo" / "cat" / ".thumbnails" / "p1.jpg")
    data = scan_sketchy_pairs(tmp_path)
    assert all(".thumbnails" not in p.path for p in data.photos["cat"])
    assert all(".thumbnails" not in photo.path for _, photo in data.pairs["cat"])


def test_the_task_says_which_training_classes_never_fill_a_batch(tmp_path, caplog):
    # was: "7 train" printed while the classes with fewer than K pairs or under 2 photos never trained, silently
    from encoder import EncoderConfig, PromptConfig, build_encoder
    from training.data import ClassSplit
    from training.fine_grained import FineGrainedOptions, FineGrainedTask

    sketchy_tree(tmp_path, {"ant": {"a1": 2, "a2": 1}, "bee": {"b1": 2, "b2": 1}, "cat": {"c1": 1, "c2": 0},
                            "dog": {"d1": 3}})
    config = EncoderConfig(backbone="sbir-tiny", pretrained="none", prompts=PromptConfig(shared=True))
    options = FineGrainedOptions(categories_per_batch=2, pairs_per_category=2, workers=0)
    task = FineGrainedTask(scan_sketchy_pairs(tmp_path), ClassSplit(train=["ant", "bee", "cat", "dog"], val=[],
                                                                     test=[]), build_encoder(config, "cpu"), options)
    assert task.usable() == "2 of 4 training classes, 6 of 10 pairs fill P x K batches"
    assert "2 training classes never fill a batch" in caplog.text
    assert "cat (only 1 of K = 2 pairs)" in caplog.text
    assert "dog (1 photo, a hard negative needs another)" in caplog.text
