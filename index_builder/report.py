"""What one build did: counts, skipped files with reasons, timings; printed as the final summary.

A value: the build makes it once its counts are known and replaces fields (``dataclasses.replace``) after."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from .sources import Skipped


@dataclass(frozen=True)
class BuildReport:
    index_dir: str
    status: str = "running"  # built | unchanged
    version: str | None = None
    previous: str | None = None
    source: str = ""
    size: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    embedded: int = 0  # photos embedded in this run
    resumed: int = 0  # photos whose vectors an interrupted run had already staged
    skipped: list[Skipped] = field(default_factory=list)
    factory: str = ""
    precision: str = ""  # what the encoder computed in (encoder/precision.py)
    lanes: int = 1  # encoder replicas each batch was split over (encoder/lanes.py), with the local distributor
    distributor: str = "local"  # where photos were read and embedded (index_builder/distributors.py)
    notes: list[str] = field(default_factory=list)  # what the writer did that a person should know
    embed_s: float = 0.0
    elapsed_s: float = 0.0

    @property
    def photos_per_s(self) -> float:
        return self.embedded / self.embed_s if self.embed_s > 0 else 0.0

    def skipped_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(item.reason for item in self.skipped).items()))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["photos_per_s"] = round(self.photos_per_s, 2)
        data["skipped_by_reason"] = self.skipped_by_reason()
        return data

    def counts(self) -> dict:
        """The report without the per-file list (for the manifest)."""
        data = self.to_dict()
        data.pop("skipped")
        data["skipped"] = len(self.skipped)
        return data

    def _where(self) -> str:
        if self.distributor != "local":  # its workers' own encoders: the build process's lanes did not embed
            return f"on {self.distributor}"
        return f"{self.lanes} encoder lane{'s' if self.lanes > 1 else ''}"

    def summary(self) -> str:
        reasons = ", ".join(f"{reason} {count}" for reason, count in self.skipped_by_reason().items())
        head = (f"Index {self.index_dir}: version {self.version} ({self.status}; previous {self.previous or 'none'}), "
                f"{self.size} photos, index {self.factory}")
        lines = [
            head,
            f"  added {self.added} · updated {self.updated} · removed {self.removed} · unchanged {self.unchanged} · "
            f"skipped {len(self.skipped)}" + (f" ({reasons})" if reasons else ""),
            f"  embedded {self.embedded} photos in {self.embed_s:.1f} s ({self.photos_per_s:.1f} photos/s"
            + (f"; {self.precision}, {self._where()})" if self.precision else ")")
            + (f"; {self.resumed} resumed from an interrupted run" if self.resumed else "")
            + f" · total {self.elapsed_s:.1f} s",
        ]
        lines += [f"  {note}" for note in self.notes]
        for item in self.skipped[:10]:
            lines.append(f"  skipped {item.reason}: {_printable(item.path)}"
                         + (f" ({_printable(item.detail)})" if item.detail else ""))
        if len(self.skipped) > 10:
            where = "the version's report.json" if self.status == "built" else "--json lists them all"
            lines.append(f"  ... and {len(self.skipped) - 10} more ({where})")
        return "\n".join(lines)


def _printable(text: str) -> str:
    """``text`` with control characters escaped (a file named with a newline or a terminal escape code prints on
    one line, as itself): the summary goes to a terminal or a log."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
