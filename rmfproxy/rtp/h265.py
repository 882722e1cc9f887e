"""H.265 over RTP (RFC 7798): NAL types, packetizing, keyframe detection, SDP parameters."""

from __future__ import annotations

import base64

from rmfproxy.rtp import nal
from rmfproxy.rtp.nal import Buffer, Depacketizer, KeyframeTracker, split_annexb, to_annexb

IRAP = frozenset(range(16, 22))
"""BLA_W_LP .. CRA_NUT: intra random access point slices."""
RASL_N = 8
RASL_R = 9
"""Random access skipped leading pictures (ITU-T H.265 Table 7-1)."""
CRA = 21
VPS = 32
SPS = 33
PPS = 34
AUD = 35
PREFIX_SEI = 39
SUFFIX_SEI = 40
AP = 48
FU = 49


def nal_type(buf: Buffer) -> int:
    """The 6-bit type of the two-byte NAL unit header at the start of ``buf``."""
    return (buf[0] >> 1) & 0x3F


def _header(first: Buffer, ptype: int) -> bytes:
    # F, LayerId and TID from the NAL being carried (RFC 7798 §4.4.2, §4.4.3).
    return bytes([(first[0] & 0x81) | (ptype << 1), first[1]])


FORMAT = nal.NalFormat(
    name="H265",
    header_len=2,
    nal_type=nal_type,
    aggregate=AP,
    fragment=FU,
    keyframe_types=IRAP | {VPS, SPS, PPS},
    vcl_types=frozenset(range(0, 32)),
    irap_types=IRAP,
    param_types=(VPS, SPS, PPS),
    leading_skip_types=frozenset({RASL_N, RASL_R}),
    make_header=_header,
)


def packetize(nals: list[bytes], mtu: int = 1400) -> list[bytes]:
    """RTP payloads for one access unit (AP for small NALs, FU for large)."""
    return nal.packetize(FORMAT, nals, mtu)


def payload_nal_types(payload: Buffer) -> list[int]:
    """Types of the NAL units that begin in this RTP payload."""
    return nal.starting_types(FORMAT, payload)


def is_keyframe_nal(t: int) -> bool:
    """True for IRAP slices and parameter sets."""
    return t in FORMAT.keyframe_types


def starts_keyframe(payload: Buffer) -> bool:
    """True if this payload begins an IRAP slice or a parameter set."""
    return any(t in FORMAT.keyframe_types for t in payload_nal_types(payload))


def carries_parameter_sets(payload: Buffer) -> bool:
    """True if a VPS, SPS or PPS begins in this payload."""
    return any(t in (VPS, SPS, PPS) for t in payload_nal_types(payload))


def keyframe_tracker() -> KeyframeTracker:
    """A per-stream tracker of keyframe access-unit starts."""
    return KeyframeTracker(FORMAT)


def depacketizer() -> Depacketizer:
    """A depacketizer for H.265 payloads."""
    return Depacketizer(FORMAT)


def make_sprop_fmtp(vps: bytes, sps: bytes, pps: bytes) -> dict[str, str]:
    """The ``sprop-vps/sps/pps`` fmtp parameters (RFC 7798 §7.1)."""
    return {
        "sprop-vps": base64.b64encode(vps).decode(),
        "sprop-sps": base64.b64encode(sps).decode(),
        "sprop-pps": base64.b64encode(pps).decode(),
    }


__all__ = [
    "AP",
    "AUD",
    "FORMAT",
    "FU",
    "IRAP",
    "PPS",
    "PREFIX_SEI",
    "SPS",
    "SUFFIX_SEI",
    "VPS",
    "Depacketizer",
    "carries_parameter_sets",
    "depacketizer",
    "is_keyframe_nal",
    "keyframe_tracker",
    "make_sprop_fmtp",
    "nal_type",
    "packetize",
    "payload_nal_types",
    "split_annexb",
    "starts_keyframe",
    "to_annexb",
]
