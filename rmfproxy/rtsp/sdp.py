"""Session descriptions (RFC 4566) as far as RTSP needs them, and control URLs (RFC 2326 C.1.1)."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_MEDIA = 64
MAX_LINES = 2048


@dataclass(frozen=True, slots=True)
class RtpMap:
    """An ``a=rtpmap`` entry."""

    encoding: str
    clock_rate: int
    channels: int | None = None


Attribute = tuple[str, str | None]


def _attr(attrs: list[Attribute], name: str) -> str | None:
    for k, v in attrs:
        if k == name:
            return v
    return None


@dataclass
class MediaDescription:
    """One ``m=`` section."""

    media: str
    port: int
    proto: str
    formats: list[str]
    attributes: list[Attribute] = field(default_factory=list)
    connection: str | None = None
    bandwidth: list[str] = field(default_factory=list)
    title: str | None = None

    @property
    def control(self) -> str | None:
        """The ``a=control`` URL of this media."""
        return _attr(self.attributes, "control")

    def rtpmap(self, pt: int) -> RtpMap | None:
        """The rtpmap of payload type ``pt``, or None."""
        for k, v in self.attributes:
            if k == "rtpmap" and v:
                num, _, rest = v.partition(" ")
                if num.strip() == str(pt):
                    enc, _, tail = rest.strip().partition("/")
                    rate, _, ch = tail.partition("/")
                    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
                    if not (rate.isascii() and rate.isdigit()):
                        return None
                    channels = int(ch) if ch.isascii() and ch.isdigit() else None
                    return RtpMap(enc, int(rate), channels)
        return None

    def fmtp(self, pt: int) -> dict[str, str]:
        """The fmtp parameters of payload type ``pt``."""
        for k, v in self.attributes:
            if k == "fmtp" and v:
                num, _, rest = v.partition(" ")
                if num.strip() == str(pt):
                    out = {}
                    for p in rest.split(";"):
                        name, _, val = p.strip().partition("=")
                        if name:
                            out[name.strip()] = val.strip()
                    return out
        return {}


@dataclass
class SessionDescription:
    """A whole SDP document."""

    version: int = 0
    origin: str = "- 0 0 IN IP4 0.0.0.0"
    session_name: str = "-"
    connection: str | None = None
    timing: str = "0 0"
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)
    """Session-level lines this type does not interpret (i=, u=, e=, b=, ...)."""

    @property
    def control(self) -> str | None:
        """The session-level ``a=control``."""
        return _attr(self.attributes, "control")

    @classmethod
    def parse(cls, text: str) -> SessionDescription:
        """Parse SDP text; ``ValueError`` on anything that is not SDP."""
        lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
        lines = [ln for ln in lines if ln]
        if len(lines) > MAX_LINES:
            raise ValueError("SDP has too many lines")
        if not lines or not lines[0].startswith("v="):
            raise ValueError("SDP must start with v=")
        sd = cls()
        current: MediaDescription | None = None
        for ln in lines:
            if len(ln) < 2 or ln[1] != "=" or not ln[0].isalpha():
                raise ValueError(f"malformed SDP line {ln[:40]!r}")
            kind, value = ln[0], ln[2:]
            if kind == "m":
                parts = value.split()
                if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                    raise ValueError(f"malformed m= line {value[:40]!r}")
                if len(sd.media) >= MAX_MEDIA:
                    raise ValueError("SDP has too many media sections")
                current = MediaDescription(
                    parts[0], int(parts[1].split("/")[0]), parts[2], parts[3:]
                )
                sd.media.append(current)
            elif kind == "a":
                name, sep, val = value.partition(":")
                attr: Attribute = (name, val if sep else None)
                (current.attributes if current else sd.attributes).append(attr)
            elif kind == "c":
                if current:
                    current.connection = value
                else:
                    sd.connection = value
            elif kind == "b" and current:
                current.bandwidth.append(value)
            elif kind == "i" and current:
                current.title = value
            elif current is None:
                if kind == "v":
                    if not value.isdigit():
                        raise ValueError("SDP version must be a number")
                    sd.version = int(value)
                elif kind == "o":
                    sd.origin = value
                elif kind == "s":
                    sd.session_name = value
                elif kind == "t":
                    sd.timing = value
                else:
                    sd.extra.append((kind, value))
        return sd

    def serialize(self) -> str:
        """The SDP text with CRLF line endings."""
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        out += [f"{k}={v}" for k, v in self.extra if k in "iuep"]
        if self.connection:
            out.append(f"c={self.connection}")
        out += [f"{k}={v}" for k, v in self.extra if k == "b"]
        out.append(f"t={self.timing}")
        out += [f"{k}={v}" for k, v in self.extra if k not in "iuepb"]
        out += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes]
        for m in self.media:
            out.append(f"m={m.media} {m.port} {m.proto} {' '.join(m.formats)}")
            if m.title:
                out.append(f"i={m.title}")
            if m.connection:
                out.append(f"c={m.connection}")
            out += [f"b={b}" for b in m.bandwidth]
            out += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in m.attributes]
        return "\r\n".join(out) + "\r\n"


def resolve_control(base_url: str, control: str | None) -> str:
    """The URL a control attribute designates (RFC 2326 C.1.1).

    ``*`` or no control means the base itself; an absolute URL stands alone;
    anything else is relative to the base.
    """
    if not control or control == "*":
        return base_url
    if "://" in control:
        return control
    if base_url.endswith("/"):
        return base_url + control.lstrip("/")
    return base_url + "/" + control.lstrip("/")
