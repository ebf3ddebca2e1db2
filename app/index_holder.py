"""The served index version, with hot reload: poll `current`, load the new version aside, swap atomically.

Requests `lease()` the reader they use; a swap only changes which reader new leases get, and the
old reader is closed when its last lease ends, so requests in flight finish on the version they
started with and no request fails because of a swap. A version that cannot be loaded (broken, or
built with another encoder) is refused with a logged reason; the previous one keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from encoder.errors import SBIRError
from encoder.precision import precision_note
from photo_index import EngineUnavailableError, IndexCorruptError, IndexNotFoundError, Reader, Source, open_source
from photo_index.checks import Finding, trust_findings
from photo_index.compatibility import preprocessing_mismatch, weights_mismatch

from .errors import APIError
from .metrics import Metrics

log = logging.getLogger("app.index")
# What opening or checking a damaged version may raise beyond the index's own errors (damage no parser named): the
# version is refused like any other, never the service's crash.
VERSION_DAMAGE = (OSError, SBIRError, ValueError, RuntimeError, LookupError, TypeError, ArithmeticError, EOFError)


@dataclass
class _Loaded:
    reader: Reader
    categories: frozenset[str]
    leases: int = 0
    retired: bool = False
    # Worked out once per version, not per request (a gallery can hold tens of thousands of categories, and /info
    # and a category filter run in the event loop): the sorted list and each name by its NFC spelling.
    sorted_categories: tuple[str, ...] = field(init=False)
    by_nfc: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.sorted_categories = tuple(sorted(self.categories))
        self.by_nfc = {}
        for name in self.sorted_categories:
            self.by_nfc.setdefault(unicodedata.normalize("NFC", name), name)
        for name in self.sorted_categories:  # a folder named " cat " is asked for as "cat" (a query is trimmed)
            self.by_nfc.setdefault(unicodedata.normalize("NFC", name).strip(), name)


def _close_off_the_loop(reader: Reader) -> None:
    """Close a retired reader; on the event loop's thread (the last lease was /readyz's, say) in the loop's executor
    (joined at shutdown): freeing a large index's memory (FAISS, its GPU copy, SQLite) must not stall every request."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # a worker thread: close here
        reader.close()
        return
    loop.run_in_executor(None, _logged_close, reader)


def _logged_close(reader: Reader) -> None:
    try:
        reader.close()
    except Exception:  # noqa: BLE001 - a reader that fails to close is logged, never a lost exception in a thread
        log.exception("closing a retired index version failed")


class IndexHolder:
    """Owns the open reader of `source`'s live version and swaps in new versions as they are published.

    With a server engine (Milvus) the source can be unreachable: then the service is not ready (503 with the
    reason) until a poll reaches it again; the loaded reader is kept, so it serves again at once."""

    def __init__(self, source: Source | Path, *, fingerprint: str, dim: int, device: str = "cpu",
                 metrics: Metrics | None = None, precision: str | None = None,
                 weights_sample: dict[str, list[float]] | None = None) -> None:
        self.source = open_source(source) if isinstance(source, (str, Path)) else source
        self.device = device
        self.fingerprint = fingerprint
        self.weights_sample = weights_sample  # the encoder's backbone sample (None: not checked)
        self.dim = dim
        self.metrics = metrics
        self.precision = precision  # the encoder's: an index embedded in another one is noted once in the log
        self._precision_notes: set[str] = set()
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._closed = False  # set by close(): a refresh still running in a worker thread then serves nothing
        self._loaded: _Loaded | None = None
        self._refused: str | None = None  # a version already refused (not retried until `current` changes)
        self._pointer_problem: str | None = None  # why `current` cannot be read (logged once per problem)
        self._gone: str | None = None  # why nothing is served after the served version was deleted
        self._check_failure: str | None = None  # the engine's failure checking a new version (logged once)
        self.problem: str | None = "The index has not been loaded yet."
        self.refusal: str | None = None  # why the published version is not the one served (None: it is)
        self.unavailable: str | None = None  # why the engine's server cannot be reached (None: it can)

    # -- reading -----------------------------------------------------------------------------------
    @property
    def version(self) -> str | None:
        loaded = self._loaded
        return loaded.reader.version if loaded else None

    @property
    def revision(self) -> str | None:
        """What `current` answered for the served version: its name, or a backend's finer revision (Milvus: the
        collection and its manifest's digest, which a build in place changes without a new collection)."""
        loaded = self._loaded
        return revision_of(loaded.reader) if loaded else None

    @property
    def ready(self) -> bool:
        return self._loaded is not None and self.unavailable is None

    @property
    def reason(self) -> str | None:
        """Why the service is not ready (None when it is)."""
        return self.unavailable or (None if self._loaded is not None else self.problem or "No index is loaded.")

    @contextmanager
    def lease(self) -> Iterator[Reader]:
        """The current reader, guaranteed open until the block ends (503 when none is loaded or reachable)."""
        with self._lock:
            loaded = self._loaded
            if loaded is None or self.unavailable is not None:
                raise APIError(503, "not_ready", self.reason or "No index is loaded.")
            loaded.leases += 1
        try:
            yield loaded.reader
        finally:
            with self._lock:
                loaded.leases -= 1
                close = loaded.retired and loaded.leases == 0
            if close:
                _close_off_the_loop(loaded.reader)

    def find_category(self, name: str) -> str | None:
        """The index's spelling of category `name`, also when the two differ only in Unicode normalisation
        (a gallery folder written on macOS is NFD, a browser sends NFC); None when there is no such category."""
        loaded = self._loaded
        if loaded is None:
            return None
        if name in loaded.categories:
            return name
        return loaded.by_nfc.get(unicodedata.normalize("NFC", name))

    def categories(self) -> list[str]:
        loaded = self._loaded
        return list(loaded.sorted_categories) if loaded else []

    # -- reloading ---------------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Load and swap in the version `current` names if it is new and passes the checks; True when a swap
        happened (blocking). A bad pointer or version is logged once and not retried until `current` changes;
        while nothing is served, the newest version that passes the checks is served instead."""
        with self._reload_lock:
            if self._closed:
                return False
            try:
                version = self.source.current()
            except EngineUnavailableError as error:
                return self._away(error)
            except (OSError, SBIRError) as error:
                if self._note_pointer(str(error) or f"The index pointer cannot be read ({type(error).__name__}).",
                                      "The index pointer cannot be read."):
                    return self._fall_back()
                return False
            if self.unavailable is not None:
                log.info("the vector index server is reachable again")
                self.unavailable = None
            if version is None:
                self._pointer_problem = None
                if self._loaded is None:
                    self.problem = self._gone or "No index version has been published yet."
                else:
                    self._drop_if_gone()
                return False
            if version == self.revision:
                self.refusal = None  # the published version is the one served (again)
                return False
            if version == self._refused:
                return False
            try:
                return self._load(version)
            except EngineUnavailableError as error:  # away while the version was opened or checked: not its fault,
                return self._check_failed(version, error)  # so it is tried again at the next poll

    def _drop_if_gone(self) -> None:
        """Nothing is published and the served version is gone too (a Milvus collection dropped with its alias):
        stop serving it, so that readiness says so, where every search answered that the index server could not be
        reached. A folder's reader keeps serving from its open files (a volume unmounted for a moment)."""
        if self.source.readers_outlive_deletion:
            return
        served = self._loaded.reader.version
        try:
            if served in self.source.versions():
                return
        except (OSError, SBIRError):  # cannot tell (the server away): keep serving what is loaded
            return
        log.error("index version %s was deleted, and no version is published: nothing is served", served)
        self._retire(None)
        self.problem = self._gone = f"The served index version {served} was deleted, and no version is published."
        if self.metrics is not None:
            self.metrics.index_reloads.labels("gone").inc()

    def _check_failed(self, version: str, error: EngineUnavailableError) -> bool:
        """The engine failed while a new version was opened or checked, though it answered the poll (a collection
        not loaded yet after a restart): with a version served, that one keeps serving and the new one is tried at
        the next poll (logged once); with none, the service is not ready for it."""
        if self._loaded is None:
            return self._away(error)
        if str(error) != self._check_failure:
            log.error("index version %s cannot be checked yet; the served one stays, retrying: %s", version, error)
        self._check_failure = str(error)
        return False

    def _away(self, error: EngineUnavailableError) -> bool:
        if self.unavailable is None:
            log.error("%s", error)  # the details (server address) go to the log only
        self.unavailable = "The vector index server cannot be reached; retrying (see the service log)."
        return False

    def _load(self, version: str) -> bool:
        try:
            reader = self.source.open(self.device)
        except EngineUnavailableError:
            raise
        except IndexCorruptError as error:
            return self._refuse(version, error.check, str(error), "The index version is damaged and cannot be read.")
        except IndexNotFoundError as error:  # the pointer names a version that is not there
            return self._refuse(version, "missing", str(error), f"The index pointer names version {version!r}, "
                                "which does not exist.")
        except VERSION_DAMAGE as error:
            return self._refuse(None, "open", str(error),
                                f"The new index version cannot be opened ({type(error).__name__}).")
        try:
            finding = self._distrust(reader)
        except EngineUnavailableError:
            reader.close()
            raise
        if finding is not None:
            reader.close()
            return self._refuse(revision_of(reader), finding.check, finding.detail,
                                f"Index version {reader.version} failed the {finding.check} check: {finding.detail}.")
        self._serve(reader)
        return True

    def _serve(self, reader: Reader) -> None:
        self._gone = self._check_failure = None
        self._note_precision(reader.manifest)
        self._retire(_Loaded(reader, frozenset(reader.categories())))
        self._refused, self.problem, self._pointer_problem, self.refusal = None, None, None, None
        log.info("serving index version %s (%d vectors; %d segment(s), %d deleted)", reader.version, reader.size,
                 *segments_and_deleted(reader))
        if self.metrics is not None:
            self.metrics.index_reloads.labels("loaded").inc()
            self.metrics.set_index(reader.version, reader.size, *segments_and_deleted(reader))

    def _distrust(self, reader: Reader) -> Finding | None:
        """The first failed check of ``reader`` (verify's cheap checks plus the preprocessing version), or None."""
        started = time.perf_counter()
        try:
            findings = trust_findings(reader, fingerprint=self.fingerprint, dim=self.dim)
        except EngineUnavailableError:
            raise
        except VERSION_DAMAGE as error:  # a check that cannot even run on what it found
            return Finding("readable", f"{type(error).__name__}: {error}")
        log.debug("checked index version %s in %.3f s", reader.version, time.perf_counter() - started)
        if findings:
            return findings[0]
        mismatch = preprocessing_mismatch(reader.manifest)
        if mismatch:
            return Finding("preprocessing", mismatch)
        other = weights_mismatch(reader.manifest, self.weights_sample) if self.weights_sample is not None else None
        return Finding("weights", other) if other else None

    def _refuse(self, version: str | None, check: str, detail: str, reason: str) -> bool:
        """Log (once) and count a refused version; while nothing is served, fall back to an older good one."""
        if version is not None:
            self._refused = version
        self.refusal = reason
        log.error("refused index version %s: %s check failed: %s", version or "(unknown)", check, detail)
        if self.metrics is not None:
            self.metrics.index_reloads.labels("refused").inc()
            self.metrics.index_refused.labels(check).inc()
        if self._loaded is None:
            self.problem = reason
            return self._fall_back()
        return False

    def _note_pointer(self, detail: str, reason: str) -> bool:
        """A pointer that cannot be read: logged once per distinct problem; True when it is new."""
        if detail == self._pointer_problem:
            return False
        self._pointer_problem = detail
        self.refusal = reason
        log.error("%s", detail)
        if self.metrics is not None:
            self.metrics.index_refused.labels("pointer").inc()
        if self._loaded is None:
            self.problem = reason
        return True

    def _fall_back(self) -> bool:
        """While nothing is served: serve the newest version that passes the checks, with a warning."""
        if self._loaded is not None:
            return False
        try:
            # a revision (Milvus: collection@manifest-digest) names its version before the "@"
            refused = self._refused.split("@", 1)[0] if self._refused else None
            candidates = [name for name in reversed(self.source.versions()) if name != refused]
        except (OSError, SBIRError):
            return False
        for name in candidates:
            try:
                reader = self.source.open_version(name)
            except (OSError, SBIRError, ValueError, RuntimeError):
                continue
            try:
                finding = self._distrust(reader)
            except EngineUnavailableError as error:
                reader.close()
                return self._away(error)
            if finding is None:
                refused, pointer, refusal = self._refused, self._pointer_problem, self.refusal
                self._serve(reader)
                # the bad pointer stays refused, and /health still says why the published version is not served
                self._refused, self._pointer_problem, self.refusal = refused, pointer, refusal
                log.warning("serving index version %s, the newest that passes the checks, because `current` "
                            "cannot be used; repair the pointer (publish a version or write a good name into it)",
                            name)
                return True
            reader.close()
        return False

    def _retire(self, replacement: _Loaded | None) -> None:
        """Swap in ``replacement``; the old reader closes now if idle, else when its last lease ends."""
        with self._lock:
            old, self._loaded = self._loaded, replacement
            close_now = False
            if old is not None:
                old.retired = True
                close_now = old.leases == 0
        if old is not None and close_now:
            _close_off_the_loop(old.reader)
        if replacement is None and self.metrics is not None:  # nothing served: no version, no size
            self.metrics.set_index(None, 0, 0, 0)

    def _note_precision(self, manifest: dict) -> None:
        note = precision_note(manifest.get("encoder", {}).get("precision"), self.precision) if self.precision else None
        if note is not None and note not in self._precision_notes:
            self._precision_notes.add(note)
            log.info("%s", note)

    async def poll_forever(self, interval_s: float) -> None:
        """Check for a new version every `interval_s` seconds, loading it in a worker thread."""
        last_failure: str | None = None
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.refresh)
                last_failure = None
            except Exception as error:  # noqa: BLE001 - polling must never die; the old version keeps serving
                failure = f"{type(error).__name__}: {error}"
                if failure != last_failure:  # a traceback once per distinct failure, not at every poll
                    log.exception("index reload failed")
                else:
                    log.debug("index reload failed again: %s", failure)
                last_failure = failure

    def close(self) -> None:
        # After any refresh in flight (cancelling the poller does not stop its thread): one that swapped in a new
        # reader after this would serve it, never closed, from a closed source.
        with self._reload_lock:
            self._closed = True
            self._retire(None)
            self.source.close()
            self.problem = "The service is shutting down."


def revision_of(reader: Reader) -> str:
    """The reader's revision (see :attr:`IndexHolder.revision`); a folder reader's is its version name."""
    return getattr(reader, "revision", None) or reader.version


def segments_and_deleted(reader: Reader) -> tuple[int, int]:
    """(segments, deleted photos still in them) of a reader's version: a segmented folder version says them in its
    index section; any other version is one piece without deletions."""
    section = reader.manifest.get("index", {}) if isinstance(reader.manifest, dict) else {}
    segments = section.get("segments")
    if not isinstance(segments, list):
        return 1, 0
    return len(segments), int(section.get("deleted", 0))
