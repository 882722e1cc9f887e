"""Typed RTSP header values (RFC 2326 §12): Transport, Session, Range, RTP-Info, CSeq, Public.

Each type has ``parse(value)`` (``ValueError`` naming the problem) and
``serialize()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _port_pair(value: str, what: str) -> tuple[int, int]:
    a, sep, b = value.partition("-")
    if not (a + b).isascii() or not a.isdigit() or (sep and not b.isdigit()):
        raise ValueError(f"Transport {what} must be N or N-M, got {value[:20]!r}")
    if len(a) > 5 or len(b) > 5:
        raise ValueError(f"Transport {what} must be N or N-M, got {value[:20]!r}")
    lo = int(a)
    hi = int(b) if sep else lo + 1
    limit = 255 if what == "interleaved" else 65535
    if lo > limit or hi > limit:
        raise ValueError(f"Transport {what} out of range: {value[:20]!r}")
    # A client's RTP and RTCP need two distinct channels/ports, RTCP the higher one
    # (RFC 2326 §12.39; RFC 3550 §11). A recorder's server_port is taken as announced:
    # it may be any two ports (two sockets bound apart), which the upstream pins.
    if what != "server_port" and hi <= lo:
        raise ValueError(f"Transport {what} must be a rising pair, got {value[:20]!r}")
    return lo, hi


@dataclass
class TransportSpec:
    """One transport alternative of a Transport header (RFC 2326 §12.39)."""

    profile: str = "RTP/AVP"
    lower_transport: str = "UDP"
    unicast: bool = True
    interleaved: tuple[int, int] | None = None
    client_port: tuple[int, int] | None = None
    server_port: tuple[int, int] | None = None
    ssrc: int | None = None
    mode: str | None = None
    ttl: int | None = None
    destination: str | None = None
    source: str | None = None
    extra: list[tuple[str, str | None]] = field(default_factory=list)
    """Parameters this type does not interpret, kept in order."""

    @classmethod
    def parse(cls, value: str) -> TransportSpec:
        """One alternative, e.g. ``RTP/AVP/TCP;unicast;interleaved=0-1``."""
        parts = [p.strip() for p in value.strip().split(";")]
        spec = [p.strip() for p in parts[0].split("/")]
        if len(spec) not in (2, 3) or not all(spec):
            raise ValueError(f"Transport must start with RTP/AVP[/TCP|UDP], got {parts[0][:30]!r}")
        out = cls(
            profile=f"{spec[0]}/{spec[1]}".upper(),
            lower_transport=spec[2].upper() if len(spec) == 3 else "UDP",
        )
        if out.lower_transport not in ("TCP", "UDP"):
            raise ValueError(f"unknown lower transport {spec[2][:10]!r}")
        for p in parts[1:]:
            if not p:
                continue
            name, sep, val = p.partition("=")
            name = name.strip().lower()
            val = val.strip()
            if name == "unicast":
                out.unicast = True
            elif name == "multicast":
                out.unicast = False
            elif name == "interleaved":
                out.interleaved = _port_pair(val, "interleaved")
            elif name == "client_port":
                out.client_port = _port_pair(val, "client_port")
            elif name == "server_port":
                out.server_port = _port_pair(val, "server_port")
            elif name == "ssrc":
                try:
                    out.ssrc = int(val, 16)
                except ValueError:
                    raise ValueError(f"Transport ssrc must be hex, got {val[:12]!r}") from None
                if not 0 <= out.ssrc <= 0xFFFFFFFF:
                    raise ValueError("Transport ssrc out of range")
            elif name == "mode":
                out.mode = val.strip('"')
            elif name == "ttl":
                if not val.isdigit():
                    raise ValueError("Transport ttl must be a number")
                out.ttl = int(val)
            elif name == "destination":
                out.destination = val or None
            elif name == "source":
                out.source = val or None
            else:
                out.extra.append((name, val if sep else None))
        return out

    def serialize(self) -> str:
        """The alternative as a header value."""
        lower = "/TCP" if self.lower_transport == "TCP" else ""
        parts = [f"{self.profile}{lower}", "unicast" if self.unicast else "multicast"]
        if self.destination:
            parts.append(f"destination={self.destination}")
        if self.source:
            parts.append(f"source={self.source}")
        if self.interleaved:
            parts.append(f"interleaved={self.interleaved[0]}-{self.interleaved[1]}")
        if self.client_port:
            parts.append(f"client_port={self.client_port[0]}-{self.client_port[1]}")
        if self.server_port:
            parts.append(f"server_port={self.server_port[0]}-{self.server_port[1]}")
        if self.ttl is not None:
            parts.append(f"ttl={self.ttl}")
        if self.ssrc is not None:
            parts.append(f"ssrc={self.ssrc:08X}")
        if self.mode:
            parts.append(f"mode={self.mode}")
        parts.extend(k if v is None else f"{k}={v}" for k, v in self.extra)
        return ";".join(parts)


def parse_transports(value: str) -> list[TransportSpec]:
    """Every comma-separated alternative of a Transport header, in preference order."""
    alts = [a for a in value.split(",") if a.strip()]
    if not alts:
        raise ValueError("empty Transport header")
    if len(alts) > 16:
        raise ValueError("too many Transport alternatives")
    return [TransportSpec.parse(a) for a in alts]


@dataclass
class SessionHeader:
    """``Session: id[;timeout=N]`` (RFC 2326 §12.37)."""

    id: str
    timeout: int | None = None

    @classmethod
    def parse(cls, value: str) -> SessionHeader:
        """Parse a Session header value."""
        parts = [p.strip() for p in value.split(";")]
        sid = parts[0]
        if not sid or len(sid) > 256 or any(c.isspace() for c in sid):
            raise ValueError("Session id missing or malformed")
        timeout = None
        for p in parts[1:]:
            name, _, val = p.partition("=")
            if name.strip().lower() == "timeout":
                if not val.strip().isdigit() or len(val.strip()) > 6:
                    raise ValueError(f"Session timeout must be seconds, got {val[:10]!r}")
                timeout = int(val)
        return cls(sid, timeout)

    def serialize(self) -> str:
        """The header value."""
        return self.id if self.timeout is None else f"{self.id};timeout={self.timeout}"


@dataclass
class RangeHeader:
    """``Range: npt=0.000-`` / ``clock=20240101T000000Z-`` (RFC 2326 §12.29)."""

    unit: str
    start: str
    end: str = ""

    @classmethod
    def parse(cls, value: str) -> RangeHeader:
        """Parse the first range of a Range header (``;time=`` is ignored)."""
        spec = value.split(";")[0].strip()
        unit, sep, rng = spec.partition("=")
        unit = unit.strip().lower()
        if not sep or unit not in ("npt", "clock", "smpte", "smpte-30-drop", "smpte-25"):
            raise ValueError(f"Range unit must be npt, clock or smpte, got {spec[:20]!r}")
        start, dash, end = rng.partition("-")
        if not dash:
            raise ValueError("Range needs a '-'")
        return cls(unit, start.strip(), end.strip())

    def serialize(self) -> str:
        """The header value."""
        return f"{self.unit}={self.start}-{self.end}"


@dataclass
class RtpInfo:
    """One stream of an RTP-Info header (RFC 2326 §12.33)."""

    url: str
    seq: int | None = None
    rtptime: int | None = None


def parse_rtp_info(value: str) -> list[RtpInfo]:
    """Every stream of an RTP-Info header."""
    out = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        info = RtpInfo("")
        for p in item.split(";"):
            name, _, val = p.strip().partition("=")
            name = name.lower()
            if name == "url":
                info.url = val
            elif name == "seq":
                if not val.isdigit():
                    raise ValueError("RTP-Info seq must be a number")
                info.seq = int(val) & 0xFFFF
            elif name == "rtptime":
                if not val.isdigit():
                    raise ValueError("RTP-Info rtptime must be a number")
                info.rtptime = int(val) & 0xFFFFFFFF
        if not info.url:
            raise ValueError("RTP-Info stream without url")
        out.append(info)
    return out


def format_rtp_info(infos: list[RtpInfo]) -> str:
    """The header value for the given streams."""
    parts = []
    for i in infos:
        s = f"url={i.url}"
        if i.seq is not None:
            s += f";seq={i.seq}"
        if i.rtptime is not None:
            s += f";rtptime={i.rtptime}"
        parts.append(s)
    return ",".join(parts)


def parse_cseq(value: str) -> int:
    """A CSeq value."""
    v = value.strip()
    if not v.isdigit() or len(v) > 10:
        raise ValueError(f"CSeq must be a number, got {value[:12]!r}")
    return int(v)


def parse_public(value: str) -> list[str]:
    """The methods of a Public header."""
    return [m.strip().upper() for m in value.split(",") if m.strip()]
