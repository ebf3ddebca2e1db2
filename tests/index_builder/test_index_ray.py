"""The Ray distributor on a real local Ray cluster: the same index as the local build, and the same guarantees."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from encoder import EncoderConfig, apply_precision, build_encoder, resolve_precision
from encoder import precision as precision_module
from index_builder.cli import main
from index_builder.embedding import embed_files
from index_builder.local_distributor import LocalDistributor
from index_builder.ray_distributor import EncoderPayload, RayDistributor
from index_builder.sources import scan_folder
from index_builder.staging import ENTRIES, FileKey, Staging, file_key
from photo_index.backends.folder import IndexReader
from photo_index.errors import BuildError
from photo_index.format import STAGING

from .conftest import add_broken_files, write_photo
from .killing import kill_build_mid_embedding, write_distinct_photos
from .raycluster import MARK

pytestmark = pytest.mark.slow


def ray_distributor(**options) -> RayDistributor:
    return RayDistributor(decoders=1, **options)  # one read task at a time: this box has 2 cores


def _without_names(value, names: set[str]):
    """``value`` with the segment names (and segment timings) left out, so two builds of one gallery compare."""
    if isinstance(value, dict):
        return {key: _without_names(item, names) for key, item in value.items()
                if key not in ("name", "timings") and not (isinstance(item, str) and item in names)}
    if isinstance(value, list):
        return [_without_names(item, names) for item in value]
    return value


def snapshot(index_dir: Path) -> dict:
    """What a build published: ids by path, vectors by id, the version's files and manifest sections."""
    with IndexReader.open(index_dir) as reader:
        ids, vectors = reader.vectors()
        records = reader.records(ids)
        manifest = reader.manifest
    names = [segment["name"] for segment in manifest["index"]["segments"]]  # named by the time they were written
    return {
        "ids": {record.path: record.id for record in records},
        "vectors": dict(zip(ids.tolist(), np.array(vectors), strict=True)),
        "files": [sorted(path.name for path in (index_dir / "segments" / name).iterdir()) for name in names],
        "manifest": {key: manifest[key] for key in ("format", "size", "dim", "next_id")},
        "index": _without_names(
            {key: value for key, value in manifest["index"].items() if key != "timings"}, set(names)),
        "sections": sorted(manifest),
        "encoder": manifest["encoder"]["fingerprint"],
    }


def assert_same_index(local: dict, distributed: dict) -> None:
    assert distributed["ids"] == local["ids"]
    for part in ("files", "manifest", "index", "sections"):
        assert distributed[part] == local[part]
    assert distributed["encoder"] == local["encoder"]
    for photo_id, vector in local["vectors"].items():
        np.testing.assert_allclose(distributed["vectors"][photo_id], vector, atol=1e-5)


WORK = ("status", "previous", "size", "added", "updated", "removed", "unchanged", "embedded", "resumed", "factory")


def work(report) -> dict:
    """What a build did (no timings, names or paths)."""
    return {name: getattr(report, name) for name in WORK}


def skips(report) -> list[tuple[str, str]]:
    return sorted((item.path, item.reason) for item in report.skipped)


def test_ray_build_of_broken_gallery_equals_local_build(ray_driver, make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 5, "dog": 4})
    expected = add_broken_files(gallery, tmp_path)

    local = build(gallery=gallery, index_dir=tmp_path / "local")
    distributed = build(gallery=gallery, index_dir=tmp_path / "ray", distributor=ray_distributor())

    assert {os.path.basename(path): reason for path, reason in skips(distributed)} == expected
    assert skips(distributed) == skips(local)
    assert work(distributed) == work(local) and (local.size, local.embedded) == (9, 9)
    assert_same_index(snapshot(tmp_path / "local"), snapshot(tmp_path / "ray"))


def test_ray_actors_embed_in_the_drivers_precision(ray_driver, make_gallery, build, tmp_path):
    # A bf16 driver: before the fix its actors ran fp32 on bf16-rounded weights while the manifest said bf16.
    encoder = build_encoder(EncoderConfig(backbone="sbir-tiny", pretrained="none", prompts=None), "cpu")
    apply_precision(encoder, resolve_precision("bf16", "cpu"))
    gallery = make_gallery({"cat": 3, "dog": 2})

    build(encoder, gallery=gallery, index_dir=tmp_path / "local")
    build(encoder, gallery=gallery, index_dir=tmp_path / "ray", distributor=ray_distributor())

    for name in ("local", "ray"):
        with IndexReader.open(tmp_path / name) as reader:
            assert reader.manifest["encoder"]["precision"] == "bf16"
    assert_same_index(snapshot(tmp_path / "local"), snapshot(tmp_path / "ray"))


def test_ray_actors_resolve_the_requested_precision_from_the_drivers_fp32_weights(ray_driver, make_gallery, build,
                                                                                tmp_path):
    # --precision reaches the actors, which cast the driver's fp32 weights themselves (as a local bf16 build does),
    # and the manifest and the report record what they computed in, not the fp32 driver's precision.
    bf16 = build_encoder(EncoderConfig(backbone="sbir-tiny", pretrained="none", prompts=None), "cpu")
    apply_precision(bf16, resolve_precision("bf16", "cpu"))
    gallery = make_gallery({"cat": 3, "dog": 2})

    build(bf16, gallery=gallery, index_dir=tmp_path / "local")
    report = build(gallery=gallery, index_dir=tmp_path / "ray", distributor=ray_distributor(precision="bf16"))

    assert report.precision == "bf16" and report.distributor == "ray"
    assert "bf16, on ray)" in report.summary()  # it said "1 encoder lane": the driver's, which embeds nothing
    with IndexReader.open(tmp_path / "ray") as reader:
        assert reader.manifest["encoder"]["precision"] == "bf16"
    assert_same_index(snapshot(tmp_path / "local"), snapshot(tmp_path / "ray"))


@pytest.mark.parametrize(("flags", "expected"), [(frozenset({"amx_bf16"}), "bf16"), (frozenset({"avx2"}), "fp32")])
def test_auto_is_resolved_on_the_actors_device_not_the_drivers(tiny_baseline, monkeypatch, flags, expected):
    # The driver's choice (fp32 here) does not bind an actor asked for `auto`: it decides on its own device.
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: flags)
    encoder = EncoderPayload.of(tiny_baseline, "auto").build("cpu")
    assert encoder.precision == expected
    assert EncoderPayload.of(tiny_baseline).build("cpu").precision == tiny_baseline.precision == "fp32"


def test_actors_choosing_their_precision_refuse_a_driver_already_in_bf16():
    bf16 = build_encoder(EncoderConfig(backbone="sbir-tiny", pretrained="none", prompts=None), "cpu")
    apply_precision(bf16, resolve_precision("bf16", "cpu"))
    with pytest.raises(BuildError, match="need its fp32 weights"):
        EncoderPayload.of(bf16, "auto")
    with pytest.raises(BuildError, match="compute in auto, fp32, bf16, not 'fp16'"):
        RayDistributor(precision="fp16")


def test_incremental_ray_build_equals_local_incremental_build(ray_driver, make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 4, "dog": 4})
    build(gallery=gallery, index_dir=tmp_path / "local")
    shutil.copytree(tmp_path / "local", tmp_path / "ray", symlinks=True)
    # Changes: new photos, a removed one, new content under an old name, a touched one (same bytes), a broken one,
    # a moved one (keeps its vector: read, not embedded).
    (gallery / "cat" / "cat_0.jpg").rename(gallery / "dog" / "from_cat.jpg")
    write_photo(gallery / "bird" / "bird_0.jpg", 500)
    write_photo(gallery / "dog" / "dog_new.png", 501)
    (gallery / "cat" / "cat_3.jpg").unlink()
    write_photo(gallery / "dog" / "dog_1.png", 502)
    os.utime(gallery / "cat" / "cat_2.webp", ns=(time.time_ns(), time.time_ns()))
    (gallery / "cat" / "zero.jpg").write_bytes(b"")

    local = build(gallery=gallery, index_dir=tmp_path / "local")
    distributed = build(gallery=gallery, index_dir=tmp_path / "ray", distributor=ray_distributor())

    assert work(local) == work(distributed)
    assert (local.added, local.updated, local.removed, local.embedded) == (3, 1, 2, 3)
    assert skips(distributed) == skips(local) == [(str(gallery / "cat" / "zero.jpg"), "zero-byte")]
    assert_same_index(snapshot(tmp_path / "local"), snapshot(tmp_path / "ray"))


def file_keys(folder: Path) -> list[FileKey]:
    return [file_key(photo) for photo in sorted(scan_folder(folder).photos, key=lambda photo: photo.path)]


def test_actor_dying_mid_batch_loses_and_duplicates_no_photo(ray_driver, make_gallery, tiny_baseline, tmp_path):
    keys = file_keys(make_gallery({"cat": 12, "dog": 12}))
    marker = tmp_path / "actor-died"
    staged = {}
    for name, distributor in (("local", LocalDistributor()), ("ray", ray_distributor(fail_once=str(marker)))):
        staging = Staging(tmp_path / name, tiny_baseline.fingerprint(), tiny_baseline.embed_dim)
        embed_files(tiny_baseline, keys, staging, distributor=distributor, batch_size=4, workers=0, progress=False)
        staged[name] = (dict(staging.entries), np.array(staging.vectors()))
        rows = [json.loads(line)["path"] for line in (tmp_path / name / ENTRIES).read_text().splitlines()]
        staging.close()
        assert sorted(rows) == sorted(key[0] for key in keys)  # every photo staged exactly once
    assert marker.exists()  # the actor did die mid-batch (then Ray restarted it and retried the batch)
    (local_entries, local_vectors), (ray_entries, ray_vectors) = staged["local"], staged["ray"]
    assert ray_entries.keys() == local_entries.keys()
    for key, (row, sha256) in local_entries.items():
        assert ray_entries[key][1] == sha256
        np.testing.assert_allclose(ray_vectors[ray_entries[key][0]], local_vectors[row], atol=1e-5)


def test_killed_ray_driver_resumes_without_redoing_finished_photos(ray_cluster, ray_driver, build, tiny_baseline,
                                                                   tmp_path):
    gallery, index_dir = tmp_path / "gallery", tmp_path / "index"
    total = 400  # enough that the kill lands mid-way
    write_distinct_photos(gallery / "dog", total)
    # Marked: the cluster's check for leftover processes covers this driver too.
    staged = kill_build_mid_embedding(
        gallery, index_dir, "--distributor", "ray", "--ray-address", ray_cluster.address, "--ray-decoders", "1",
        env={**ray_cluster.driver_env, MARK: ray_cluster.mark}, timeout=240)
    assert 0 < staged < total, "the kill came too late or too early to test resuming"
    staging = Staging(index_dir.absolute() / STAGING, tiny_baseline.fingerprint(), tiny_baseline.embed_dim)
    finished = staging.count  # what survived the kill whole (a torn tail is cut, as the next build does)
    staging.close()

    report = build(gallery=gallery, distributor=ray_distributor(), batch_size=64)

    assert report.resumed == finished and report.embedded == total - finished  # nothing finished is redone
    assert report.added == report.size == total


def test_sigterm_unwinds_a_ray_build_as_it_does_a_local_one(ray_cluster, tmp_path):
    """ray.init replaced the build's SIGTERM handler with its own and a crash handler: exit 134 and a stack dump."""
    gallery, index_dir = tmp_path / "gallery", tmp_path / "index"
    write_distinct_photos(gallery / "dog", 400)
    staged = kill_build_mid_embedding(
        gallery, index_dir, "--distributor", "ray", "--ray-address", ray_cluster.address, "--ray-decoders", "1",
        env={**ray_cluster.driver_env, MARK: ray_cluster.mark}, timeout=240, sig=signal.SIGTERM)
    assert staged >= 8 and not (index_dir / "current").exists()  # staged for the next run; nothing published


def test_the_clusters_messages_go_to_stderr_not_to_the_json_report(ray_driver, tiny_baseline, monkeypatch, capsys):
    """Ray prints "(raylet) A worker died ..." to stdout while it embeds: with --json that broke the report."""
    monkeypatch.setattr(RayDistributor, "_embed", lambda self, ray, encoder, job, writer: print("(raylet) noise"))
    ray_distributor().run(tiny_baseline, None, None)
    captured = capsys.readouterr()
    assert "(raylet) noise" in captured.err and captured.out == ""


def test_ray_options_are_checked_before_anything_starts(tmp_path, capsys):
    code = main(["build", "--gallery", str(tmp_path), "--out", str(tmp_path / "index"), "--distributor", "ray",
                 "--ray-actors", "0"])
    assert code == 2 and "--ray-actors and --ray-decoders must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "index").exists()
