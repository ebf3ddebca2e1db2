"""Files that could not be decoded, remembered across builds: an unchanged broken file is not read again.

``INDEX_DIR/failed.json`` lists them under the key staging uses (path, size, mtime_ns, ctime_ns), so any write to
a file, or a new file in its place, reads it again. Only the file's own faults are remembered (empty, truncated,
corrupt, not an image, too large), not a file that could not be read (a permission, an I/O error: they pass) nor a
vector the encoder returned as NaN (the encoder's fault, not the file's). The list is dropped whenever decoding
could turn out otherwise: another photo preprocessing version, Pillow version, set of image formats or pixel
limit or input size; ``--rebuild`` reads every file again. It is a cache: a build that cannot write it still succeeds.
The failures an interrupted or refused run staged (``staging/failures.jsonl``) follow the same rules: dropped when
the decoding identity changed or with ``--rebuild``, and only the file's own faults are taken on resume.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import PIL
from PIL import Image

from encoder import PREPROCESSING_VERSION, Preprocessor
from photo_index.atomic import write_json

from .sources import Skipped
from .staging import KEY_FIELDS, FileKey

FAILED_FILE = "failed.json"
# Skip reasons (index_builder.embedding.classify_decode_error) that belong to the file's bytes.
REMEMBERED_REASONS = frozenset({"zero-byte", "not-an-image", "truncated", "corrupt", "too-large", "decoder-crashed"})


def decoding_identity(preprocess: Preprocessor) -> dict:
    """What decides whether a file decodes with ``preprocess``: a change to any of it reads the remembered files
    again."""
    Image.init()  # registers every format plugin, as the first decode would
    return {"preprocessing": PREPROCESSING_VERSION, "pillow": PIL.__version__, "formats": sorted(Image.OPEN),
            "max_pixels": preprocess.max_pixels, "image_size": preprocess.image_size}


def load(work_dir: Path, preprocess: Preprocessor) -> dict[FileKey, Skipped]:
    """The failures an earlier build remembered, when this code would decode their files the same way; else none
    (a missing or damaged file too: the files are then read again)."""
    try:
        data = json.loads((work_dir / FAILED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("decoding") != decoding_identity(preprocess) \
            or not isinstance(data.get("files"), list):
        return {}
    failures: dict[FileKey, Skipped] = {}
    for item in data["files"]:
        try:
            key = tuple(item[field] for field in KEY_FIELDS)
            skipped = Skipped(item["path"], item["reason"], item.get("detail", ""))
        except (TypeError, KeyError):
            continue
        if _well_formed(key) and skipped.reason in REMEMBERED_REASONS and isinstance(skipped.detail, str):
            failures[key] = skipped  # type: ignore[index]
    return failures


def _well_formed(key: tuple) -> bool:
    path, *numbers = key
    return isinstance(path, str) and all(isinstance(n, int) and not isinstance(n, bool) for n in numbers)


def save(work_dir: Path, preprocess: Preprocessor, failures: dict[FileKey, Skipped], scanned: Iterable[FileKey]
         ) -> int:
    """Remember the failures of the files this build scanned (a deleted or changed file drops out); returns how
    many. No failures: no file."""
    kept = [(key, failures[key]) for key in scanned
            if key in failures and failures[key].reason in REMEMBERED_REASONS]
    path = work_dir / FAILED_FILE
    if not kept:
        path.unlink(missing_ok=True)
        return 0
    write_json(path, {"decoding": decoding_identity(preprocess), "files": [
        {**dict(zip(KEY_FIELDS, key, strict=True)), "reason": skipped.reason, "detail": skipped.detail}
        for key, skipped in kept]})
    return len(kept)
