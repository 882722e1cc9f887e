"""The simulator's clips: fixed GOP, in-band parameter sets, no B-frames, every frame decodes
and carries its marker in order."""

from __future__ import annotations

import av
import pytest

from rmfproxy.rtp.nal import to_annexb
from rmfproxy.sim.encoder import encode_clip
from rmfproxy.sim.marker import MARKER_LEN, find_marker, make_marker_nal, rewrite_marker


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_marker_roundtrip(codec: str) -> None:
    nal = bytearray(make_marker_nal(codec, 12345, 1_700_000_000_000_000))  # type: ignore[arg-type]
    assert len(nal) == MARKER_LEN[codec]
    assert find_marker(b"\x00\x00\x00\x01" + bytes(nal)) == (12345, 1_700_000_000_000_000)
    rewrite_marker(nal, 2**40, 7)
    assert len(nal) == MARKER_LEN[codec]
    assert find_marker(bytes(nal)) == (2**40, 7)
    assert b"\x00\x00" not in bytes(nal[2:])  # never needs emulation prevention
    assert find_marker(b"no marker here") is None


@pytest.mark.parametrize(("codec", "params"), [("h264", {7, 8}), ("h265", {32, 33, 34})])
def test_clip_structure_and_decode(codec: str, params: set[int]) -> None:
    clip = encode_clip(codec, width=160, height=96, fps=25, gop=10, seconds=0.7)  # type: ignore[arg-type]
    assert len(clip.access_units) == 20  # rounded up to whole GOPs
    assert [au.keyframe for au in clip.access_units] == [i % 10 == 0 for i in range(20)]
    ntype = (lambda n: n[0] & 0x1F) if codec == "h264" else (lambda n: (n[0] >> 1) & 0x3F)
    for au in clip.access_units:
        types = [ntype(n) for n in au.nals]
        if au.keyframe:
            assert params <= set(types[: au.marker_index])
        assert find_marker(au.nals[au.marker_index]) is not None
    ctx = av.CodecContext.create("h264" if codec == "h264" else "hevc", "r")
    counters = []
    frames = 0
    for au in clip.access_units:
        data = to_annexb(au.nals)
        counters.append(find_marker(data)[0])  # type: ignore[index]
        for pkt in ctx.parse(data):
            frames += len(ctx.decode(pkt))
    for pkt in ctx.parse(b""):
        frames += len(ctx.decode(pkt))
    frames += len(ctx.decode(None))
    assert frames == 20
    assert counters == list(range(20))
    assert clip.sdp_fmtp(96).startswith("96 ")


def test_bad_sizes_rejected() -> None:
    with pytest.raises(ValueError, match="even"):
        encode_clip("h264", width=161, height=96)
