"""Acceptance-style regressions: hostile galleries, manifests and index folders give reasons or clear errors."""

from __future__ import annotations

import json
import struct
import zlib

from index_builder import current_version
from index_builder.cli import main


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (a decompression-bomb header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_bomb_header_is_skipped_as_too_large(make_gallery, build, tmp_path):
    gallery = make_gallery({"cat": 2})
    (gallery / "cat" / "bomb.png").write_bytes(_png_header(100_000, 100_000))
    report = build(gallery=gallery)
    assert report.size == 2
    assert [(s.path.rsplit("/", 1)[-1], s.reason) for s in report.skipped] == [("bomb.png", "too-large")]
