"""Simulated recorders that re-stream like real ones (StreamStyle): each option changes what
is sent as specified, the slices stay byte-identical between two recorders of one camera,
and the defaults send exactly what they sent before."""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
from dataclasses import dataclass

import pytest

from rmfproxy.rtp import h264, h265
from rmfproxy.rtp import packet as rtp
from rmfproxy.rtp.seqnum import ts_diff
from rmfproxy.sim.camera import CLOCK_RATE, STYLE_SEI_UUID, SimCamera, StreamStyle
from rmfproxy.sim.encoder import EncodedClip, encode_clip
from rmfproxy.sim.marker import RMF_UUID, find_marker
from rmfproxy.sim.probe import read_rtsp
from rmfproxy.sim.runner import SimCluster, SimSpec

FPS = 25
GOP = 25
TICKS = CLOCK_RATE // FPS
N0 = 1_000_000  # first frame counter (live counters are Unix time x fps; any value works)
PARAMS = {"h264": {h264.SPS, h264.PPS}, "h265": {h265.VPS, h265.SPS, h265.PPS}}
AUD = {"h264": h264.AUD, "h265": h265.AUD}
SEI = {"h264": h264.SEI, "h265": h265.PREFIX_SEI}


@pytest.fixture(scope="module")
def clips() -> dict[str, EncodedClip]:
    return {
        c: encode_clip(c, width=128, height=96, fps=FPS, gop=GOP, seconds=2.0, label="realism")
        for c in ("h264", "h265")
    }


@dataclass
class Unit:
    """One access unit as a recorder sent it."""

    timestamp: int
    nals: list[bytes]
    payload_sizes: list[int]
    keyframe: bool

    def types(self, codec: str) -> list[int]:
        mod = h264 if codec == "h264" else h265
        return [mod.nal_type(n) for n in self.nals]

    def vcl(self, codec: str) -> list[bytes]:
        fmt = h264.FORMAT if codec == "h264" else h265.FORMAT
        return [n for n, t in zip(self.nals, self.types(codec), strict=True) if t in fmt.vcl_types]


def camera(
    clip: EncodedClip, style: StreamStyle | None = None, *, seed: int = 1, name: str = "r1"
) -> SimCamera:
    return SimCamera("cam", clip, rng=random.Random(seed), style=style, recorder=name)


def units(cam: SimCamera, frames: int, first: int = N0) -> list[Unit]:
    """Parse what the camera sends for ``frames`` frames: RTP headers, then NAL units."""
    mod = h264 if cam.clip.codec == "h264" else h265
    dep = mod.depacketizer()
    out = []
    for n in range(first, first + frames):
        packets = [(pkt, key) for track, pkt, key in cam.frame_packets(n) if track == 0]
        stamps = {rtp.timestamp(p) for p, _ in packets}
        assert len(stamps) == 1, "one timestamp per access unit"
        assert [rtp.marker(p) for p, _ in packets] == [False] * (len(packets) - 1) + [True]
        nals: list[bytes] = []
        sizes = []
        for p, _ in packets:
            start, end = rtp.payload_span(p)
            nals.extend(dep.push(p[start:end]))
            sizes.append(end - start)
        assert dep.errors == 0
        out.append(Unit(stamps.pop(), nals, sizes, packets[0][1]))
    return out


def deltas(us: list[Unit]) -> list[int]:
    return [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(us)]


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_default_style_sends_what_it_always_sent(clips: dict[str, EncodedClip], codec: str) -> None:
    plain = camera(clips[codec])
    styled = camera(clips[codec], StreamStyle())
    for n in range(N0, N0 + 2 * GOP):
        assert plain.frame_packets(n) == styled.frame_packets(n)
    us = units(camera(clips[codec]), 2 * GOP)
    assert set(deltas(us)) == {TICKS}
    for u in us:
        types = u.types(codec)
        assert AUD[codec] not in types
        assert (PARAMS[codec] <= set(types)) == u.keyframe
        assert max(u.payload_sizes) <= 1400


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_timestamp_jitter_moves_each_unit_alone(clips: dict[str, EncodedClip], codec: str) -> None:
    jitter_ms = 20
    cam = camera(clips[codec], StreamStyle(ts_jitter_ms=jitter_ms))
    grid = camera(clips[codec])
    us, ref = units(cam, 200), units(grid, 200)
    base = us[0].timestamp - ref[0].timestamp  # the two cameras' bases differ
    offsets = [ts_diff(u.timestamp, r.timestamp + base) for u, r in zip(us, ref, strict=True)]
    # Relative to the first unit's own jitter: every offset lies within one jitter span.
    span = jitter_ms * CLOCK_RATE // 1000
    assert max(offsets) - min(offsets) <= span
    assert max(offsets) - min(offsets) > span // 2  # really spread, not a constant
    d = deltas(us)
    assert min(d) > 0, "timestamps never go backwards"
    assert statistics.pstdev(d) > 300
    assert abs(statistics.mean(d) - TICKS) < 50  # no drift: the mean interval is the frame's
    # Only the timestamp moves: the NAL units are those of the unstyled camera.
    assert [u.nals for u in us] == [r.nals for r in ref]


@pytest.mark.parametrize("ppm", [1000, -500])
def test_clock_drift_scales_timestamps(clips: dict[str, EncodedClip], ppm: int) -> None:
    us = units(camera(clips["h264"], StreamStyle(drift_ppm=ppm)), 251)
    span = (us[-1].timestamp - us[0].timestamp) & 0xFFFFFFFF
    assert abs(span - 250 * TICKS * (1 + ppm / 1e6)) <= 1
    assert span != 250 * TICKS


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_parameter_sets_only_in_the_sdp(clips: dict[str, EncodedClip], codec: str) -> None:
    cam = camera(clips[codec], StreamStyle(param_interval=0))
    us = units(cam, 3 * GOP)
    assert sum(u.keyframe for u in us) == 3
    for u in us:
        assert not PARAMS[codec] & set(u.types(codec))
    media = cam.sdp().media[0]
    fmtp = media.fmtp(int(media.formats[0]))
    wanted = (
        ["sprop-parameter-sets"] if codec == "h264" else ["sprop-vps", "sprop-sps", "sprop-pps"]
    )
    assert all(fmtp.get(w) for w in wanted), fmtp


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_parameter_sets_every_n_seconds_before_any_unit(
    clips: dict[str, EncodedClip], codec: str
) -> None:
    # 1.6 s = 40 frames with a 25-frame GOP: the sets land on delta frames too, and most
    # keyframes go without them.
    us = units(camera(clips[codec], StreamStyle(param_interval=1.6)), 200, first=N0 + 3)
    carrying = [i for i, u in enumerate(us) if PARAMS[codec] & set(u.types(codec))]
    assert carrying == list(range(0, 200, 40))
    assert any(not us[i].keyframe for i in carrying)
    assert any(u.keyframe and i not in carrying for i, u in enumerate(us))
    for i in carrying:
        types = us[i].types(codec)
        n = len(PARAMS[codec])
        assert set(types[:n]) == PARAMS[codec], "in front of the unit"


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_aud_first_in_every_unit(clips: dict[str, EncodedClip], codec: str) -> None:
    for u in units(camera(clips[codec], StreamStyle(aud=True)), 2 * GOP):
        types = u.types(codec)
        assert types[0] == AUD[codec] and types.count(AUD[codec]) == 1


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_own_sei_per_unit_differs_between_recorders(
    clips: dict[str, EncodedClip], codec: str
) -> None:
    style = StreamStyle(own_sei=True)
    a = units(camera(clips[codec], style, name="r1"), GOP + 5)
    b = units(camera(clips[codec], style, seed=2, name="r2"), GOP + 5)
    plain = units(camera(clips[codec]), GOP + 5)
    for ua, ub, up in zip(a, b, plain, strict=True):
        own_a = [n for n in ua.nals if STYLE_SEI_UUID in n]
        own_b = [n for n in ub.nals if STYLE_SEI_UUID in n]
        assert len(own_a) == len(own_b) == 1
        assert own_a != own_b and b"r1" in own_a[0] and b"r2" in own_b[0]
        types = ua.types(codec)
        sei_at = ua.nals.index(own_a[0])
        assert types[sei_at] == SEI[codec]
        assert sei_at < next(i for i, t in enumerate(types) if t in _vcl(codec))
        # The marker is still there, once, and the unit is otherwise the plain one.
        assert sum(RMF_UUID in n for n in ua.nals) == 1
        assert [n for n in ua.nals if STYLE_SEI_UUID not in n] == up.nals


def _vcl(codec: str) -> frozenset[int]:
    return h264.FORMAT.vcl_types if codec == "h264" else h265.FORMAT.vcl_types


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_mtu_changes_packetization(clips: dict[str, EncodedClip], codec: str) -> None:
    big = units(camera(clips[codec]), GOP)
    small = units(camera(clips[codec], StreamStyle(mtu=300)), GOP)
    assert max(s for u in small for s in u.payload_sizes) <= 300
    assert max(s for u in big for s in u.payload_sizes) > 300
    assert sum(len(u.payload_sizes) for u in small) > sum(len(u.payload_sizes) for u in big)
    assert [u.nals for u in small] == [u.nals for u in big]


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_slices_identical_between_differently_styled_recorders(
    clips: dict[str, EncodedClip], codec: str
) -> None:
    one = StreamStyle(ts_jitter_ms=15, drift_ppm=80, param_interval=-1, own_sei=True, mtu=1400)
    two = StreamStyle(ts_jitter_ms=30, drift_ppm=-120, param_interval=2, aud=True, mtu=700)
    a = units(camera(clips[codec], one, seed=1, name="r1"), 3 * GOP)
    b = units(camera(clips[codec], two, seed=2, name="r2"), 3 * GOP)
    assert any(ua.types(codec) != ub.types(codec) for ua, ub in zip(a, b, strict=True))
    assert any(ua.payload_sizes != ub.payload_sizes for ua, ub in zip(a, b, strict=True))
    for ua, ub in zip(a, b, strict=True):
        assert ua.vcl(codec) and ua.vcl(codec) == ub.vcl(codec)
        assert find_marker(b"".join(ua.nals)) == find_marker(b"".join(ub.nals))


@pytest.mark.asyncio(loop_factories=["uvloop"])  # e2e-sized: the production loop
@pytest.mark.parametrize("codec", ["h264", "h265"])
async def test_styled_recorders_decode_clean(codec: str) -> None:
    # What a real decoder says about the styled stream: FFmpeg (through PyAV) decodes every
    # frame from both recorders, counters consecutive.
    spec = SimSpec(
        recorders=[("r1", 0), ("r2", 0)],
        cameras=["cam"],
        codec=codec,  # type: ignore[arg-type]
        seconds=1.0,
        styles={
            "r1": StreamStyle(ts_jitter_ms=20, drift_ppm=200, own_sei=True, aud=True),
            "r2": StreamStyle(ts_jitter_ms=10, param_interval=0, mtu=600),
        },
    )
    async with SimCluster(spec) as sim:
        assert sim.recorders["r2"].cameras["cam"].mtu == 600
        a, b = await asyncio.gather(
            asyncio.to_thread(read_rtsp, sim.url("r1", "cam"), seconds=2.5),
            asyncio.to_thread(read_rtsp, sim.url("r2", "cam"), seconds=2.5),
        )
    for r in (a, b):
        assert r.error is None and r.decode_errors == 0, r.warnings[:5]
        assert r.consecutive() and r.frames_decoded >= 40
