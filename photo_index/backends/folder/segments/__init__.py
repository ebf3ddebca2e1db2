"""The folder backend's segments: immutable segments, small version manifests, tombstones, merges.

A change of N photos writes one new segment of N photos and a version manifest, not a copy of the gallery.
``segment``: one segment on disk; ``version``: the manifest; ``store``: the folder (publish, commit, garbage
collection); ``search``: a version's segments searched as one index; ``merge``: the tiered policy and ``compact``.
"""

from .merge import TieredMergePolicy, apply_policy, compact, merge
from .search import SegmentedView
from .segment import Segment, SegmentInfo, adopt_folder, checksum_problems, write_segment
from .store import SegmentStore
from .version import SegmentRef, Version

__all__ = [
    "Segment",
    "SegmentInfo",
    "SegmentRef",
    "SegmentStore",
    "SegmentedView",
    "TieredMergePolicy",
    "Version",
    "adopt_folder",
    "apply_policy",
    "checksum_problems",
    "compact",
    "merge",
    "write_segment",
]
