"""Which recorder serves which camera stream: the configuration as the planner sees it.

Theory of operation.

- **A source is one stream from one recorder.** The proxy pulls every source of every
  camera at the same time (the standbys are hot, DESIGN.md "What rmfproxy is"), so a
  recorder serves the proxy one stream per camera source it carries, all the time,
  whichever source is active.
- **A source belongs to a recorder.** When the source's ``name`` is a key of the
  configuration's ``recorders`` section, the recorder is that entry (with its site and
  capacity). Otherwise the recorder is named by the ``host:port`` of the source's URL
  (default port 554, 322 for ``rtsps``): two sources on one address are one recorder,
  whatever their names; such a recorder has no site and no known capacity. The names
  the sources used for it are kept as its *aliases* for the reports.
- Nothing here reads a secret or touches the network: the input is a validated
  :class:`~rmfproxy.config.Config` (:func:`rmfproxy.config.parse_config_offline` is
  enough).
"""

from __future__ import annotations

from dataclasses import dataclass

from rmfproxy.config import Config, SourceConfig
from rmfproxy.upstream.url import host_port


@dataclass(frozen=True)
class Capacity:
    """What one recorder can serve at once; None in a field means not limited."""

    cameras: int | None = None
    """Streams (one per camera source on the recorder)."""
    mbps: float | None = None
    """Mbit/s of those streams together."""

    @property
    def known(self) -> bool:
        """Whether any limit is set."""
        return self.cameras is not None or self.mbps is not None

    def exceeded(self, streams: int, mbps: float) -> list[str]:
        """How ``streams`` / ``mbps`` go over this capacity, one phrase per limit."""
        over = []
        if self.cameras is not None and streams > self.cameras:
            over.append(f"{streams} streams > {self.cameras}")
        if self.mbps is not None and mbps > self.mbps + 1e-9:
            over.append(f"{mbps:g} Mbit/s > {self.mbps:g}")
        return over

    def fits(self, streams: int, mbps: float) -> bool:
        """Whether ``streams`` / ``mbps`` stay within this capacity."""
        return not self.exceeded(streams, mbps)

    def describe(self) -> str:
        """``16 streams / 64 Mbit/s``, ``unlimited`` or one of the two."""
        parts = []
        if self.cameras is not None:
            parts.append(f"{self.cameras} streams")
        if self.mbps is not None:
            parts.append(f"{self.mbps:g} Mbit/s")
        return " / ".join(parts) or "unlimited"

    def to_json(self) -> dict[str, float | int | None]:
        """``{"cameras": ..., "mbps": ...}`` (null: not limited)."""
        return {"cameras": self.cameras, "mbps": self.mbps}


@dataclass(frozen=True)
class Recorder:
    """One recorder the configuration's sources point at."""

    name: str
    site: str | None
    """Its fault domain (None: not declared, a site of its own)."""
    capacity: Capacity
    declared: bool
    """Whether it is a key of the ``recorders`` section (else named by ``host:port``)."""
    aliases: tuple[str, ...] = ()
    """Source names used for it, when they differ from its name."""

    def label(self) -> str:
        """Its name, with the source names used for it, e.g. ``192.0.2.10:554 (nvr-main)``."""
        return f"{self.name} ({', '.join(self.aliases)})" if self.aliases else self.name


@dataclass(frozen=True)
class Stream:
    """One source of one camera: what its recorder serves to the proxy."""

    camera: str
    priority: int
    """Index in the camera's sources (0: the primary)."""
    source: str
    """The source's name in metrics and the API (``name`` or ``host:port``)."""
    recorder: str
    mbps: float


@dataclass(frozen=True)
class Topology:
    """Recorders and the streams each camera gets from them, in priority order."""

    recorders: dict[str, Recorder]
    """Declared recorders in file order, then the others in order of first use."""
    cameras: dict[str, tuple[Stream, ...]]
    pending: tuple[str, ...]
    """Cameras marked ``pending`` (imported while unreachable)."""

    @classmethod
    def from_config(cls, cfg: Config) -> Topology:
        """The topology of a validated configuration (reads no secret)."""
        aliases: dict[str, list[str]] = {}
        cameras: dict[str, tuple[Stream, ...]] = {}
        for cam_id, cam in cfg.cameras.items():
            streams = []
            for i, src in enumerate(cam.sources):
                recorder = recorder_of(cfg, src)
                names = aliases.setdefault(recorder, [])
                if src.name and src.name != recorder and src.name not in names:
                    names.append(src.name)
                streams.append(Stream(cam_id, i, cam.source_name(i), recorder, cam.bitrate_mbps))
            cameras[cam_id] = tuple(streams)
        recorders: dict[str, Recorder] = {}
        for name, rec in cfg.recorders.items():
            cap = rec.capacity
            recorders[name] = Recorder(
                name,
                rec.site,
                Capacity(cap.cameras, cap.mbps) if cap else Capacity(),
                declared=True,
                aliases=tuple(aliases.get(name, ())),
            )
        for name, names in aliases.items():
            if name not in recorders:
                recorders[name] = Recorder(name, None, Capacity(), False, tuple(names))
        pending = tuple(c for c, cam in cfg.cameras.items() if cam.pending)
        return cls(recorders, cameras, pending)

    def streams_on(self, recorder: str) -> list[Stream]:
        """Every stream the recorder serves to the proxy, in camera order."""
        return [s for streams in self.cameras.values() for s in streams if s.recorder == recorder]

    def sites(self) -> dict[str, list[str]]:
        """Site -> its recorders, for the recorders with a declared site (sorted by site)."""
        out: dict[str, list[str]] = {}
        for rec in self.recorders.values():
            if rec.site is not None:
                out.setdefault(rec.site, []).append(rec.name)
        return dict(sorted(out.items()))


def recorder_of(cfg: Config, src: SourceConfig) -> str:
    """The recorder a source is on: its ``name`` if ``recorders`` has it, else ``host:port``."""
    if src.name is not None and src.name in cfg.recorders:
        return src.name
    host, port = host_port(src.url)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
