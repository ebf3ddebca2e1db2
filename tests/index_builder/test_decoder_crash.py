"""A file whose decoding kills the decoding worker (a native decoder's crash) is skipped; the build goes on."""

from __future__ import annotations

import os
import signal

from encoder import Preprocessor
from index_builder import known_failures

CRASH = b"CRASH-ME"  # a file starting so makes the (patched) decoder die as libheif or libtiff might


def crashing_decoder(monkeypatch, signum=signal.SIGSEGV):
    real = Preprocessor.photo_file_pixels

    def photo_file_pixels(self, data):
        if data.startswith(CRASH):
            os.kill(os.getpid(), signum)
        return real(self, data)

    monkeypatch.setattr(Preprocessor, "photo_file_pixels", photo_file_pixels)  # inherited by forked workers


def test_a_file_that_kills_its_decoding_worker_is_skipped_and_remembered(make_gallery, build, tmp_path, monkeypatch):
    # Before: RuntimeError "DataLoader worker exited unexpectedly", exit 1, and every resume died at the same batch
    gallery = make_gallery({"cat": 6, "dog": 5})
    (gallery / "cat" / "evil.jpg").write_bytes(CRASH + bytes(100))
    crashing_decoder(monkeypatch)
    report = build(gallery=gallery, workers=2, batch_size=2)
    assert report.size == 11 and report.embedded == 11
    assert [(os.path.basename(item.path), item.reason) for item in report.skipped] == [("evil.jpg", "decoder-crashed")]
    assert "decoder-crashed" in known_failures.REMEMBERED_REASONS
    again = build(gallery=gallery, workers=2, batch_size=2)  # not read again: remembered as the file's own fault
    assert again.status == "unchanged" and [item.reason for item in again.skipped] == ["decoder-crashed"]


def test_a_file_whose_decoding_is_killed_like_by_the_oom_killer_is_read_again_next_build(make_gallery, build,
                                                                                      monkeypatch):
    gallery = make_gallery({"cat": 3})
    (gallery / "cat" / "huge.jpg").write_bytes(CRASH + bytes(100))
    crashing_decoder(monkeypatch, signal.SIGKILL)
    report = build(gallery=gallery, workers=1, batch_size=2)
    assert report.size == 3 and [item.reason for item in report.skipped] == ["out-of-memory"]
    assert "out-of-memory" not in known_failures.REMEMBERED_REASONS


def test_the_crashing_file_is_found_when_the_encoder_is_slower_than_the_decoders(make_gallery, build, monkeypatch):
    # The loader hands out one more batch while one is embedded: a window a batch short never held the crasher,
    # and every retry died on it again.
    import time

    from index_builder import local_distributor

    gallery = make_gallery({"cat": 11})
    (gallery / "cat" / "cat_5b.jpg").write_bytes(CRASH + bytes(100))  # the 7th file in scan order
    crashing_decoder(monkeypatch)
    real_embed = local_distributor.embed_pixels
    cut = []

    def slow_embed(*args):  # the worker dies while a batch is embedded: torch's SIGCHLD handler must wait
        try:
            for _ in range(10):
                time.sleep(0.02)
        except RuntimeError as error:
            cut.append(str(error))
            raise
        return real_embed(*args)

    monkeypatch.setattr(local_distributor, "embed_pixels", slow_embed)
    report = build(gallery=gallery, workers=1, batch_size=1)
    assert report.size == 11 and [item.reason for item in report.skipped] == ["decoder-crashed"]
    assert not cut  # raised inside the embedding (or a staging write), it could pair a photo with another's vector


def test_a_worker_death_reported_while_a_sigterm_unwinds_does_not_swallow_the_sigterm():
    # SIGTERM to the whole tree: the build's handler raises first, torch's SIGCHLD handler then raises "DataLoader
    # worker ... killed" while that unwinds; taken for a crash, the build went on
    from index_builder.cli import Interrupted
    from index_builder.local_distributor import _interruption_behind

    try:
        try:
            raise Interrupted(signal.SIGTERM)
        except Interrupted:
            raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.") from None
    except RuntimeError as error:
        found = _interruption_behind(error)
    assert isinstance(found, Interrupted) and found.signum == signal.SIGTERM
    assert _interruption_behind(RuntimeError("DataLoader worker (pid 1) exited unexpectedly")) is None
