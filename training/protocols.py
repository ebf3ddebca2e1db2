"""The standard zero-shot SBIR test sets' sizes, printed and recorded beside what an evaluation scored,
so a folder that is not the benchmark (another photo set, missing files, duplicates) shows at once."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TestSet:
    sketches: int | None  # None: not fixed by the protocol
    photos: int  # the de-duplicated gallery (--gallery dedup)
    note: str
    photos_list: int | None = None  # the gallery as published file lists enumerate it (--gallery list), if known


CATEGORY = {
    "sketchy21": TestSet(12_694, 10_453, "Sketchy-Extended, 21 unseen classes; photos after de-duplication "
                         "(12,553 with duplicates, as the ZSE-SBIR / SAKE test lists)", photos_list=12_553),
    "tuberlin30": TestSet(2_400, 27_989, "TU-Berlin-Extended, 30 unseen classes"),
    "quickdraw30": TestSet(92_291, 54_151, "QuickDraw-Extended, 30 unseen classes"),
}
FINE_GRAINED = {
    "sketchy21": TestSet(None, 2_100, "Sketchy basic's photos: 100 per class for the 21 unseen classes"),
}


def standard_test_set(split: str, *, fine_grained: bool = False) -> TestSet | None:
    return (FINE_GRAINED if fine_grained else CATEGORY).get(split)


def compare_counts(split: str, n_sketches: int, n_photos: int, *, fine_grained: bool = False,
                   gallery: str = "dedup") -> tuple[str, dict]:
    """A line to print and a dict for the JSON: these counts beside the split's standard test set (if any), whose
    photo count is that of the same ``gallery`` (``dedup`` | ``list``) where the protocol knows both."""
    standard = standard_test_set(split, fine_grained=fine_grained)
    if standard is None:
        return f"counts: {n_sketches:,} sketches x {n_photos:,} photos (no standard test set for {split})", {}
    sketches = f"{standard.sketches:,} sketches" if standard.sketches is not None else "all test sketches"
    photos = standard.photos_list if gallery == "list" and standard.photos_list is not None else standard.photos
    line = (f"counts: {n_sketches:,} sketches x {n_photos:,} photos here; standard {split} protocol: {sketches} x "
            f"{photos:,} photos ({standard.note})")
    return line, {"split": split, **asdict(standard), "photos": photos}
