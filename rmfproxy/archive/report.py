"""The coverage report of one camera over a window: what the API and ``rmfproxy coverage`` show.

Times in the JSON form are ISO 8601 strings in UTC with milliseconds
(``2026-11-26T09:00:00.000+00:00``), as everywhere in the admin API; ratios are
fractions from 0 to 1 rounded to 4 digits. Intervals are ``[start, end]`` pairs of
such strings, meaning the closed-open ``[start, end)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rmfproxy.archive.coverage import Interval, clip, coverage_ratio, gaps, union

MERGED = "merged"
"""The key of the merged coverage's ratio in ``coverage_ratio``."""


def iso(t: float) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def parse_time(value: str) -> float:
    """An ISO 8601 date-time with a timezone (``Z`` or ``±HH:MM``) as Unix seconds.

    ``ValueError`` with a message otherwise. A ``+`` that a URL query turned into a space
    (``...T09:00:00 01:00``) is taken back as ``+``.
    """
    text = value.strip()
    if len(text) > 6 and text[-6] == " " and text[-3] == ":":
        text = f"{text[:-6]}+{text[-5:]}"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an ISO 8601 date-time (e.g. 2026-11-26T09:00:00Z)"
        ) from None
    if dt.tzinfo is None:
        raise ValueError(f"{value!r} has no timezone: add Z (UTC) or an offset like +01:00")
    return dt.timestamp()


@dataclass(frozen=True)
class CoverageReport:
    """Per source intervals, their union, the gaps no source covers, and the ratios."""

    camera: str
    start: float
    end: float
    sources: dict[str, list[Interval]]
    """Per source (configuration order), its normalized intervals inside the window."""
    merged: list[Interval]
    gaps: list[Interval]
    ratios: dict[str, float]
    """Per source and :data:`MERGED`, the covered fraction of the window."""

    @classmethod
    def build(
        cls, camera: str, start: float, end: float, sources: dict[str, list[Interval]]
    ) -> CoverageReport:
        """The report of ``sources`` (intervals per source) over ``[start, end)``."""
        per = {name: clip(ivs, start, end) for name, ivs in sources.items()}
        merged = union(per.values())
        ratios = {name: coverage_ratio(ivs, start, end) for name, ivs in per.items()}
        ratios[MERGED] = coverage_ratio(merged, start, end)
        return cls(camera, start, end, per, merged, gaps(per.values(), start, end), ratios)

    def to_json(self) -> dict[str, Any]:
        """The API's JSON body (ISO times)."""

        def spans(ivs: list[Interval]) -> list[list[str]]:
            return [[iso(s), iso(e)] for s, e in ivs]

        return {
            "camera": self.camera,
            "start": iso(self.start),
            "end": iso(self.end),
            "sources": {name: spans(ivs) for name, ivs in self.sources.items()},
            "merged": spans(self.merged),
            "gaps": spans(self.gaps),
            "coverage_ratio": {k: round(v, 4) for k, v in self.ratios.items()},
        }

    def to_text(self) -> str:
        """A table for a terminal: one line per interval, per source, merged and gaps."""
        lines = [
            f"camera {self.camera}: {iso(self.start)} .. {iso(self.end)} "
            f"({self.end - self.start:.0f} s)",
            f"{'':<16} {'start':<29} {'end':<29} {'seconds':>9}",
        ]
        rows = [*self.sources.items(), (MERGED, self.merged), ("gaps", self.gaps)]
        for name, ivs in rows:
            ratio = self.ratios.get(name)
            head = name if ratio is None else f"{name} ({ratio:.1%})"
            if not ivs:
                lines.append(f"{head:<16} -")
            for i, (s, e) in enumerate(ivs):
                label = head if i == 0 else ""
                lines.append(f"{label:<16} {iso(s):<29} {iso(e):<29} {e - s:>9.1f}")
        return "\n".join(lines)
