"""Prometheus metrics of one app instance (own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Per-stage latency, batching, queue depth, index size/version, errors by type."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.stage_seconds = Histogram(
            "sbir_stage_seconds", "Latency of one search stage", ["stage"], buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "sbir_batch_size", "Sketches per encoder call", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.queue_depth = Gauge("sbir_queue_depth", "Sketches waiting for the encoder", registry=self.registry)
        self.index_size = Gauge("sbir_index_size", "Vectors in the served index", registry=self.registry)
        self.index_segments = Gauge("sbir_index_segments", "Segments of the served index (folder backend; 1 for a "
                                    "one-copy version)", registry=self.registry)
        self.index_deleted = Gauge("sbir_index_deleted", "Deleted photos (tombstones) still in the served index's "
                                   "segments", registry=self.registry)
        self.index_version = Gauge(
            "sbir_index_version_info", "Served index version (value 1)", ["version"], registry=self.registry
        )
        self.index_reloads = Counter(
            "sbir_index_reloads", "Index version loads by outcome", ["outcome"], registry=self.registry
        )
        self.index_refused = Counter(
            "sbir_index_refused", "Index versions (or pointers) refused, by the check that failed", ["check"],
            registry=self.registry,
        )
        self.errors = Counter("sbir_errors", "Refused or failed requests by type", ["type"], registry=self.registry)
        self.bodies_in_flight = Gauge("sbir_bodies_in_flight", "Requests reading a body now",
                                      registry=self.registry)
        self.searches = Counter("sbir_searches", "Completed searches with a picture, by its format", ["input"],
                                registry=self.registry)
        self.queries = Counter("sbir_queries", "Completed searches by query kind (sketch, text, like+text, ...)",
                               ["kind"], registry=self.registry)

    def observe_stages(self, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.stage_seconds.labels(stage).observe(ms / 1000.0)

    def set_index(self, version: str | None, size: int, segments: int = 1, deleted: int = 0) -> None:
        # the new version first, then the others out: a scrape in between never finds no version (clear() did)
        if version is not None:
            self.index_version.labels(version).set(1)
        for sample in self.index_version.collect()[0].samples:
            if sample.labels["version"] != version:
                self.index_version.remove(sample.labels["version"])
        self.index_size.set(size)
        self.index_segments.set(segments)
        self.index_deleted.set(deleted)
