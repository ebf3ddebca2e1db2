"""The service never swaps to a version it cannot trust, and recovers from a bad pointer (issue 19, item 4).

Each corruption `python -m index_builder verify` detects is made on a copy of a real version, in both layouts:
segmented (what builds write: the damage goes into a segment with tombstones, in a version of two segments) and
one-copy (an older index); the service's holder must refuse it with one log line naming the check, count it in
`sbir_index_refused{check}`, and keep serving the version it had. Files no checksum covers (one-copy versions
written before checksums were recorded, segment files larger than what is hashed before a swap) are still
checked by the sample (finite vectors, equal to an exact index's copy, each found first). A `current` pointer
that cannot be used is logged once, never re-tried in a loop, and at start the newest version that passes the
checks is served instead.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

import photo_index.backends.folder as folder_backend
from app.index_holder import IndexHolder
from app.metrics import Metrics
from index_builder.builder import BuildOptions
from index_builder.builder import build_index as build_index_with
from photo_index.backends.folder import FolderSource, FolderWriter, segmented
from photo_index.checks import trust_findings
from tests.app.support import build_index, make_gallery, random_photo

LOGGER = "app.index"


def change_gallery(gallery: Path) -> None:
    """Two photos added, one removed, one replaced: the next build writes a second segment and tombstones."""
    first = sorted((gallery / "apple").iterdir())
    first[0].unlink()
    random_photo((96, 72), seed=900).save(first[1])
    for i in range(2):
        random_photo((96, 72), seed=910 + i).save(gallery / "boat" / f"boat-new-{i}.jpg")


def one_copy_build(gallery: Path, index_dir: Path, encoder) -> None:
    """A build in the one-copy format (``versions/<v>/``, before segments; it still opens and serves)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(folder_backend, "open_writer", lambda location, options: FolderWriter(location, options))
        build_index(gallery, index_dir, encoder)


@pytest.fixture(scope="module")
def indexes(tmp_path_factory, app_encoder) -> dict[str, Path]:
    """Each layout, built from real photos: segmented with two segments and tombstones (what builds write now),
    and one-copy (an older index); plus a second index of each from other photos (the source of foreign parts)."""
    root = tmp_path_factory.mktemp("trust")
    built = {}
    for name, other in (("", False), ("other-", True)):
        gallery = make_gallery(root / f"{name}gallery", seed=50 if other else 0)
        build_index(gallery, root / f"{name}segmented", app_encoder)
        change_gallery(gallery)
        build_index(gallery, root / f"{name}segmented", app_encoder)
        one_copy_build(gallery, root / f"{name}one-copy", app_encoder)
        built[f"{name}segmented"], built[f"{name}one-copy"] = root / f"{name}segmented", root / f"{name}one-copy"
    return built


@pytest.fixture(params=["segmented", "one-copy"])
def layout(request) -> str:
    return request.param


@pytest.fixture()
def index_dir(indexes, layout, tmp_path) -> Path:
    """A private copy of an index (its live version is good), to damage."""
    copy = tmp_path / "index"
    shutil.copytree(indexes[layout], copy)
    return copy


@pytest.fixture()
def other_index(indexes, layout) -> Path:
    return indexes[f"other-{layout}"]


def live_name(index_dir: Path) -> str:
    return (index_dir / "current").read_text().strip()


def is_segmented(index_dir: Path, version: str) -> bool:
    return (index_dir / "versions" / f"{version}.json").is_file()


def parts_of(index_dir: Path) -> Path:
    """The folder of the live version's data files: its one-copy folder, or its first segment (the one with
    tombstones, in the segmented index)."""
    version = live_name(index_dir)
    if not is_segmented(index_dir, version):
        return index_dir / "versions" / version
    manifest = json.loads((index_dir / "versions" / f"{version}.json").read_text())
    return index_dir / "segments" / manifest["segments"][0]["name"]


def damaged_copy(index_dir: Path, damage, *, checksums: bool = True, segment: int = 0) -> str:
    """A newer version: a copy of the live one with ``damage(parts folder, manifest file)`` applied; its name.
    Segmented: the version's ``segment``-th segment is copied to a new segment, which the copy of the version
    lists in its place."""
    good = live_name(index_dir)
    name = f"{good}-damaged{segment}"
    if is_segmented(index_dir, good):
        manifest_path = index_dir / "versions" / f"{name}.json"
        manifest = json.loads((index_dir / "versions" / f"{good}.json").read_text())
        source = index_dir / "segments" / manifest["segments"][segment]["name"]
        folder = source.with_name(f"{source.name}-damaged{segment}")
        shutil.copytree(source, folder)
        manifest["segments"][segment]["name"] = folder.name
    else:
        folder = index_dir / "versions" / name
        manifest_path = folder / "manifest.json"
        shutil.copytree(index_dir / "versions" / good, folder)
        manifest = json.loads(manifest_path.read_text())
    manifest["version"] = name
    if "segments_digest" in manifest:  # as the writer would record it for this version
        from photo_index.backends.folder.segments.version import segments_digest

        manifest["segments_digest"] = segments_digest(name, manifest["segments"])
    if not checksums:  # as a version written before checksums were recorded
        manifest.pop("checksums", None)
    manifest_path.write_text(json.dumps(manifest))
    damage(folder, manifest_path)
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
    def damage(folder: Path, _manifest: Path) -> None:
        shutil.copyfile(parts_of(other) / "index.faiss", folder / "index.faiss")
    return damage


def foreign_metadata(other: Path):
    def damage(folder: Path, _manifest: Path) -> None:
        shutil.copyfile(parts_of(other) / "metadata.sqlite", folder / "metadata.sqlite")
    return damage


def flipped_vector_bytes(folder: Path, _manifest: Path) -> None:
    data = bytearray((folder / "vectors.npy").read_bytes())
    header = 128  # the .npy header of a small array
    for at in range(header + 1, len(data), 64):  # a mid-mantissa byte of one float in 16: every vector is hit,
        data[at] ^= 0x5A  # each by less than the unit-norm tolerance: only the index's own copy tells
    (folder / "vectors.npy").write_bytes(bytes(data))


def nan_vectors(folder: Path, _manifest: Path) -> None:
    vectors = np.load(folder / "vectors.npy")
    vectors[::2] = np.nan  # every other row: live ones among them, whatever the tombstones
    np.save(folder / "vectors.npy", vectors)


def lying_manifest(_folder: Path, manifest: Path) -> None:
    data = json.loads(manifest.read_text())
    data["size"] += 3
    manifest.write_text(json.dumps(data))


CASES = {  # damage, the check that names it with checksums recorded, and without
    "index.faiss from another index": (foreign_index_file, "checksums", "index_vectors"),
    "metadata from another index": (foreign_metadata, "checksums", None),
    "flipped bytes in vectors.npy": (lambda _other: flipped_vector_bytes, "checksums", "index_vectors"),
    "NaN vectors": (lambda _other: nan_vectors, "checksums", "finite"),
    "a manifest whose counts lie": (lambda _other: lying_manifest, "counts", "counts"),
}


# Without checksums: a one-copy version written before they were recorded, or a segment whose files are larger
# than the service hashes before a swap (sizes are still compared). Metadata of another index with the same ids
# is told apart only by its checksum, so that case has no such run.
RUNS = [pytest.param(case, sums, id=f"{case}-{'checksums' if sums else 'unhashed'}")
        for case, (_, with_sums, without_sums) in CASES.items() for sums in (True, False)
        if (with_sums if sums else without_sums) is not None]


@pytest.mark.parametrize(("case", "checksums"), RUNS)
def test_a_damaged_version_is_refused_once_and_the_old_one_keeps_serving(index_dir, other_index, app_encoder,
                                                                       caplog, monkeypatch, case, checksums):
    make, with_sums, without_sums = CASES[case]
    check = with_sums if checksums else without_sums
    if not checksums:  # segments always record checksums: make every file too large to hash before a swap
        monkeypatch.setattr(segmented, "CHECKSUM_MAX_BYTES", 0)
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


def test_the_segmented_index_has_tombstones_and_passes(indexes, app_encoder):
    """The damage above is made to a segment with tombstones, in a version of two segments; undamaged, that
    version passes every check, its sample drawn from both segments."""
    source = FolderSource(indexes["segmented"])
    reader = source.open_version(None)
    try:
        structure = reader.structure()
        assert len(structure["segments"]) == 2 and structure["segments"][0]["deleted"] == 2
        assert trust_findings(reader, fingerprint=app_encoder.fingerprint(), dim=app_encoder.embed_dim) == []
        sample = reader.trust_sample(256)
        assert len(sample.ids) == reader.size == 9 and set(sample.counts.values()) == {9}
    finally:
        reader.close()
    assert source.verify() == []


def test_a_version_of_an_approximate_and_an_exact_segment_is_checked_across_both(tmp_path, app_encoder):
    """An IVF segment (with a tombstone) keeps no copy of its vectors: its sampled rows are searched (most must
    find themselves first), the exact segment's are compared with its index's copy; NaN in either is refused."""
    gallery = make_gallery(tmp_path / "gallery", per_category=12)
    options = BuildOptions(index_dir=tmp_path / "index", gallery=gallery, workers=0, faiss_device="cpu",
                           progress=False, index_factory="IVF4,Flat")
    assert build_index_with(app_encoder, options).status == "built"
    change_gallery(gallery)
    assert build_index_with(app_encoder, options).status == "built"
    source = FolderSource(tmp_path / "index")
    with source.open_version(None) as reader:
        kinds = [segment["factory"] for segment in reader.structure()["segments"]]
        assert kinds == ["IVF4,Flat", "Flat"] and reader.structure()["deleted"] == 2
        sample = reader.trust_sample(256)
        assert not sample.exact and len(sample.ids) == reader.size
        assert trust_findings(reader, fingerprint=app_encoder.fingerprint(), dim=app_encoder.embed_dim) == []
    holder, metrics = holder_for(tmp_path / "index", app_encoder)
    assert holder.refresh()
    for segment in (0, 1):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(segmented, "CHECKSUM_MAX_BYTES", 0)  # only the sample can tell
            bad = damaged_copy(tmp_path / "index", nan_vectors, segment=segment)
            point_at(tmp_path / "index", bad)
            assert not holder.refresh() and refused_count(metrics, "finite") == segment + 1
        point_at(tmp_path / "index", holder.version)
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
    assert problems[0].startswith("checksums: ") and "index.faiss" in problems[0]


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


@pytest.mark.parametrize("pointer", ["damaged", b"\xff\xfe", "/etc", "v-no-such-version", b"", None])
def test_a_start_on_a_bad_pointer_serves_the_newest_good_version_with_a_warning(index_dir, app_encoder, caplog,
                                                                                  pointer):
    """An empty or missing pointer beside versions (deleted by hand, a copy that missed it) is damage too: it said
    "No index version has been published yet" and served nothing."""
    good = live_name(index_dir)
    bad = damaged_copy(index_dir, nan_vectors)  # newer than the good one, so a fallback must skip it
    if pointer is None:
        (index_dir / "current").unlink()
    else:
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
    bad = damaged_copy(index_dir, nan_vectors)
    for version in FolderSource(index_dir).versions():
        if version != bad:
            path = index_dir / "versions" / version
            shutil.rmtree(path) if path.is_dir() else path.with_name(f"{version}.json").unlink()
    point_at(index_dir, bad)
    holder, _ = holder_for(index_dir, app_encoder)
    assert not holder.refresh() and not holder.ready and "checksums check" in (holder.reason or "")
    holder.close()


def test_an_index_emptied_under_the_service_keeps_serving_from_its_open_files(index_dir, app_encoder):
    """A folder's reader holds its files open: a volume unmounted for a moment does not stop the service (a Milvus
    collection dropped with its alias does: tests/milvus/test_milvus_outages.py)."""
    holder, _ = holder_for(index_dir, app_encoder)
    assert holder.refresh() and holder.ready
    for entry in index_dir.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    assert not holder.refresh() and holder.ready
    holder.close()


def test_an_engine_failing_while_a_new_version_is_checked_leaves_the_served_one_serving(index_dir, app_encoder,
                                                                                       caplog, monkeypatch):
    """Milvus answered the poll but the new collection was not loaded yet: the whole service said unavailable."""
    from photo_index import EngineUnavailableError

    holder, _ = holder_for(index_dir, app_encoder)
    assert holder.refresh()
    served = holder.version

    def not_loaded(*_args, **_kwargs):
        raise EngineUnavailableError("Milvus at x is unavailable (search: collection not loaded).")

    monkeypatch.setattr(holder.source, "current", lambda: "v-new")
    monkeypatch.setattr(holder.source, "open", not_loaded)
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        for _ in range(3):
            assert not holder.refresh()
            assert holder.ready and holder.version == served and holder.refusal is None
    assert len([r for r in caplog.records if "cannot be checked yet" in r.getMessage()]) == 1
    holder.close()


def test_a_reload_that_keeps_failing_the_same_way_logs_one_traceback(index_dir, app_encoder, caplog, monkeypatch):
    """An unexpected failure of every poll (an EOFError from a damaged file did this) logged a traceback at each poll
    for as long as it lasted; the served version stays either way."""
    import asyncio

    holder, _ = holder_for(index_dir, app_encoder)
    assert holder.refresh()
    failures = [OSError("disk gone"), OSError("disk gone"), OSError("disk gone"), RuntimeError("other")]

    def failing_refresh():
        raise failures.pop(0) if failures else RuntimeError("other")

    monkeypatch.setattr(holder, "refresh", failing_refresh)

    async def poll_briefly():
        task = asyncio.create_task(holder.poll_forever(0.01))
        await asyncio.sleep(0.3)
        task.cancel()

    with caplog.at_level(logging.INFO, logger=LOGGER):
        asyncio.run(poll_briefly())
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
    assert tracebacks == ["index reload failed", "index reload failed"]  # "disk gone" once, then "other"
    assert holder.ready
    holder.close()
