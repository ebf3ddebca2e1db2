"""The largest image a HEIF/AVIF file codes, read from its boxes before any pixel is decoded.

Pillow reports a HEIF's size after its crop (``clap``) and rotation: a 14 KB file may declare 64x64 and make libheif
decode 8191x8191 first. The coded sizes are the ``ispe`` (image spatial extents) properties in
``meta/iprp/ipco``; the largest of them (a grid's full canvas, or one tile) is what decoding costs. The boxes are
walked by their headers (seeking over bodies), so padding before or inside ``meta`` cannot push the properties out
of reach; a file where none is found is the caller's to refuse (every HEIF/AVIF image item must have one).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

MAX_BOXES = 4096  # boxes walked at one level: a real file has a handful at the top and tens of properties
_PATH = (b"meta", b"iprp", b"ipco")  # where the ispe properties live
_FULL_BOXES = {b"meta": 4}  # boxes whose body starts with 4 bytes of version and flags before their children


def largest_coded_pixels(stream: BinaryIO) -> int | None:
    """width x height of the largest ``ispe`` in the file's ``meta`` box; None when there is none to read (not an
    ISO media file, no meta box, damage, or more boxes than any real file has). The stream is left at its start."""
    try:
        end = stream.seek(0, 2)
        extents = [width * height for width, height in _extents(stream, 0, end, 0)]
    except (OSError, ValueError, struct.error):
        extents = []
    finally:
        stream.seek(0)
    return max(extents) if extents else None


def _extents(stream: BinaryIO, start: int, end: int, depth: int) -> Iterator[tuple[int, int]]:
    """(width, height) of every ``ispe`` under the boxes in ``[start, end)``, entering meta, iprp, ipco in turn."""
    for kind, body, box_end in _boxes(stream, start, end):
        if depth == len(_PATH):
            if kind == b"ispe" and body + 12 <= box_end:
                stream.seek(body + 4)  # after version and flags
                yield struct.unpack(">II", stream.read(8))
        elif kind == _PATH[depth]:
            yield from _extents(stream, body + _FULL_BOXES.get(kind, 0), box_end, depth + 1)
            if depth == 0:
                return  # one meta box at the top level


def _boxes(stream: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, body start, box end) of the boxes in ``[start, end)``, read header by header; stops at damage."""
    at = start
    for _ in range(MAX_BOXES):
        if at + 8 > end:
            return
        stream.seek(at)
        size, kind = struct.unpack(">I4s", stream.read(8))
        header = 8
        if size == 1:
            if at + 16 > end:
                return
            size, header = struct.unpack(">Q", stream.read(8))[0], 16
        box_end = end if size == 0 else at + size
        if box_end > end or box_end < at + header:
            return
        yield kind, at + header, box_end
        at = box_end
