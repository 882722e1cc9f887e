"""H.264 over RTP (RFC 6184): NAL types, packetizing, keyframe detection, SDP parameters."""

from __future__ import annotations

import base64

from rmfproxy.rtp import nal
from rmfproxy.rtp.nal import Buffer, Depacketizer, KeyframeTracker, split_annexb, to_annexb

NON_IDR = 1
IDR = 5
SEI = 6
SPS = 7
PPS = 8
AUD = 9
STAP_A = 24
FU_A = 28


def nal_type(buf: Buffer) -> int:
    """The 5-bit type of the NAL unit header at the start of ``buf``."""
    return buf[0] & 0x1F


def _header(first: Buffer, ptype: int) -> bytes:
    # F and NRI from the NAL being carried (RFC 6184 §5.7.1, §5.8).
    return bytes([(first[0] & 0xE0) | ptype])


FORMAT = nal.NalFormat(
    name="H264",
    header_len=1,
    nal_type=nal_type,
    aggregate=STAP_A,
    fragment=FU_A,
    keyframe_types=frozenset({IDR, SPS, PPS}),
    vcl_types=frozenset(range(1, 6)),
    irap_types=frozenset({IDR}),
    param_types=(SPS, PPS),
    leading_skip_types=frozenset(),
    make_header=_header,
)


def packetize(nals: list[bytes], mtu: int = 1400) -> list[bytes]:
    """RTP payloads for one access unit (STAP-A for small NALs, FU-A for large)."""
    return nal.packetize(FORMAT, nals, mtu)


def payload_nal_types(payload: Buffer) -> list[int]:
    """Types of the NAL units that begin in this RTP payload."""
    return nal.starting_types(FORMAT, payload)


def is_keyframe_nal(t: int) -> bool:
    """True for IDR slices and parameter sets."""
    return t in FORMAT.keyframe_types


def starts_keyframe(payload: Buffer) -> bool:
    """True if this payload begins an IDR slice or a parameter set."""
    return any(t in FORMAT.keyframe_types for t in payload_nal_types(payload))


def carries_parameter_sets(payload: Buffer) -> bool:
    """True if an SPS or PPS begins in this payload."""
    return any(t in (SPS, PPS) for t in payload_nal_types(payload))


def keyframe_tracker() -> KeyframeTracker:
    """A per-stream tracker of keyframe access-unit starts."""
    return KeyframeTracker(FORMAT)


def depacketizer() -> Depacketizer:
    """A depacketizer for H.264 payloads."""
    return Depacketizer(FORMAT)


def parse_sprop_parameter_sets(value: str) -> list[bytes]:
    """The NAL units of an ``sprop-parameter-sets`` value (RFC 6184 §8.1)."""
    out = []
    for part in value.split(","):
        part = part.strip()
        if part:
            try:
                out.append(base64.b64decode(part, validate=True))
            except ValueError:
                raise ValueError("sprop-parameter-sets is not base64") from None
    return out


def make_sprop(sps: bytes, pps: bytes) -> str:
    """The ``sprop-parameter-sets`` value for one SPS and one PPS."""
    return f"{base64.b64encode(sps).decode()},{base64.b64encode(pps).decode()}"


def profile_level_id(sps: bytes) -> str:
    """The ``profile-level-id`` (hex of profile_idc, constraint flags, level_idc) of an SPS."""
    if len(sps) < 4:
        raise ValueError("SPS too short")
    return sps[1:4].hex().upper()


__all__ = [
    "AUD",
    "FORMAT",
    "FU_A",
    "IDR",
    "NON_IDR",
    "PPS",
    "SEI",
    "SPS",
    "STAP_A",
    "Depacketizer",
    "carries_parameter_sets",
    "depacketizer",
    "is_keyframe_nal",
    "keyframe_tracker",
    "make_sprop",
    "nal_type",
    "packetize",
    "parse_sprop_parameter_sets",
    "payload_nal_types",
    "profile_level_id",
    "split_annexb",
    "starts_keyframe",
    "to_annexb",
]
