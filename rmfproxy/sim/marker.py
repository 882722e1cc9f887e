"""A per-frame marker NAL (SEI user_data_unregistered) carrying a frame counter and capture time.

H.264: SEI NAL type 6 (ITU-T H.264 D.1.6); H.265: prefix SEI NAL type 39
(ITU-T H.265 D.2.7), both with SEI payload type 5. The payload is a fixed
16-byte UUID, then 16 hex digits of frame counter and 16 of capture time in
microseconds: ASCII never contains 0x00, so no emulation-prevention byte is
ever needed and the NAL has a fixed length that can be rewritten in place.
"""

from __future__ import annotations

from typing import Literal

RMF_UUID = bytes.fromhex("726d6670726f78792d6672616d652121")  # "rmfproxy-frame!!"
_TEXT_LEN = 32
_PAYLOAD_LEN = 16 + _TEXT_LEN
_HEADERS = {"h264": b"\x06", "h265": b"\x4e\x01"}  # nal type 6 / 39 (layer 0, tid 1)
_SEI_HEAD = bytes([5, _PAYLOAD_LEN])  # payload type 5, size 48

Codec = Literal["h264", "h265"]

MARKER_LEN = {c: len(h) + 2 + _PAYLOAD_LEN + 1 for c, h in _HEADERS.items()}
"""Length of the marker NAL of each codec."""


def _text(counter: int, capture_us: int) -> bytes:
    return f"{counter & (2**64 - 1):016x}{capture_us & (2**64 - 1):016x}".encode()


def make_marker_nal(codec: Codec, counter: int, capture_us: int) -> bytes:
    """The marker NAL (no start code) for frame ``counter`` captured at ``capture_us``."""
    return _HEADERS[codec] + _SEI_HEAD + RMF_UUID + _text(counter, capture_us) + b"\x80"


def rewrite_marker(nal: bytearray, counter: int, capture_us: int) -> None:
    """Rewrite the counter and time of a marker NAL in place."""
    start = nal.find(RMF_UUID)
    if start < 0:
        raise ValueError("not a marker NAL")
    nal[start + 16 : start + 16 + _TEXT_LEN] = _text(counter, capture_us)


def find_marker(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """``(counter, capture_us)`` of the first marker in ``data`` (Annex B, NAL or RTP payload)."""
    raw = bytes(data)
    i = raw.find(RMF_UUID)
    if i < 0 or len(raw) < i + 16 + _TEXT_LEN:
        return None
    text = raw[i + 16 : i + 16 + _TEXT_LEN]
    try:
        return int(text[:16], 16), int(text[16:], 16)
    except ValueError:
        return None
