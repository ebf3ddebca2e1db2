"""The largest image a HEIF/AVIF file codes, read from its boxes before any pixel is decoded.

Pillow reports a HEIF's size after its crop (``clap``) and rotation: a 14 KB file may declare 64x64 and make libheif
decode 8191x8191 first. The coded sizes are the ``ispe`` (image spatial extents) properties in
``meta/iprp/ipco``; the largest of them (a grid's full canvas, or one tile) is what decoding costs.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

MAX_META_BYTES = 4 * 2**20  # a photo's meta box is a few KB (a grid's item list a few more); past this it is damage
MAX_TOP_BOXES = 64  # top-level boxes read looking for meta (ftyp, meta, mdat: a real file has a handful)
_CONTAINERS = {b"meta": 4, b"iprp": 0, b"ipco": 0}  # boxes to enter, with the bytes of their own header to skip


def largest_coded_pixels(stream: BinaryIO) -> int | None:
    """width x height of the largest ``ispe`` in the file's ``meta`` box; None when there is none to read (not an
    ISO media file, no meta box): the caller's other checks apply. The stream is left at its start."""
    try:
        meta = _top_level_meta(stream)
    finally:
        stream.seek(0)
    if meta is None:
        return None
    extents = [width * height for width, height in _extents(meta)]
    return max(extents) if extents else None


def _top_level_meta(stream: BinaryIO) -> bytes | None:
    stream.seek(0)
    for _ in range(MAX_TOP_BOXES):
        header = stream.read(8)
        if len(header) < 8:
            return None
        size, kind = struct.unpack(">I4s", header)
        header_size = 8
        if size == 1:
            large = stream.read(8)
            if len(large) < 8:
                return None
            size, header_size = struct.unpack(">Q", large)[0], 16
        if kind == b"meta":
            body = size - header_size if size else MAX_META_BYTES
            return stream.read(min(max(body, 0), MAX_META_BYTES))
        if size == 0 or size < header_size:  # to the end of the file, or damage: no meta after it
            return None
        stream.seek(size - header_size, 1)
    return None


def _extents(meta: bytes) -> list[tuple[int, int]]:
    """(width, height) of every ``ispe`` inside ``meta`` (its body, after the box header), descending into
    iprp/ipco."""
    found: list[tuple[int, int]] = []
    pending = [(meta, 4)]  # meta is a full box: 4 bytes of version and flags before its children
    while pending:
        data, at = pending.pop()
        while at + 8 <= len(data):
            size, kind = struct.unpack_from(">I4s", data, at)
            header = 8
            if size == 1 and at + 16 <= len(data):
                size, header = struct.unpack_from(">Q", data, at + 8)[0], 16
            end = len(data) if size == 0 else at + size
            if end <= at or end > len(data):
                break
            if kind == b"ispe" and at + header + 12 <= end:
                width, height = struct.unpack_from(">II", data, at + header + 4)  # after version and flags
                found.append((width, height))
            elif kind in _CONTAINERS and kind != b"meta":
                pending.append((data[at + header:end], _CONTAINERS[kind]))
            at = end
    return found
