"""The service never swaps to a version it cannot trust, and recovers from a bad pointer (issue 19, item 4).

Each corruption `python -m index_builder verify` detects is made on a copy of a real version; the service's
holder must refuse it with one log line naming the check, count it in `sbir_index_refused{check}`, and keep
serving the version it had. Versions written before checksums were recorded are still checked by the
sample (finite vectors, each found first). A `current` pointer that cannot be used is logged once, never
re-tried in a loop, and at start the newest version that passes the checks is served instead.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.index_holder import IndexHolder
from app.metrics import Metrics
from photo_index.backends.folder import FolderSource
from photo_index.checks import trust_findings
from tests.app.support import build_index, make_gallery

LOGGER = "app.index"


@pytest.fixture(scope="module")
def other_index(tmp_path_factory, app_encoder) -> Path:
    """A second index of the same size and encoder, from other photos (the source of foreign parts)."""
    root = tmp_path_factory.mktemp("other-index")
    build_index(make_gallery(root / "gallery", seed=50), root / "index", app_encoder)
    return root / "index"


@pytest.fixture()
def index_dir(app_index, tmp_path) -> Path:
    """A private copy of the session's index (one good version), to damage."""
    copy = tmp_path / "index"
    shutil.copytree(app_index[1], copy)
    return copy


def only_version(index_dir: Path) -> Path:
    (folder,) = [p for p in (index_dir / "versions").iterdir() if p.is_dir()]
    return folder


def damaged_copy(index_dir: Path, damage, *, checksums: bool = True) -> str:
    """A newer version: a copy of the live one with ``damage(folder)`` applied; its name."""
    good = index_dir / "versions" / (index_dir / "current").read_text().strip()
    name = good.name + "-damaged"
    folder = index_dir / "versions" / name
    shutil.copytree(good, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = name
    if not checksums:  # as a version written before checksums were recorded
        manifest.pop("checksums", None)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    damage(folder)
    return name


def point_at(index_dir: Path, text: str | bytes) -> None:
    data = text if isinstance(text, bytes) else (text + "\n").encode()
    (index_dir / "current").write_bytes(data)


def holder_for(index_dir: Path, app_encoder) -> tuple[IndexHolder, Metrics]:
    metrics = Metrics()
    holder = IndexHolder(FolderSource(index_dir), fingerprint=app_encoder.fingerprint(), dim=app_encoder.embed_dim,
                         metrics=metrics)
    return holder, metrics


def refused_count(metrics: Metrics, check: str) -> float:
    return metrics.registry.get_sample_value("sbir_index_refused_total", {"check": check}) or 0.0


# ---- the damage ---------------------------------------------------------------------------------------------

def foreign_index_file(other: Path):
    def damage(folder: Path) -> None:
        shutil.copyfile(only_version(other) / "index.faiss", folder / "index.faiss")
    return damage


def foreign_metadata(other: Path):
    def damage(folder: Path) -> None:
        shutil.copyfile(only_version(other) / "metadata.sqlite", folder / "metadata.sqlite")
    return damage


def flipped_vector_bytes(folder: Path) -> None:
    data = bytearray((folder / "vectors.npy").read_bytes())
    header = 128  # the .npy header of a small array
    for at in range(header + 1, len(data), 64):  # a mid-mantissa byte of one float in 16: every vector is hit,
        data[at] ^= 0x5A  # each by less than the unit-norm tolerance: only the index's own copy tells
    (folder / "vectors.npy").write_bytes(bytes(data))


def nan_vector(folder: Path) -> None:
    vectors = np.load(folder / "vectors.npy")
    vectors[len(vectors) // 2] = np.nan
    np.save(folder / "vectors.npy", vectors)


def lying_manifest(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["size"] += 3
    (folder / "manifest.json").write_text(json.dumps(manifest))


CASES = {  # damage, the check that names it with checksums recorded, and without
    "index.faiss from another index": (foreign_index_file, "checksums", "index_vectors"),
    "metadata from another index": (foreign_metadata, "checksums", None),
    "flipped bytes in vectors.npy": (lambda _other: flipped_vector_bytes, "checksums", "index_vectors"),
    "NaN vectors": (lambda _other: nan_vector, "checksums", "finite"),
    "a manifest whose counts lie": (lambda _other: lying_manifest, "counts", "counts"),
}


# A version written before checksums were recorded: metadata of another index with the same ids is told apart
# only by its checksum, so that case has no older-version run.
RUNS = [pytest.param(case, sums, id=f"{case}-{'checksums' if sums else 'older-version'}")
        for case, (_, with_sums, without_sums) in CASES.items() for sums in (True, False)
        if (with_sums if sums else without_sums) is not None]


@pytest.mark.parametrize(("case", "checksums"), RUNS)
def test_a_damaged_version_is_refused_once_and_the_old_one_keeps_serving(index_dir, other_index, app_encoder,
                                                                       caplog, case, checksums):
    make, with_sums, without_sums = CASES[case]
    check = with_sums if checksums else without_sums
    holder, metrics = holder_for(index_dir, app_encoder)
    assert holder.refresh()
    good = holder.version
    bad = damaged_copy(index_dir, make(other_index), checksums=checksums)
    point_at(index_dir, bad)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _ in range(3):  # polled again and again: refused once
            assert not holder.refresh()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and f"{check} check failed" in lines[0] and bad in lines[0], lines
    assert refused_count(metrics, check) == 1
    assert holder.version == good and holder.ready
    with holder.lease() as reader:
        assert reader.version == good and len(reader.search(np.ones((1, reader.dim), np.float32), 3)[1][0]) == 3
    holder.close()


def test_verify_reports_the_same_checks(index_dir, other_index):
    """One implementation: `verify` runs the service's checks first."""
    bad = damaged_copy(index_dir, foreign_index_file(other_index))
    source = FolderSource(index_dir)
    problems = source.verify(bad)
    reader = source.open_version(bad)
    try:
        assert [str(finding) for finding in trust_findings(reader)] == problems[:1]
    finally:
        reader.close()
    assert problems[0].startswith("checksums: index.faiss")


@pytest.mark.parametrize("pointer", [b"\xff\xfe\x00garbage", "v-no-such-version", "/etc", "../../etc"],
                         ids=["unreadable", "missing-version", "absolute-path", "relative-path"])
def test_a_bad_pointer_is_logged_once_and_the_served_version_stays(index_dir, app_encoder, caplog, pointer):
    holder, metrics = holder_for(index_dir, app_encoder)
    assert holder.refresh()
    good = holder.version
    point_at(index_dir, pointer)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _ in range(5):
            assert not holder.refresh()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines  # once, not on every poll
    assert holder.version == good and holder.ready
    point_at(index_dir, good)  # repaired: nothing to reload, nothing logged
    assert not holder.refresh() and holder.version == good
    holder.close()


@pytest.mark.parametrize("pointer", ["damaged", b"\xff\xfe", "/etc", "v-no-such-version"])
def test_a_start_on_a_bad_pointer_serves_the_newest_good_version_with_a_warning(index_dir, app_encoder, caplog,
                                                                                  pointer):
    good = only_version(index_dir).name
    bad = damaged_copy(index_dir, nan_vector)  # newer than the good one, so a fallback must skip it
    point_at(index_dir, bad if pointer == "damaged" else pointer)
    holder, metrics = holder_for(index_dir, app_encoder)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert holder.refresh()
        for _ in range(3):
            holder.refresh()
    assert holder.version == good and holder.ready
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and good in warnings[0] and "newest that passes" in warnings[0], warnings
    holder.close()


def test_a_start_with_no_good_version_at_all_is_not_ready(index_dir, app_encoder):
    bad = damaged_copy(index_dir, nan_vector)
    shutil.rmtree(only_version_named(index_dir, exclude=bad))
    point_at(index_dir, bad)
    holder, _ = holder_for(index_dir, app_encoder)
    assert not holder.refresh() and not holder.ready and "checksums check" in (holder.reason or "")
    holder.close()


def only_version_named(index_dir: Path, exclude: str) -> Path:
    (folder,) = [p for p in (index_dir / "versions").iterdir() if p.is_dir() and p.name != exclude]
    return folder
