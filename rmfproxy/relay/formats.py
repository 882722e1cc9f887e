"""What a feed's client-facing tracks carry, and the SDP clients get at DESCRIBE."""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass

from rmfproxy.rtp.nal import NalFormat
from rmfproxy.rtsp.sdp import SessionDescription


@dataclass(frozen=True, slots=True)
class TrackFormat:
    """What a client-facing track carries, compared when a source connects."""

    media: str
    payload_type: int
    encoding: str
    clock_rate: int


def same_format(a: TrackFormat, b: TrackFormat) -> bool:
    """Can a track of format ``b`` be relayed as ``a``? The payload type may differ
    (recorders pick their own dynamic numbers): it is rewritten to the announced one."""
    return (a.media, a.encoding, a.clock_rate) == (b.media, b.encoding, b.clock_rate)


def track_formats(sdp: SessionDescription) -> list[TrackFormat]:
    """The comparable format of every media section (first payload type of each)."""
    out = []
    for m in sdp.media:
        first = str(m.formats[0]) if m.formats else ""
        # A payload type is ASCII digits (RFC 4566 §5.14); anything else matches nothing.
        pt = int(first) if first.isascii() and first.isdigit() else -1
        rm = m.rtpmap(pt) if pt >= 0 else None
        enc = rm.encoding.upper() if rm else str(pt)
        clock = rm.clock_rate if rm else (8000 if pt in (0, 8) else 90000)
        out.append(TrackFormat(m.media, pt, enc, clock))
    return out


def client_sdp(upstream: SessionDescription, camera: str) -> SessionDescription:
    """The SDP clients get: the upstream's media formats, the proxy's controls (trackID=i)."""
    lines = [
        "v=0",
        f"o=- {random.getrandbits(31)} 1 IN IP4 0.0.0.0",
        f"s={camera}",
        "c=IN IP4 0.0.0.0",
        "t=0 0",
        "a=tool:rmfproxy",
        "a=control:*",
        "a=range:npt=now-",
    ]
    for i, m in enumerate(upstream.media):
        lines.append(f"m={m.media} 0 {m.proto} {' '.join(str(f) for f in m.formats)}")
        for name, value in m.attributes:
            if name in ("control", "range", "recvonly", "sendonly", "sendrecv", "inactive"):
                continue
            lines.append(f"a={name}:{value}" if value is not None else f"a={name}")
        lines.append("a=recvonly")
        lines.append(f"a=control:trackID={i}")
    return SessionDescription.parse("\r\n".join(lines) + "\r\n")


def sdp_parameter_sets(sdp: SessionDescription, track: int, fmt: NalFormat) -> dict[int, bytes]:
    """The parameter sets an SDP announces for one video track, by NAL type:
    ``sprop-parameter-sets`` (H.264, RFC 6184 §8.1) or ``sprop-vps/sps/pps``
    (H.265, RFC 7798 §7.1). Undecodable values are ignored (the stream still has its own)."""
    if track >= len(sdp.media) or not sdp.media[track].formats:
        return {}
    m = sdp.media[track]
    try:
        params = {k.lower(): v for k, v in m.fmtp(int(m.formats[0])).items()}
    except ValueError:
        return {}
    out: dict[int, bytes] = {}
    for key in ("sprop-parameter-sets", "sprop-vps", "sprop-sps", "sprop-pps"):
        for part in params.get(key, "").split(","):
            try:
                nal = base64.b64decode(part.strip(), validate=True)
            except ValueError:
                continue
            if len(nal) >= fmt.header_len and fmt.nal_type(nal) in fmt.param_types:
                out[fmt.nal_type(nal)] = nal
    return out
