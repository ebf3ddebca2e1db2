"""A version: a small JSON manifest listing segments, each with the ids deleted from it (tombstones).

```json
{"format": "sbir-index/2", "version": "v...", "created_at": "...", "previous": "v..." | null,
 "dim": 512, "size": <live photos>, "next_id": 1234, "encoder": {"fingerprint": "...", ...},
 "segments": [{"name": "s...", "size": 1000, "deleted": 2, "tombstones": [17, 42],
               "search_params": {"nprobe": 16}},
              {"name": "s...", "size": 900000, "deleted": 5000,
               "tombstones": {"file": "tombstones/<sha256>.npy", "count": 5000}, "search_params": {}}],
 "segments_digest": "<sha256 of each segment's name, size and tombstones>",
 ... (whatever else the writer records: gallery, build counts, options)}
```
Tombstones are a sorted int64 set per segment: inline up to ``INLINE_TOMBSTONES`` ids, else a content-addressed
``.npy`` file under ``tombstones/`` (immutable, shared by every version with the same set). ``search_params`` are
the values readers use for that segment (the segment's calibration, or what ``tune`` chose later).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ....api import ids_problem
from ....errors import CountsMismatchError, IndexCorruptError

VERSION_FORMAT = "sbir-index/2"
TOMBSTONES = "tombstones"  # the folder of tombstone files, in the index folder
TOMBSTONE_FILE = re.compile(rf"{TOMBSTONES}/[0-9a-f]{{32}}\.npy")  # what _write_array names one
INLINE_TOMBSTONES = 64
SEGMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")  # one folder of segments/ (new_segment_name's are)
NO_IDS = np.zeros(0, dtype=np.int64)
RESERVED = ("format", "version", "created_at", "previous", "dim", "size", "next_id", "encoder", "segments",
            "segments_digest")
# SHA-256 (hex, 32 characters) over each segment's name, size and tombstones as written: a flipped digit in an inline
# tombstone brings a deleted photo back and hides a live one, and would otherwise pass every other check (tombstone
# files are checked by their names). A manifest written before it was recorded is not checked.
SEGMENTS_DIGEST = "segments_digest"


@dataclass(frozen=True, eq=False)  # holds an array: compare fields explicitly
class SegmentRef:
    """One segment as a version sees it."""

    name: str
    size: int  # rows in the segment
    tombstones: np.ndarray = field(default_factory=lambda: NO_IDS)  # sorted ids deleted from it
    search_params: dict = field(default_factory=dict)

    @property
    def deleted(self) -> int:
        return len(self.tombstones)

    @property
    def live(self) -> int:
        return self.size - self.deleted

    def with_deleted(self, ids: np.ndarray) -> SegmentRef:
        return replace(self, tombstones=np.union1d(self.tombstones, ids).astype(np.int64))


@dataclass(frozen=True, eq=False)
class Version:
    """A published (or about to be published) state of the index."""

    name: str
    created_at: str
    previous: str | None
    dim: int
    next_id: int
    encoder: dict  # at least {"fingerprint": ...}
    segments: tuple[SegmentRef, ...]
    fields: dict = field(default_factory=dict)  # the rest of the manifest (gallery, build counts, options)

    @property
    def fingerprint(self) -> str:
        return str(self.encoder.get("fingerprint", ""))

    @property
    def size(self) -> int:
        return sum(ref.live for ref in self.segments)

    @property
    def deleted(self) -> int:
        return sum(ref.deleted for ref in self.segments)

    def segment_names(self) -> list[str]:
        return [ref.name for ref in self.segments]

    def manifest(self) -> dict:
        """The manifest's fields other than the segment list (what readers and builds read of a version)."""
        return {**self.fields, "format": VERSION_FORMAT, "version": self.name, "created_at": self.created_at,
                "previous": self.previous, "dim": self.dim, "size": self.size, "next_id": self.next_id,
                "encoder": self.encoder}


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array))
    return buffer.getvalue()


def content_name(array: np.ndarray) -> str:
    """The content address of an array file (tombstones, a query sample): same content, same file."""
    return content_name_of(npy_bytes(array))


def content_name_of(data: bytes) -> str:
    """The content address of an array file's bytes (:func:`npy_bytes`)."""
    return hashlib.sha256(data).hexdigest()[:32] + ".npy"


def version_to_json(version: Version, write_tombstones: Callable[[np.ndarray], str]) -> dict:
    """The manifest of ``version``; ``write_tombstones(ids) -> relative path`` stores a large tombstone set."""
    refs = []
    for ref in version.segments:
        tombstones: list[int] | dict = ref.tombstones.tolist()
        if ref.deleted > INLINE_TOMBSTONES:
            tombstones = {"file": write_tombstones(ref.tombstones), "count": ref.deleted}
        refs.append({"name": ref.name, "size": ref.size, "deleted": ref.deleted, "tombstones": tombstones,
                     "search_params": ref.search_params})
    return {**version.manifest(), "segments": refs, SEGMENTS_DIGEST: segments_digest(version.name, refs)}


def segments_digest(name: str, refs: list) -> str:
    """``<version name>:<digest>`` of a manifest's segment list (see SEGMENTS_DIGEST); search parameters are left
    out (tuning). The name binds it to its version: older code keeps unknown fields and would copy a stale digest
    into the versions it writes (after a rollback), which must read as unrecorded, not as damage."""
    listed = [[item.get("name"), item.get("size"), item.get("deleted"), item.get("tombstones")]
              if isinstance(item, dict) else item for item in refs]
    return f"{name}:{hashlib.sha256(json.dumps(listed, sort_keys=True).encode()).hexdigest()[:32]}"


def version_from_json(data: dict, root: Path, where: str) -> Version:
    """Parse a manifest (``root``: the index folder tombstone files are relative to)."""
    try:
        if data.get("format") != VERSION_FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, not {VERSION_FORMAT}")
        refs = tuple(_ref_from_json(item, root) for item in data["segments"])
        # after the segments parse (what cannot be a segment is named as such); a digest of another version's name
        # was copied by older code, which does not write one
        recorded = data.get(SEGMENTS_DIGEST)
        if isinstance(recorded, str) and recorded.startswith(f"{data['version']}:") \
                and recorded != segments_digest(str(data["version"]), data["segments"]):
            raise ValueError("its segment list is not what was written (the segments' digest differs): a changed "
                             "size or tombstone would show deleted photos or hide live ones")
        version = Version(name=str(data["version"]), created_at=str(data["created_at"]), previous=data["previous"],
                          dim=_count(data["dim"], "dim"), next_id=_count(data["next_id"], "next_id"),
                          encoder=dict(data["encoder"]), segments=refs,
                          fields={k: v for k, v in data.items() if k not in RESERVED})
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ArithmeticError) as error:
        # ArithmeticError: Infinity or an integer past int64 where a count or an id belongs
        raise IndexCorruptError(f"Version manifest {where} is damaged: {error}") from error
    if len({ref.name for ref in refs}) != len(refs):
        raise IndexCorruptError(f"Version manifest {where} lists a segment twice.")
    if type(data.get("size")) is not int or data["size"] != version.size:
        raise CountsMismatchError(f"Version manifest {where} is damaged: its size {data.get('size')!r} is not the "
                                f"{version.size} live photos its segments hold.")
    return version


def _count(value: object, what: str) -> int:
    """A whole number >= 0 as JSON spells one (not 3.7, "3", true or Infinity)."""
    if type(value) is not int or value < 0:
        raise ValueError(f"{what} is {value!r}, not a whole number")
    return value


def _ref_from_json(item: dict, root: Path) -> SegmentRef:
    if not isinstance(item["name"], str) or not SEGMENT_NAME.fullmatch(item["name"]):
        # a name is one folder of segments/: "../x" or an absolute path would be read outside the index
        raise ValueError(f"segment name {str(item['name'])[:80]!r} is not a folder name of segments/")
    raw = item["tombstones"]
    if isinstance(raw, dict):
        tombstones, count = _tombstone_file(root, raw["file"]), _count(raw["count"], "a tombstone count")
    elif isinstance(raw, list) and all(type(i) is int for i in raw):
        tombstones = np.array(raw, dtype=np.int64)  # OverflowError past int64
        count = len(tombstones)
    else:
        raise ValueError(f"the tombstones of segment {item['name']} are not a list of ids")
    if problem := ids_problem(tombstones):
        raise ValueError(f"the tombstones of segment {item['name']}: {problem}")
    if len(tombstones) != count:
        raise ValueError(f"the tombstones of segment {item['name']} are {len(tombstones)} ids; the manifest says "
                         f"{count}")
    return SegmentRef(name=str(item["name"]), size=_count(item["size"], "a segment size"), tombstones=tombstones,
                      search_params=dict(item.get("search_params") or {}))


def _tombstone_file(root: Path, file: object) -> np.ndarray:
    """The array of a content-addressed tombstone file, checked against its name: a file changed after it was
    written (a disk error, a hand edit) would bring deleted photos back and hide live ones."""
    if not isinstance(file, str) or not TOMBSTONE_FILE.fullmatch(file):
        raise ValueError(f"tombstone file {file!r} is not named {TOMBSTONES}/<sha256>.npy")
    data = (root / file).read_bytes()
    if content_name_of(data) != Path(file).name:
        raise ValueError(f"{file} does not hold what its name says (its content changed after it was written)")
    return np.load(io.BytesIO(data), allow_pickle=False)


def read_version_file(path: Path, root: Path) -> Version:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as error:
        raise IndexCorruptError(f"Version manifest {path} is unreadable: {error}") from error
    if not isinstance(data, dict):
        raise IndexCorruptError(f"Version manifest {path} is not a JSON object.")
    return version_from_json(data, root, str(path))
