"""Synthetic cameras and recorders for the merger's unit tests (no sockets, fake clock).

A camera is a list of access units (NAL units without start codes); a
:class:`Recorder` re-streams it as a real recorder does: its own SSRC,
sequence and timestamp bases, MTU, timestamp jitter and clock drift, its own
parameter-set schedule, its own SEI and AUD, marker bits or not.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from rmfproxy.relay.merge import Merger
from rmfproxy.rtp import h264, h265
from rmfproxy.rtp import packet as rtp
from rmfproxy.rtp.nal import NalFormat
from rmfproxy.rtp.seqnum import seq_diff, ts_diff

FPS = 25
TICKS = 90000 // FPS


def h264_camera(count: int, seed: int, gop: int = 10) -> list[list[bytes]]:
    """AUs of an H.264 camera: SPS/PPS/IDR every ``gop``, P slices between."""
    rng = random.Random(seed)
    sps, pps = b"\x67" + rng.randbytes(12), b"\x68" + rng.randbytes(4)
    aus = []
    for i in range(count):
        if i % gop == 0:
            aus.append([sps, pps, b"\x65" + rng.randbytes(rng.randrange(200, 4000))])
        else:
            aus.append([b"\x41" + rng.randbytes(rng.randrange(50, 3000))])
    return aus


def h265_camera(count: int, seed: int, gop: int = 10, rasl: int = 0) -> list[list[bytes]]:
    """AUs of an H.265 camera: VPS/SPS/PPS/CRA every ``gop`` followed by ``rasl`` RASL
    pictures, then trailing pictures."""
    rng = random.Random(seed)
    vps, sps, pps = b"\x40\x01" + rng.randbytes(8), b"\x42\x01" + rng.randbytes(12), b"\x44\x01"
    pps += rng.randbytes(4)
    aus = []
    for i in range(count):
        pos = i % gop
        if pos == 0:
            aus.append([vps, sps, pps, b"\x2a\x01" + rng.randbytes(rng.randrange(300, 3000))])
        elif pos <= rasl:
            aus.append([b"\x10\x01" + rng.randbytes(rng.randrange(50, 900))])  # RASL_N
        else:
            aus.append([b"\x02\x01" + rng.randbytes(rng.randrange(50, 900))])  # TRAIL_R
    return aus


def params_of(fmt: NalFormat, au: list[bytes]) -> list[bytes]:
    return [n for n in au if fmt.nal_type(n) in fmt.param_types]


def slices_of(fmt: NalFormat, au: list[bytes]) -> list[bytes]:
    return [n for n in au if fmt.nal_type(n) in fmt.vcl_types]


@dataclass
class Recorder:
    """Re-streams a camera with its own RTP numbering and habits."""

    fmt: NalFormat = h264.FORMAT
    mtu: int = 1400
    seq: int = 0
    ts: int = 0
    ssrc: int = 1
    jitter_ms: float = 0.0
    drift_ppm: float = 0.0
    params: str = "keyframe"
    """keyframe: as the camera sends them; every:N: in front of every Nth AU instead;
    sdp: never in band."""
    sei: bytes | None = None
    """An SEI of its own in front of every AU."""
    aud: bool = False
    marker: bool = True
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._sprops: list[bytes] = []

    def stamp(self, n: int) -> int:
        ticks = n * TICKS * (1 + self.drift_ppm * 1e-6)
        if self.jitter_ms:
            ticks += self.rng.uniform(-self.jitter_ms, self.jitter_ms) * 90
        return (self.ts + round(ticks)) & 0xFFFFFFFF

    def nals(self, n: int, au: list[bytes]) -> list[bytes]:
        fmt = self.fmt
        cam_params = params_of(fmt, au)
        out = [x for x in au if fmt.nal_type(x) not in fmt.param_types]
        if self.params == "keyframe":
            out = cam_params + out
        elif self.params.startswith("every:") and n % int(self.params[6:]) == 0:
            out = list(self.sprops()) + out
        if self.sei is not None:
            out.insert(0, self.sei)
        if self.aud:
            out.insert(0, b"\x09\xf0" if fmt is h264.FORMAT else b"\x46\x01\x50")
        return out

    def sprops(self) -> list[bytes]:
        return self._sprops

    def packets(self, n: int, au: list[bytes]) -> list[bytearray]:
        if not self._sprops:
            self._sprops = params_of(self.fmt, au)
        payloads = (h264.packetize if self.fmt is h264.FORMAT else h265.packetize)(
            self.nals(n, au), self.mtu
        )
        ts = self.stamp(n)
        out = []
        for i, p in enumerate(payloads):
            last = i == len(payloads) - 1
            out.append(bytearray(rtp.build(96, self.seq, ts, self.ssrc, p, last and self.marker)))
            self.seq = (self.seq + 1) & 0xFFFF
        return out


def push_all(m: Merger, index: int, pkts: list[bytearray], now: float) -> list[bytearray]:
    out = []
    for p in pkts:
        out += [q for q, _ in m.push(index, p, 12, len(p), now)]
    return out


def depacketized(fmt: NalFormat, out: list[bytearray]) -> list[list[bytes]]:
    """The outbound AUs (by timestamp), as NAL unit lists."""
    d = h264.depacketizer() if fmt is h264.FORMAT else h265.depacketizer()
    aus: list[list[bytes]] = []
    last_ts = None
    for p in out:
        if rtp.timestamp(p) != last_ts:
            aus.append([])
            last_ts = rtp.timestamp(p)
        aus[-1] += d.push(memoryview(p)[12:])
    return aus


def check_numbering(out: list[bytearray], ssrc: int) -> list[int]:
    """Sequence +1 per packet, one SSRC, timestamps never back; returns the AU timestamps."""
    assert all(seq_diff(rtp.sequence(b), rtp.sequence(a)) == 1 for a, b in itertools.pairwise(out))
    assert {rtp.ssrc(p) for p in out} == {ssrc}
    ts = [rtp.timestamp(p) for p in out]
    assert all(ts_diff(b, a) >= 0 for a, b in itertools.pairwise(ts))
    frames = [t for i, t in enumerate(ts) if i == 0 or t != ts[i - 1]]
    return frames
