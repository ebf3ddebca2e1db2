"""Split files, class splits, scanning, unreadable files, the category triplet sampler."""

from pathlib import Path

import pytest
import torch

from tests.imagegen import draw_sketch, random_photo
from training.data import (
    BadFiles,
    CategoryDataset,
    DataError,
    SampleDataset,
    class_text,
    collate_samples,
    make_split,
    read_class_list,
    split_classes_file,
)
from training.samplers import category_triplets, shard


@pytest.mark.parametrize(("name", "count"), [("sketchy21", 21), ("sketchy25", 25), ("tuberlin30", 30),
                                             ("quickdraw30", 30)])
def test_shipped_split_files_have_the_standard_class_counts(name, count):
    names = read_class_list(split_classes_file(name))
    assert len(names) == len(set(names)) == count


def test_class_names_become_text():
    assert class_text("teddy_bear") == "teddy bear"
    assert class_text("hot air balloon") == "hot air balloon"


def test_unseen_file_matches_spelling_and_rejects_unknown(tmp_path):
    classes = ["frying_pan", "teddy_bear", "cat", "dog", "cow", "bat", "ant"]
    listing = tmp_path / "unseen.txt"
    listing.write_text("Frying-Pan\n# comment\nteddy bear\n")
    split = make_split(classes, unseen_file=listing, val_fraction=0.2, seed=1)
    assert split.test == ["frying_pan", "teddy_bear"]
    assert not set(split.val) & set(split.train) and not set(split.test) & set(split.train + split.val)
    assert len(split.val) == 1 and len(split.train) == 4
    listing.write_text("zebra\n")
    with pytest.raises(DataError, match="zebra"):
        make_split(classes, unseen_file=listing)


def test_random_split_is_seeded_and_disjoint():
    classes = [f"c{i:02d}" for i in range(40)]
    a = make_split(classes, split="random", n_unseen=8, seed=3)
    b = make_split(classes, split="random", n_unseen=8, seed=3)
    c = make_split(classes, split="random", n_unseen=8, seed=4)
    assert a == b and a.test != c.test
    assert len(a.test) == 8 and len(a.val) == 3 and len(a.train) == 29
    assert sorted(a.train + a.val + a.test) == classes


def test_split_none_trains_on_every_class_and_evaluates_every_class():
    classes = ["cat", "dog", "cow", "bat"]
    training = make_split(classes, split="none", val_fraction=0.0)
    assert (training.train, training.val, training.test, training.source) == (sorted(classes), [], [], "none")
    with_slice = make_split(classes, split="none", val_fraction=0.25, seed=0)
    assert len(with_slice.val) == 1 and sorted(with_slice.train + with_slice.val) == sorted(classes)
    assert make_split(classes, split="none", for_training=False).test == sorted(classes)


def test_split_none_warns_when_the_folder_holds_a_benchmarks_unseen_classes(caplog):
    classes = [*read_class_list(split_classes_file("sketchy21")), "zebra", "lion"]
    make_split(classes, split="none", val_fraction=0.0)
    assert "all 21 unseen classes of sketchy21" in caplog.text


def test_refit_split_puts_the_validation_slice_back_into_training():
    split = make_split([f"c{i}" for i in range(12)], split="random", n_unseen=2, val_fraction=0.2, seed=0)
    refit = split.without_validation()
    assert refit.val == [] and refit.test == split.test and refit.train == sorted(split.train + split.val)


def test_sampler_never_pairs_a_negative_of_the_anchors_class():
    sketch_labels = [i % 4 for i in range(200)]
    photo_labels = [i % 4 for i in range(37)]
    for epoch in range(5):
        triples = category_triplets(sketch_labels, photo_labels, seed=0, epoch=epoch)
        assert len(triples) == 200
        for s, p, n in triples:
            assert photo_labels[p] == sketch_labels[s]
            assert photo_labels[n] != sketch_labels[s]
    assert category_triplets(sketch_labels, photo_labels, seed=0, epoch=1) != category_triplets(
        sketch_labels, photo_labels, seed=0, epoch=2)


def test_sampler_skips_known_bad_files_and_shards_evenly():
    triples = category_triplets([0, 1, 0, 1], [0, 1, 1], seed=0, epoch=0, skip_sketches={2}, skip_photos={1})
    assert {t[0] for t in triples} == {0, 1, 3}
    assert all(t[1] != 1 and t[2] != 1 for t in triples)
    shares = [shard(list(range(11)), r, 3) for r in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3] and not set(shares[0]) & set(shares[1])


def test_scan_and_unreadable_files_are_skipped_and_counted(tmp_path, tiny_encoder):
    for c in ("cat", "dog"):
        (tmp_path / "sketch" / c).mkdir(parents=True)
        (tmp_path / "photo" / c).mkdir(parents=True)
        draw_sketch(seed=1).save(tmp_path / "sketch" / c / "a.png")
        random_photo(seed=2).save(tmp_path / "photo" / c / "a.jpg")
    (tmp_path / "photo" / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "photo" / "dog" / "notes.txt").write_text("ignored")
    (tmp_path / "sketch" / "bird").mkdir()  # sketches only: ignored
    draw_sketch().save(tmp_path / "sketch" / "bird" / "b.png")
    data = CategoryDataset.scan(tmp_path)
    assert data.classes == ["cat", "dog"] and len(data.photos["dog"]) == 2
    _, photos = data.subset(data.classes)
    dataset = SampleDataset(photos, [0, 1, 1], tiny_encoder.preprocess, "photo")
    batch = collate_samples([dataset[i] for i in range(len(dataset))])
    assert batch.images.shape == (2, 3, 64, 64) and batch.indices.tolist() == [0, 1]
    bad = BadFiles()
    bad.update(batch.bad)
    assert len(bad) == 1 and "broken.jpg" in next(iter(bad.errors)) and "1 unreadable" in bad.summary()


def test_scan_rejects_a_wrong_root(tmp_path):
    with pytest.raises(DataError):
        CategoryDataset.scan(tmp_path / "missing")
    with pytest.raises(DataError, match="sketch"):
        CategoryDataset.scan(tmp_path)


def test_stroke_files_are_rasterised(tmp_path, tiny_encoder):
    (tmp_path / "sketch" / "line").mkdir(parents=True)
    (tmp_path / "photo" / "line").mkdir(parents=True)
    drawing = '{"drawing": [[[0, 100, 200], [0, 120, 10]]]}'
    (tmp_path / "sketch" / "line" / "all.ndjson").write_text(drawing + "\n\n" + drawing + "\n")
    random_photo().save(tmp_path / "photo" / "line" / "p.jpg")
    data = CategoryDataset.scan(tmp_path)
    assert len(data.sketches["line"]) == 2
    dataset = SampleDataset(data.sketches["line"], [0, 0], tiny_encoder.preprocess, "sketch")
    image, _, _, error = dataset[1]
    assert error is None and isinstance(image, torch.Tensor) and image.shape == (3, 64, 64)


def test_svg_sketches_are_read_as_their_lines(tmp_path, tiny_encoder):
    """TU-Berlin and Sketchy ship SVG sketches: one sample each, drawn like the same strokes as JSON."""
    (tmp_path / "sketch" / "line").mkdir(parents=True)
    (tmp_path / "photo" / "line").mkdir(parents=True)
    (tmp_path / "sketch" / "line" / "1.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 800 800"><g transform="scale(3)">'
        '<path d="M 0 0 L 100 120 L 200 10" stroke="#000" fill="none"/></g></svg>')
    (tmp_path / "sketch" / "line" / "2.json").write_text('{"strokes": [[[0, 0], [100, 120], [200, 10]]]}')
    random_photo().save(tmp_path / "photo" / "line" / "p.jpg")
    data = CategoryDataset.scan(tmp_path)
    assert sorted(Path(s.path).name for s in data.sketches["line"]) == ["1.svg", "2.json"]
    dataset = SampleDataset(data.sketches["line"], [0, 0], tiny_encoder.preprocess, "sketch")
    (svg, _, _, error), (json_strokes, _, _, _) = dataset[0], dataset[1]
    assert error is None and torch.allclose(svg, json_strokes, atol=0.05)


def test_unreadable_files_in_training_and_evaluation_are_dropped_counted_and_excluded(tmp_path, tiny_encoder):
    from tests.training.synthetic_categories import make_dataset
    from training.category import CategoryOptions, CategoryTask
    from training.data import ClassSplit
    from training.evaluate import evaluate_category

    root = make_dataset(tmp_path / "d", classes=["h1", "h2", "v1", "v2"], per_class=3)
    broken = root / "photo" / "h1" / "0.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    data = CategoryDataset.scan(root)
    task = CategoryTask(data, ClassSplit(train=["h1", "h2", "v1"], val=["v2"], test=[]), tiny_encoder,
                        CategoryOptions(batch_size=3, workers=0, augment=False))
    tiny_encoder.train()
    for epoch in range(3):  # until a triplet of epoch 0..2 draws the broken photo (seeded, so stable)
        for batch in task.train_loader(epoch):
            loss, _ = task.loss(tiny_encoder, batch)
            assert torch.isfinite(loss)
        if len(task.bad):
            break
    assert str(broken) in task.bad
    later = task.train_loader(epoch + 1).dataset.triples
    broken_index = [p.path for p in task.photos].index(str(broken))
    assert all(broken_index not in (t[1], t[2]) for t in later)
    tiny_encoder.eval()
    evaluation = evaluate_category(tiny_encoder, *data.subset(["h1", "h2"]), progress=False)
    assert evaluation.summary["n_unreadable"] == 1 and evaluation.summary["n_gallery"] == 5


def _raw_sketchy(root, classes=("ant", "bee", "cat", "dog", "eel")):
    """The raw Sketchy download's nesting, tiny: an augmentation folder above the categories of each modality."""
    for augmentation, modality in (("tx_000000000000", "sketch"), ("tx_000000000010", "sketch"),
                                   ("tx_000000000000", "photo"), ("tx_000100000000", "photo")):
        for c, category in enumerate(classes):
            folder = root / modality / augmentation / category
            folder.mkdir(parents=True)
            for i in range(2):
                name = f"n{c:03d}_{i}"
                if modality == "sketch":
                    draw_sketch(seed=c * 10 + i).save(folder / f"{name}-1.png")
                else:
                    random_photo((40, 32), seed=c * 10 + i).save(folder / f"{name}.jpg")
    return root


def test_the_raw_sketchy_layout_reads_one_augmentation_not_tx_folders_as_classes(tmp_path):
    from training.pairs import scan_sketchy_pairs

    root = _raw_sketchy(tmp_path / "sketchy")
    data = CategoryDataset.scan(root)
    assert data.classes == ["ant", "bee", "cat", "dog", "eel"]
    assert all("/tx_000000000000/" in s.path for samples in data.sketches.values() for s in samples)
    assert all("/tx_000000000000/" in p.path for samples in data.photos.values() for p in samples)
    assert sum(map(len, data.sketches.values())) == 10
    pairs = scan_sketchy_pairs(root)
    assert pairs.classes == data.classes and sum(len(p) for p in pairs.pairs.values()) == 10
    with pytest.raises(DataError, match="--augmentation") as refused:  # photos have no tx_000000000010
        CategoryDataset.scan(root, augmentation="tx_000000000010")
    assert "tx_000100000000" in str(refused.value)


def test_training_with_a_random_split_runs_on_the_raw_sketchy_layout(tmp_path, capsys):
    import json

    from training.cli import main

    root = _raw_sketchy(tmp_path / "sketchy")
    out = tmp_path / "run"
    assert main(["category", "--data", str(root), "--split", "random", "--n-unseen", "2", "--val-fraction", "0.34",
                 "--workers", "0", "--batch_size", "2", "--max-steps", "1", "--epochs", "1", "--no-progress",
                 "--out", str(out)]) == 0
    split = json.loads((out / "run.json").read_text())["split"]
    assert sorted(split["train"] + split["val"] + split["test"]) == ["ant", "bee", "cat", "dog", "eel"]
    assert len(split["test"]) == 2


def _category(root, modality, name, files=("a",)):
    folder = root / modality / name
    folder.mkdir(parents=True, exist_ok=True)
    for stem in files:
        if modality == "sketch":
            draw_sketch(seed=len(stem)).save(folder / f"{stem}.png")
        else:
            random_photo((40, 32), seed=len(stem)).save(folder / f"{stem}.jpg")
    return folder


@pytest.mark.parametrize(("sketch_name", "photo_name"), [("teddy bear", "teddy-bear"),
                                                         ("cafe\u0301", "caf\u00e9")])  # NFD (macOS) vs NFC
def test_sketch_and_photo_folders_spelled_differently_are_one_category(tmp_path, sketch_name, photo_name):
    # was: "categories have only sketches or only photos and are ignored", the class silently dropped
    for name in ("ant", "bee"):
        _category(tmp_path, "sketch", name)
        _category(tmp_path, "photo", name)
    _category(tmp_path, "sketch", sketch_name, ("s1", "s2"))
    _category(tmp_path, "photo", photo_name, ("p1",))
    data = CategoryDataset.scan(tmp_path)
    assert data.classes == sorted(["ant", "bee", photo_name])
    sketches, photos = data.subset([photo_name])
    assert len(sketches) == 2 and len(photos) == 1
    assert {s.category for s in sketches} == {photo_name}  # one name on both sides: the labels agree


def test_two_folders_of_one_category_on_one_side_are_an_error(tmp_path):
    for name in ("frying-pan", "frying_pan"):
        _category(tmp_path, "sketch", name)
    _category(tmp_path, "photo", "frying pan")
    with pytest.raises(DataError, match="frying-pan = frying_pan"):
        CategoryDataset.scan(tmp_path)


def test_files_inside_hidden_subfolders_are_not_samples(tmp_path):
    # was: photo/cat/.thumbnails/x.jpg joined training and the gallery
    _category(tmp_path, "sketch", "cat")
    photos = _category(tmp_path, "photo", "cat", ("a",))
    _category(tmp_path, "photo", "cat/sub", ("b",))  # a plain subfolder still counts
    _category(tmp_path, "photo", "cat/.thumbnails", ("a",))
    _category(tmp_path, "photo", "cat/sub/.cache", ("c",))
    data = CategoryDataset.scan(tmp_path)
    assert sorted(p.path for p in data.photos["cat"]) == [str(photos / "a.jpg"), str(photos / "sub" / "b.jpg")]


def test_a_linked_subfolder_is_read_as_linked_files_are_and_a_link_up_the_tree_once(tmp_path):
    # was: Path.rglob skipped photo/cat/more -> elsewhere, silently, while linked files and class folders counted
    _category(tmp_path, "sketch", "cat")
    photos = _category(tmp_path, "photo", "cat", ("a",))
    elsewhere = _category(tmp_path / "elsewhere", "photo", "more", ("b", "c"))
    (photos / "more").symlink_to(elsewhere, target_is_directory=True)
    (photos / "loop").symlink_to(photos, target_is_directory=True)  # back up the tree: walked once
    data = CategoryDataset.scan(tmp_path)
    assert sorted(p.path for p in data.photos["cat"]) == [str(photos / name) for name in
                                                          ("a.jpg", "more/b.jpg", "more/c.jpg")]


def test_a_category_folder_named_in_latin1_is_refused_at_scan_naming_it(tmp_path):
    # was: training and evaluation ran, then writing the per-class CSV crashed ("surrogates not allowed")
    import os

    _category(tmp_path, "sketch", "ant")
    _category(tmp_path, "photo", "ant")
    os.mkdir(os.fsencode(tmp_path / "photo") + b"/caf\xe9")
    random_photo().save(os.fsdecode(os.fsencode(tmp_path / "photo") + b"/caf\xe9/a.jpg"))
    with pytest.raises(DataError, match=r"caf\\xe9: the folder name is not UTF-8"):
        CategoryDataset.scan(tmp_path)
