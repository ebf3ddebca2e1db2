"""``compact``: every live photo of a segmented folder index merged into one segment (its IVF trained and
``nprobe`` calibrated on all of them, tombstones dropped), published as a new version like a build."""

from __future__ import annotations

from pathlib import Path

from photo_index.api import PublishOptions
from photo_index.backends.folder.segmented import SegmentedWriter
from photo_index.errors import IndexNotFoundError
from photo_index.format import IndexLayout
from photo_index.location import FolderLocation
from photo_index.space import disk_full, is_disk_full

from .lock import build_lock


def compact_index(index_dir: str | Path, *, factory: str | None = None, recall_target: float = 0.95,
                  keep: int = 3, device: str = "auto", progress: bool = False) -> dict:
    """Compact the live version of ``index_dir``; returns what was done."""
    layout = IndexLayout(index_dir)
    with build_lock(layout.root, create=False):
        writer = SegmentedWriter(FolderLocation(layout.root), PublishOptions(
            recall_target=recall_target, faiss_device=device, progress=progress))
        try:
            return _compact_locked(writer, factory, keep)
        except OSError as error:  # a full disk: one line naming the path and the space; nothing new stays
            if not is_disk_full(error):
                raise
            live = writer.store.current()
            needed = sum(writer.store.segment_info(name).bytes for name in live.segment_names()) if live else 0
            raise disk_full(error, layout.root, needed) from None


def _compact_locked(writer: SegmentedWriter, factory: str | None, keep: int) -> dict:
    """Compact under the build lock; what was done."""
    name = writer.store.current_name()
    if name is None:
        raise IndexNotFoundError(f"No index in {writer.where} (run `index_builder build`).")
    if not writer.store.is_segmented(name):
        return {"index_dir": writer.where, "status": "unchanged", "version": name,
                "reason": "a version of the one-copy format is one segment already"}
    base, merged = writer.compact(factory)
    report = {"index_dir": writer.where, "previous": base.name, "segments_before": len(base.segments),
              "deleted_before": base.deleted, "size": merged.size,
              "factory": merged.fields.get("index", {}).get("factory"),
              "search_params": merged.fields.get("index", {}).get("search_params", {})}
    if merged is base:
        return {**report, "status": "unchanged", "version": base.name,
                "reason": "one segment without deleted photos already"}
    writer.prune(keep)
    return {**report, "status": "compacted", "version": merged.name}
