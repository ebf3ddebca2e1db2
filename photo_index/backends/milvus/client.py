"""The Milvus connection and data model, using only API that Milvus 2.3 and 2.6 both have.

Data model: the name a user gives (``--collection NAME``) is an *alias*; it points at one photo collection
``NAME__v<time>`` (a version). Photo collections hold the id (INT64 primary key), the vector (FLOAT_VECTOR, IP
metric) and the photo record. The manifest of every version (the encoder fingerprint included) is one row of the
shared metadata collection ``MANIFESTS``, keyed by a hash of the version's name. Every call has a timeout, so an
unreachable server is an :class:`EngineUnavailableError` after at most ``timeout`` seconds, never a hang.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ...errors import BuildError, EngineUnavailableError, IndexCorruptError, IndexNotFoundError
from ...location import DEFAULT_CONSISTENCY, DEFAULT_MILVUS_TIMEOUT_S, VERSION_SEPARATOR, MilvusLocation

MANIFESTS = "sbir_manifests"
VARCHAR_MAX = 65_535
MANIFEST_PART = VARCHAR_MAX - 64  # the JSON in each row of a manifest stored in parts (a header goes first)
MANIFEST_PARTS_MAX = 64  # rows per manifest: 4 MB, tens of thousands of category names
MANIFEST_READ_TRIES = 3  # a manifest rewritten while read (parts of two writes) is read again
PATH_MAX = 4_096
CATEGORY_MAX = 1_024
PHOTO_FIELDS = ["id", "path", "category", "sha256", "size", "mtime_ns", "added_at", "updated_at", "metadata"]
# Added later (a collection made before has none of them); Milvus fields are not nullable: -1 / "" mean unknown.
DETAIL_FIELDS = ["width", "height", "taken_at"]
QUERY_LIMIT = 16_384  # Milvus's largest query window (offset + limit)
TOPK_MAX = MilvusLocation.max_depth
VERSION_TIME = "%Y%m%d%H%M%S%f"  # 20 digits
# Server answers that are a refusal of what was asked, not a server that is away: ParameterInvalid/Missing, the
# alias/collection name conflicts (Milvus 2.3+ error codes). Any other server code (65535 "unknown" included) stays
# "unavailable", as a restarting server answers with many of them.
REFUSED_CODES = frozenset({1100, 1101, 1601, 1602})
# pymilvus's exceptions for a request it refuses before sending it (its other ones, SchemaNotReady and the like,
# are a server not ready: unavailable, retried)
CLIENT_CHECKS = frozenset({
    "ParamError", "DataNotMatchException", "DataTypeNotMatchException", "DataTypeNotSupportException",
    "FieldTypeException", "FieldsTypeException", "PrimaryKeyException", "AutoIDException", "PartitionKeyException",
    "ClusteringKeyException", "AmbiguousIndexName", "InvalidConsistencyLevel", "CannotInferSchemaException",
    "FunctionsTypeException", "ConnectionConfigException",
})
BUILD_MARK = "sbir-build"  # the description of a photo collection this builder created (with host and pid)
T = TypeVar("T")


def new_version_name(alias: str) -> str:
    """Sortable by creation time; Milvus names allow only letters, digits and underscores."""
    return f"{alias}{VERSION_SEPARATOR}{datetime.now(UTC).strftime(VERSION_TIME)}"


def is_version_of(alias: str, name: str) -> bool:
    """Whether ``name`` is exactly what :func:`new_version_name` makes for ``alias`` (not merely a longer name)."""
    return re.fullmatch(re.escape(alias + VERSION_SEPARATOR) + r"[0-9]{20}", name) is not None


def version_age_s(name: str) -> float:
    """Seconds since the version ``name`` was created (from its name)."""
    made = datetime.strptime(name.rsplit(VERSION_SEPARATOR, 1)[1], VERSION_TIME).replace(tzinfo=UTC)
    return (datetime.now(UTC) - made).total_seconds()


def redacted(uri: str) -> str:
    """``uri`` without user name and password, for every message, log line and description."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.username is None and parts.password is None:
        return uri
    # the host and port as written (a bad port must not raise here; IPv6 keeps its brackets)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def build_mark() -> str:
    pid = os.getpid()
    return json.dumps({"mark": BUILD_MARK, "host": socket.gethostname(), "pid": pid, "started": process_start(pid)})


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, /proc), so that a later process given the same id (a
    restarted container counts from 1 again) is not taken for it; None where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[19].decode()  # field 22, after the command's ")"
    except (OSError, IndexError, ValueError):
        return None


def builder_alive(description: str) -> bool | None:
    """Whether the build that created a collection (its description, :func:`build_mark`) still runs: its process
    lives on this host. None when we cannot tell (no mark, or another host)."""
    try:
        mark = json.loads(description)
        host, pid = mark["host"], int(mark["pid"])
    except (ValueError, TypeError, KeyError):
        return None
    if mark.get("mark") != BUILD_MARK or host != socket.gethostname() or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    except OverflowError:  # not a process id
        return None
    started, now = mark.get("started"), process_start(pid)
    # The same process, not a later one with its id; a start time /proc hides (hidepid) is taken as alive: a
    # collection still being filled must never be pruned.
    return started is None or now is None or started == now


def manifest_key(version: str) -> int:
    return int.from_bytes(hashlib.sha256(version.encode()).digest()[:7], "big")


def _is_missing(message: str) -> bool:
    text = message.lower()
    return any(word in text for word in ("not found", "not exist", "doesn't exist", "does not exist"))


def _is_refusal(error: Exception) -> bool:
    """A request the server (or pymilvus before sending it) refuses as such: retrying or reconnecting cannot help."""
    from pymilvus.exceptions import (
        ConnectError,
        ConnectionNotExistException,
        MilvusException,
        MilvusUnavailableException,
    )

    if isinstance(error, (ConnectError, ConnectionNotExistException, MilvusUnavailableException)):
        return False
    if type(error).__name__ in CLIENT_CHECKS:  # pymilvus's own checks of the request: never sent, never better
        return True
    return type(error) is MilvusException and error.code in REFUSED_CODES


def redacted_text(text: str, uri: str) -> str:
    """``text`` (a driver's message) with ``uri``'s credentials replaced by its redacted form."""
    return text.replace(uri, redacted(uri)) if uri != redacted(uri) else text


def manifest_parts(version: str, manifest: dict) -> list[str]:
    """The stored rows of a manifest: its JSON in one row, or, past one VARCHAR, in parts of at most MANIFEST_PART
    characters, each headed ``#i/n/digest`` (a reader joins them only when every part carries the digest of the
    whole, so it never takes halves of two writes). A :class:`BuildError` past MANIFEST_PARTS_MAX rows (checked
    before a build writes any row, so a too-big manifest never leaves a half-applied build)."""
    text = json.dumps(manifest, sort_keys=True)  # ASCII (ensure_ascii): characters are bytes, any split is safe
    if len(text) <= VARCHAR_MAX:
        return [text]
    count = -(-len(text) // MANIFEST_PART)
    if count > MANIFEST_PARTS_MAX:
        categories = len(manifest.get("categories") or [])
        raise BuildError(f"The manifest of {version} would be {len(text):,} bytes ({categories:,} categories); "
                         f"Milvus holds at most {MANIFEST_PARTS_MAX * MANIFEST_PART:,} here: use fewer or shorter "
                         "category names.")
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return [f"#{i}/{count}/{digest}\n" + text[i * MANIFEST_PART:(i + 1) * MANIFEST_PART] for i in range(count)]


def manifest_part_key(version: str, digest: str, part: int) -> int:
    """Part 0 where a one-row manifest is; the others under the digest of their write, so a write puts its parts
    beside the live ones and only the one-row upsert of part 0 switches to them (a build killed between its
    upserts leaves the old manifest whole)."""
    return manifest_key(version if part == 0 else f"{version}#{digest}#{part}")


def _other_part_keys(version: str, head: tuple[int, int, str, str]) -> list[int]:
    """The keys of parts 1.. that part 0's header ``head`` names; a count no write makes is damage."""
    _, count, digest, _ = head
    if not 1 < count <= MANIFEST_PARTS_MAX:
        raise IndexCorruptError(f"The manifest of Milvus collection {version} claims {count} parts.")
    return [manifest_part_key(version, digest, i) for i in range(1, count)]


def _part_header(text: str) -> tuple[int, int, str, str] | None:
    """(index, count, digest, chunk) of a stored part; None for a one-row manifest (plain JSON)."""
    if not text.startswith("#"):
        return None
    header, _, chunk = text.partition("\n")
    try:
        index, count, digest = header[1:].split("/")
        return int(index), int(count), digest, chunk
    except ValueError:
        raise IndexCorruptError(f"A stored manifest part has a damaged header {header[:80]!r}.") from None


class MilvusConnection:
    """One MilvusClient with bounded timeouts; a failed call drops the client so the next one reconnects."""

    def __init__(self, uri: str, *, timeout: float = DEFAULT_MILVUS_TIMEOUT_S, token: str = "") -> None:
        self.uri = uri
        self.shown_uri = redacted(uri)
        self.timeout = float(timeout)
        self.token = token
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from pymilvus import MilvusClient  # the optional `milvus` extra

            # pymilvus logs every failed call with a traceback at ERROR, also expected ones (an alias that does
            # not exist yet); the errors raised here carry its message, so keep only its critical lines.
            logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
            self._client = self.call(lambda: MilvusClient(uri=self.uri, token=self.token, timeout=self.timeout),
                                     what="connect")
        return self._client

    def call(self, action: Callable[[], T], *, what: str, missing: str | None = None) -> T:
        """Run ``action``; map Milvus failures: ``missing`` names what a not-found error means, a refusal of the
        request is a :class:`BuildError`, anything else (no connection, a timeout, a server not ready) unavailable."""
        from pymilvus.exceptions import MilvusException

        try:
            return action()
        except (EngineUnavailableError, IndexNotFoundError, BuildError):
            raise  # already ours (e.g. the connect inside an action)
        except MilvusException as error:
            if missing is not None and _is_missing(error.message):
                raise IndexNotFoundError(missing) from None
            if _is_refusal(error):
                raise BuildError(f"Milvus at {self.shown_uri} refused {what}: "
                                 f"{redacted_text(error.message, self.uri)}") from None
            self.reset()
            raise EngineUnavailableError(f"Milvus at {self.shown_uri} is unavailable ({what}: "
                                         f"{redacted_text(error.message, self.uri)}).") from None
        except Exception as error:  # noqa: BLE001 - grpc and socket errors of every kind: the server is unreachable
            self.reset()
            raise EngineUnavailableError(f"Milvus at {self.shown_uri} is unavailable ({what}: {type(error).__name__}: "
                                         f"{redacted_text(str(error), self.uri)}).") from None

    def reset(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail too
                client.close()

    # -- aliases and versions -----------------------------------------------------------------------
    def alias_target(self, alias: str) -> str | None:
        """The collection ``alias`` points at; None when there is no such alias."""
        try:
            described = self.call(lambda: self.client.describe_alias(alias, timeout=self.timeout),
                                  what=f"describe alias {alias}", missing="no alias")
        except IndexNotFoundError:
            return None
        return described.get("collection_name") or None

    def versions(self, alias: str) -> list[str]:
        """Photo collections of ``alias``, oldest first (complete or not)."""
        names = self.call(lambda: self.client.list_collections(timeout=self.timeout), what="list collections")
        return sorted(n for n in names if is_version_of(alias, n))

    def is_plain_collection(self, name: str) -> bool:
        """Whether ``name`` is a collection of its own (not an alias): it cannot become our alias."""
        if self.alias_target(name) is not None:
            return False
        return bool(self.call(lambda: self.client.has_collection(name, timeout=self.timeout), what=f"has {name}"))

    def description(self, name: str) -> str:
        described = self.call(lambda: self.client.describe_collection(name, timeout=self.timeout),
                              what=f"describe {name}", missing=f"Milvus collection {name} is gone.")
        return str(described.get("description") or "")

    def switch_alias(self, alias: str, collection: str) -> str | None:
        """Point ``alias`` at ``collection`` in one server-side step (searches see the old or the new one); returns
        the collection it pointed at before (None: it is new)."""
        before = self.alias_target(alias)
        if before is None:
            try:
                self.call(lambda: self.client.create_alias(collection, alias, timeout=self.timeout),
                          what="create alias")
                return None
            except (BuildError, EngineUnavailableError):
                # Another first build made it meanwhile (servers word that differently): the later build's
                # collection wins, as with any two builds; a failure for another reason raises.
                before = self.alias_target(alias)
                if before is None:
                    raise
        self.call(lambda: self.client.alter_alias(collection, alias, timeout=self.timeout), what="alter alias")
        return before

    def drop(self, collection: str) -> None:
        self.call(lambda: self.client.drop_collection(collection, timeout=self.timeout), what=f"drop {collection}")
        self.delete_manifest(collection)

    # -- manifests ----------------------------------------------------------------------------------
    def _ensure_manifests(self) -> None:
        from pymilvus import DataType, MilvusClient

        client = self.client
        if self.call(lambda: client.has_collection(MANIFESTS, timeout=self.timeout), what="has manifests"):
            return
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("key", DataType.INT64, is_primary=True)
        schema.add_field("version", DataType.VARCHAR, max_length=256)
        schema.add_field("manifest", DataType.VARCHAR, max_length=VARCHAR_MAX)
        schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus 2.3 needs a vector field to load
        index = client.prepare_index_params()
        index.add_index(field_name="unused", index_type="FLAT", metric_type="IP")
        self.call(lambda: client.create_collection(MANIFESTS, schema=schema, index_params=index,
                                                   consistency_level=DEFAULT_CONSISTENCY, timeout=self.timeout),
                  what="create the manifests collection")

    def read_manifest(self, version: str) -> dict | None:
        if not self.call(lambda: self.client.has_collection(MANIFESTS, timeout=self.timeout), what="has manifests"):
            return None
        for _ in range(MANIFEST_READ_TRIES):
            first = self._manifest_rows(version, [manifest_key(version)])
            if not first:
                return None
            head = _part_header(first[0])
            if head is None:
                return _manifest_json(version, first[0])
            _, count, digest, _ = head
            rest = self._manifest_rows(version, _other_part_keys(version, head))
            parts = [_part_header(text) for text in first + rest]
            by_index = {part[0]: part[3] for part in parts if part is not None and part[1:3] == (count, digest)}
            text = "".join(by_index.get(i, "") for i in range(count))
            if len(by_index) == count and hashlib.sha256(text.encode()).hexdigest()[:16] == digest:
                return _manifest_json(version, text)
            time.sleep(0.2)  # read while a write replaced part 0 and removed the parts it had named
        raise IndexCorruptError(f"The manifest of Milvus collection {version} is stored in parts that do not agree "
                                "(damaged); a build with --rebuild writes a new one.")

    def _manifest_rows(self, version: str, keys: list[int]) -> list[str]:
        """The stored texts under ``keys`` of ``version``'s manifest (those present, in no particular order)."""
        if not keys:
            return []
        rows = self.call(lambda: self.client.query(MANIFESTS, filter=f"key in {keys}",
                                                   output_fields=["version", "manifest"], timeout=self.timeout),
                         what="read a manifest")
        return [row["manifest"] for row in rows if row["version"] == version]

    def _part_keys(self, version: str) -> list[int]:
        """The keys of the parts beyond part 0 that the stored manifest of ``version`` names (none: one row, or a
        part 0 too damaged to name any)."""
        first = self._manifest_rows(version, [manifest_key(version)])
        try:
            head = _part_header(first[0]) if first else None
            return _other_part_keys(version, head) if head is not None else []
        except IndexCorruptError:
            return []

    def write_manifest(self, version: str, manifest: dict) -> None:
        texts = manifest_parts(version, manifest)
        self._ensure_manifests()
        old = self._part_keys(version)
        digest = _part_header(texts[0])[2] if len(texts) > 1 else ""
        rows = [{"key": manifest_part_key(version, digest, i), "version": version, "manifest": text,
                 "unused": [0.0, 0.0]} for i, text in enumerate(texts)]
        if len(rows) > 1:  # the new parts beside the live ones first; part 0, one row, switches to them
            self.call(lambda: self.client.upsert(MANIFESTS, rows[1:], timeout=self.timeout), what="write a manifest")
        self.call(lambda: self.client.upsert(MANIFESTS, rows[:1], timeout=self.timeout), what="write a manifest")
        stale = sorted(set(old) - {row["key"] for row in rows})
        if stale:
            self.call(lambda: self.client.delete(MANIFESTS, filter=f"key in {stale}", timeout=self.timeout),
                      what="delete a manifest's old parts")

    def delete_manifest(self, version: str) -> None:
        if self.call(lambda: self.client.has_collection(MANIFESTS, timeout=self.timeout), what="has manifests"):
            keys = [manifest_key(version), *self._part_keys(version)]
            self.call(lambda: self.client.delete(MANIFESTS, filter=f"key in {keys}", timeout=self.timeout),
                      what="delete a manifest")

    # -- photo collections --------------------------------------------------------------------------
    def create_photos(self, name: str, dim: int, index_type: str, index_params: dict) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, description=build_mark())
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("path", DataType.VARCHAR, max_length=PATH_MAX)
        schema.add_field("category", DataType.VARCHAR, max_length=CATEGORY_MAX)
        schema.add_field("sha256", DataType.VARCHAR, max_length=64)
        schema.add_field("size", DataType.INT64)
        schema.add_field("mtime_ns", DataType.INT64)
        schema.add_field("added_at", DataType.VARCHAR, max_length=64)
        schema.add_field("updated_at", DataType.VARCHAR, max_length=64)
        schema.add_field("metadata", DataType.VARCHAR, max_length=VARCHAR_MAX)
        schema.add_field("width", DataType.INT64)
        schema.add_field("height", DataType.INT64)
        schema.add_field("taken_at", DataType.VARCHAR, max_length=64)
        index = self.client.prepare_index_params()
        index.add_index(field_name="vector", index_name="vector", index_type=index_type, metric_type="IP",
                        params=index_params)
        self.call(lambda: self.client.create_collection(name, schema=schema, consistency_level=DEFAULT_CONSISTENCY,
                                                        timeout=self.timeout), what=f"create {name}")
        try:
            self.call(lambda: self.client.create_index(name, index, timeout=self.timeout),
                      what=f"create a {index_type} index")
        except (EngineUnavailableError, BuildError) as error:
            self.drop(name)
            raise BuildError(f"Milvus cannot build index type {index_type!r} with params {index_params}: "
                             f"{error}") from None

    def record_fields(self, name: str) -> list[str]:
        """The record fields collection ``name`` holds: PHOTO_FIELDS, plus DETAIL_FIELDS when it was made with them."""
        described = self.call(lambda: self.client.describe_collection(name, timeout=self.timeout),
                              what=f"describe {name}", missing=f"Milvus collection {name} is gone.")
        present = {field.get("name") for field in described.get("fields", [])}
        return PHOTO_FIELDS + [name for name in DETAIL_FIELDS if name in present]

    def load(self, name: str, timeout: float | None = None) -> None:
        self.call(lambda: self.client.load_collection(name, timeout=timeout or self.timeout), what=f"load {name}")

    def wait_indexed(self, name: str, rows: int, *, timeout: float) -> None:
        """Until the vector index covers ``rows`` rows (searches before that scan unindexed segments)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            described = self.call(lambda: self.client.describe_index(name, "vector", timeout=self.timeout),
                                  what="describe the index")
            if int(described.get("indexed_rows", rows)) >= rows or rows < 1024:  # small segments stay unindexed
                return
            time.sleep(0.5)
        raise EngineUnavailableError(f"Milvus did not finish indexing {name} within {timeout:.0f} s.")

    def wait_served_indexed(self, name: str, *, timeout: float) -> bool:
        """Until the query node searches every indexed segment of ``name`` through its index: after
        :meth:`wait_indexed` it still scans the unindexed copies for a while (≈ 10 s on a 2.3 standalone), where
        every search parameter gives exact results. Rows written since (growing segments) are always scanned.
        False when that did not happen within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            described = self.call(lambda: self.client.describe_index(name, "vector", timeout=self.timeout),
                                  what="describe the index")
            segments = self.call(lambda: self.client.list_loaded_segments(name, timeout=self.timeout),
                                 what="list loaded segments")
            if sum(int(s.num_rows) for s in segments if s.index_name) >= int(described.get("indexed_rows", 0)):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)

    def query_pages(self, name: str, fields: list[str], *, missing: str) -> Iterator[list[dict[str, Any]]]:
        """Every row of ``name`` in pages of at most ``QUERY_LIMIT``, ascending id (paged by primary key, so any
        size fits Milvus's query window). A caller converts each page before the next arrives: a row with its
        vector is ~16 KB of Python objects, 16 GB for a million photos all at once."""
        last = -1
        while True:
            page = self.call(lambda last=last: self.client.query(name, filter=f"id > {last}", output_fields=fields,
                                                       limit=QUERY_LIMIT, timeout=self.timeout),
                             what=f"read {name}", missing=missing)
            if not page:
                return
            page.sort(key=lambda row: row["id"])
            yield page
            last = page[-1]["id"]
            if len(page) < QUERY_LIMIT:
                return

    def close(self) -> None:
        self.reset()


def _manifest_json(version: str, text: str) -> dict:
    """A stored manifest's object; text that is not a JSON object (edited by hand, damaged) is a damaged version."""
    try:
        manifest = json.loads(text)
    except ValueError as error:
        raise IndexCorruptError(f"The manifest of Milvus collection {version} is not JSON ({error}); a build with "
                                "--rebuild writes a new one.") from None
    if not isinstance(manifest, dict):
        raise IndexCorruptError(f"The manifest of Milvus collection {version} is not a JSON object; a build with "
                                "--rebuild writes a new one.")
    return manifest
