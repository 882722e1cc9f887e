"""Worst-case input shapes at full size: ``python fuzz/shapes.py [TARGET...]``.

Coverage-guided fuzzing grows inputs slowly (libFuzzer's length control), so a
million runs mostly try inputs of a few hundred bytes to a few KB. It finds
crashes well but rarely reaches the sizes where a per-item cost adds up.
Each shape here is a large input, at the size cap the proxy applies (16 KB of
RTSP head, the largest interleaved frame for RTP/RTCP), built to make its
parser do the most work per byte: many tiny items, folding, short garbage
lines. The script prints the minimum CPU time of the target's ``timed``
function over five runs, and marks shapes over the 10 ms bound.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz.runner import BOUND_MS, cpu_time_ms, load_target, timed_function
from fuzz.targets import NAMES

HEAD = 16384
"""StreamParser's default header cap."""
FRAME = 65535
"""The largest interleaved frame payload (RFC 2326 §10.12)."""


def _fill(prefix: bytes, unit: bytes, size: int, suffix: bytes = b"") -> bytes:
    n = max(0, (size - len(prefix) - len(suffix)) // len(unit))
    return prefix + unit * n + suffix


def _nal_records(payload: bytes, count: int, codec: int = 0) -> bytes:
    return bytes([codec | (20 << 1)]) + (bytes([len(payload)]) + payload) * count


SHAPES: dict[str, dict[str, Callable[[], bytes]]] = {
    "rtsp_stream": {
        "4,000 one-char headers": lambda: _fill(b"OPTIONS * RTSP/1.0\r\n", b"a:1\n", HEAD, b"\n"),
        "folded lines under 2,700 headers": lambda: (
            b"OPTIONS * RTSP/1.0\r\n" + b"a:\n" * 2700 + b" \n" * 3900 + b"\n"
        ),
        "one header folded 4,000 times": lambda: _fill(
            b"OPTIONS * RTSP/1.0\r\na: b\r\n", b" x\r\n", HEAD, b"\r\n"
        ),
        "1,170 minimal requests": lambda: _fill(b"", b"A * RTSP/1.0\n\n", HEAD),
        "4,096 empty frames": lambda: _fill(b"", b"$\x00\x00\x00", HEAD),
        "garbage: x LF": lambda: _fill(b"", b"x\n", HEAD),
        "garbage: LF": lambda: _fill(b"", b"\n", HEAD),
        "garbage: 31-char tokens": lambda: _fill(b"", b"abcdefghijklmnopqrstuvwxyz01234\n", HEAD),
        "1 MB body": lambda: (
            b"RTSP/1.0 200 OK\r\nContent-Length: 1048576\r\n\r\n" + b"v=0\r\n" * 209715 + b"x"
        ),
    },
    "rtsp_headers": {
        "Transport: 8,000 bare params": lambda: _fill(b"Transport: RTP/AVP", b";x", HEAD),
        "Transport: 16 alternatives": lambda: (
            b"Transport: "
            + b",".join([_fill(b"RTP/AVP/TCP", b";interleaved=0-1", HEAD // 16 - 1)] * 16)
        ),
        "RTP-Info: 1,400 streams": lambda: _fill(b"RTP-Info: ", b"url=a;seq=1;rtptime=2,", HEAD),
        "Public: 8,000 methods": lambda: _fill(b"Public: ", b"A,", HEAD),
        "Session: long id": lambda: b"Session: " + b"a" * 256 + b";timeout=60" * 1400,
        "unknown name: all parsers": lambda: _fill(b"X: ", b"a=1;", HEAD),
    },
    "sdp": {
        "2,047 attribute lines": lambda: b"v=0\n" + b"a=x\n" * 2046,
        "64 media, 30 rtpmaps each": lambda: (
            b"v=0\n" + (b"m=video 0 RTP/AVP 96\n" + b"a=rtpmap:97 X/1\n" * 30) * 64
        ),
        "m= line with 3,000 formats": lambda: _fill(b"v=0\nm=video 0 RTP/AVP", b" 96", HEAD),
        "fmtp with 2,000 params": lambda: (
            b"v=0\nm=video 0 RTP/AVP 96\n" + _fill(b"a=fmtp:96 ", b"a=1;", HEAD)
        ),
    },
    "auth_client": {
        "2,700 challenges": lambda: _fill(b"", b"D a=1 ", HEAD),
        "unterminated quotes": lambda: _fill(b"Digest ", b'a="b ', HEAD),
        "4,000 params": lambda: _fill(b"Digest ", b"a=b,", HEAD),
        "escaped quotes": lambda: _fill(b'Digest realm="', b'\\"', HEAD, b'"'),
        "200 header lines": lambda: b"\n".join([_fill(b"Digest ", b"a=b,", 80)] * 200),
    },
    "auth_server": {
        "4,000 params": lambda: _fill(b"Digest ", b"a=b,", HEAD),
        "huge nonce": lambda: (
            b'Digest username="admin", realm="rmfproxy", nonce="'
            + b"f" * 16000
            + b'", uri="x", response="0"'
        ),
        "escaped quotes": lambda: _fill(b'Digest username="', b'\\"', HEAD, b'"'),
    },
    "rtp": {
        "15 CSRCs, extension filling a frame": lambda: (
            bytes([0x9F, 0x60])
            + bytes(10 + 60)
            + b"\xbe\xde"
            + struct.pack(">H", (FRAME - 76) // 4)
            + bytes(4 * ((FRAME - 76) // 4))
        ),
    },
    "rtcp": {
        "16,384 four-byte packets": lambda: b"\x80\xcc\x00\x00" * (FRAME // 4 + 1),
        "SR with 31 blocks, repeated": lambda: (
            (struct.pack(">BBH", 0x9F, 200, 6 + 31 * 6) + bytes(24 + 31 * 24)) * (FRAME // 776)
        ),
        "BYE with 31 SSRCs, repeated": lambda: (
            (struct.pack(">BBH", 0x9F, 203, 31) + bytes(124)) * (FRAME // 128)
        ),
    },
    "nal": {
        "256 one-byte payloads": lambda: _nal_records(b"\x41", 256),
        "256 STAP-A of 1-byte NALs": lambda: _nal_records(b"\x18" + b"\x00\x01\x41" * 10, 256),
        "256 FU-A pieces": lambda: bytes([20 << 1]) + (bytes([30]) + b"\x7c\x05" + bytes(28)) * 256,
        "66 H.265 APs of 30 2-byte NALs": lambda: _nal_records(
            b"\x60\x01" + b"\x00\x02\x02\x01" * 30, 66, 1
        ),
    },
}


def main(argv: list[str]) -> int:
    """Time every shape of the named targets (default: all); 1 if any is over the bound."""
    over = 0
    for name in argv or NAMES:
        fn = timed_function(load_target(name))
        for shape, make in SHAPES.get(name, {}).items():
            data = make()
            ms = cpu_time_ms(fn, data, 5)
            flag = "  OVER 10 ms" if ms > BOUND_MS else ""
            over += bool(flag)
            print(f"{name:13s} {shape:36s} {len(data):9,d} B {ms:9.2f} ms{flag}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
