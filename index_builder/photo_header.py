"""What a photo's header says: its size in pixels (as shown, after the EXIF orientation) and its EXIF capture
time. Read with Pillow's lazy open (header and EXIF block only, no pixel decoding), at indexing time, so the
service reports them without touching the file."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PIL import Image

EXIF_IFD = 0x8769
DATETIME_ORIGINAL, OFFSET_TIME_ORIGINAL, DATETIME, ORIENTATION = 36867, 36881, 306, 274
ROTATED = {5, 6, 7, 8}  # orientations that swap width and height when shown
_OFFSET = re.compile(r"[+-]\d\d:\d\d")


@dataclass(frozen=True)
class PhotoHeader:
    width: int | None = None
    height: int | None = None
    taken_at: str | None = None  # ISO 8601, as the camera wrote it (with its offset when it recorded one)


def capture_time(stamp: object, offset: object = None) -> str | None:
    """EXIF "YYYY:MM:DD HH:MM:SS" (+ OffsetTimeOriginal "+HH:MM") → ISO 8601; None when absent or malformed."""
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.strptime(stamp.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None  # "0000:00:00 00:00:00" and other placeholders cameras write
    zone = offset.strip("\x00 ") if isinstance(offset, str) and _OFFSET.fullmatch(offset.strip("\x00 ")) else ""
    return moment.isoformat() + zone


def read_header(path: str | Path) -> PhotoHeader:
    """The photo's shown size and capture time; empty when the header cannot be read (the build reports such
    files itself when it decodes them)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a huge image only needs its header here
            with Image.open(path) as image:
                width, height = image.size
                # Pillow gives a TIFF's size already turned by its orientation; other formats' as stored.
                stored_turned = image.format == "TIFF"
                exif = image.getexif()
                orientation = exif.get(ORIENTATION)
                details = exif.get_ifd(EXIF_IFD)
                taken = capture_time(details.get(DATETIME_ORIGINAL), details.get(OFFSET_TIME_ORIGINAL)) \
                    or capture_time(exif.get(DATETIME))
    except Exception:  # noqa: BLE001 - any unreadable header leaves the details unknown, never fails a build
        return PhotoHeader()
    if orientation in ROTATED and not stored_turned:
        width, height = height, width
    return PhotoHeader(int(width), int(height), taken)
