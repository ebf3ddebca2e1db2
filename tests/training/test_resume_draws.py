"""A resumed run draws what an unbroken one would: the augmentations (per triplet, from the seed, the epoch and its
place) and the fine-grained patch shuffles (their generator's state is kept with the run)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.training.synthetic_categories import make_dataset
from tests.training.synthetic_pairs import make_pairs
from training.cli import main
from training.data import TripletDataset


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("shapes"), classes=["h1", "v1", "h2", "v2"], per_class=6)


def _learned(run) -> dict[str, torch.Tensor]:
    return load_file(run / "last.safetensors")


def _unbroken_and_resumed(tmp_path, args: list[str], stop_at: int) -> tuple[dict, dict]:
    assert main([*args, "--out", str(tmp_path / "unbroken")]) == 0
    assert main([*args, "--out", str(tmp_path / "resumed"), "--max-steps", str(stop_at)]) == 0
    assert main([*args, "--out", str(tmp_path / "resumed"), "--resume"]) == 0
    return _learned(tmp_path / "unbroken"), _learned(tmp_path / "resumed")


def _assert_same(unbroken: dict, resumed: dict) -> None:
    assert unbroken.keys() == resumed.keys()
    different = [name for name in unbroken if not torch.equal(unbroken[name], resumed[name])]
    assert not different, different


def test_a_category_run_resumed_mid_epoch_with_augmentation_ends_where_an_unbroken_one_does(shapes_root, tmp_path,
                                                                                            one_thread):
    args = ["category", "--data", str(shapes_root), "--split", "none", "--val-fraction", "0", "--batch_size", "8",
            "--workers", "0", "--epochs", "2", "--no-progress", "--prompt_lr", "1e-2", "--clip_LN_lr", "1e-1"]
    _assert_same(*_unbroken_and_resumed(tmp_path, args, stop_at=4))  # mid-epoch 2 (3 steps an epoch)


def test_a_fine_grained_run_resumed_mid_epoch_shuffles_the_patches_an_unbroken_one_does(tmp_path, one_thread):
    root = make_pairs(tmp_path / "data", n_classes=4, photos=8, sketches=2, seed=2)
    args = ["fine-grained", "--data", str(root), "--split", "none", "--val-fraction", "0", "--workers", "0",
            "--no-progress", "--batch_size", "4", "--pairs-per-category", "2", "--epochs", "1", "--prompt_lr", "1e-2",
            "--clip_LN_lr", "1e-2"]
    _assert_same(*_unbroken_and_resumed(tmp_path, args, stop_at=2))


def test_a_fine_grained_run_interrupted_mid_step_resumes_with_the_draws_of_that_step(tmp_path, one_thread,
                                                                                      monkeypatch):
    """Ctrl-C after a step drew its patch shuffles: the state kept the generator after those draws, so the resumed
    step shuffled otherwise."""
    import training.fine_grained as fine_grained

    root = make_pairs(tmp_path / "data", n_classes=4, photos=8, sketches=2, seed=2)
    args = ["fine-grained", "--data", str(root), "--split", "none", "--val-fraction", "0", "--workers", "0",
            "--no-progress", "--batch_size", "4", "--pairs-per-category", "2", "--epochs", "1", "--prompt_lr", "1e-2",
            "--clip_LN_lr", "1e-2"]
    assert main([*args, "--out", str(tmp_path / "unbroken")]) == 0
    real, calls = fine_grained.shuffle_permutations, []

    def drawn_then_interrupted(*a, **k):
        permutations = real(*a, **k)
        calls.append(1)
        if len(calls) == 3:  # the third step, after its draws
            raise KeyboardInterrupt
        return permutations

    monkeypatch.setattr(fine_grained, "shuffle_permutations", drawn_then_interrupted)
    assert main([*args, "--out", str(tmp_path / "resumed")]) == 130
    monkeypatch.undo()
    assert main([*args, "--out", str(tmp_path / "resumed"), "--resume"]) == 0
    _assert_same(_learned(tmp_path / "unbroken"), _learned(tmp_path / "resumed"))


def test_a_triplets_augmentation_depends_on_its_place_and_epoch_not_on_what_was_drawn_before(shapes_root,
                                                                                             tiny_encoder):
    from training.data import CategoryDataset

    data = CategoryDataset.scan(shapes_root)
    sketches, photos = data.subset(data.classes)
    triples = [(0, 0, 1), (1, 2, 3)]
    labels = [0] * len(sketches), [0] * len(photos)

    def dataset(epoch: int) -> TripletDataset:
        return TripletDataset(sketches, photos, *labels, triples, tiny_encoder.preprocess, draws=(0, epoch, 0))

    first = dataset(0)[1][0]
    torch.rand(1000)  # another place in torch's running random state (a worker's, or after a resume)
    again = dataset(0)[1][0]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], dataset(1)[1][0][0])  # another epoch, other draws
