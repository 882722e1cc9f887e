"""The replay client against simulated recorders (127.0.0.1, port 0): every recorded frame of
the range once with its capture time and flags, and a clear error for each way a replay
fails (551, credentials, silence, an empty range). Credentials never show."""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path

import pytest
import structlog

from rmfproxy.archive.fetch import RecorderSource, replay_client
from rmfproxy.archive.replay_client import (
    Codec,
    ReplayAuthFailed,
    ReplayClient,
    ReplayError,
    ReplayStatusError,
    ReplayTimeout,
    ReplayUnsupported,
)
from rmfproxy.serve.access import AccessControl, User
from rmfproxy.serve.server import RtspServer
from rmfproxy.sim.encoder import EncodedClip, encode_clip
from rmfproxy.sim.marker import find_marker
from rmfproxy.sim.recorder import SimRecorder
from rmfproxy.sim.replay import SimReplayProvider
from rmfproxy.tls import ServerTls
from tests.tls_support import make_pki

FPS = 25
GOP = 10
PASSWORD = "s3cret-Pa55"


@functools.cache
def _clip(codec: Codec = "h264") -> EncodedClip:
    return encode_clip(codec, width=160, height=96, fps=FPS, gop=GOP, seconds=2.0)


def _base() -> int:
    """A frame number a minute ago that starts a GOP."""
    return (int(time.time()) - 60) * FPS // GOP * GOP


def _fill(rec: SimRecorder, first: int, last: int, gap: range = range(0)) -> None:
    """Record frames first..last (not those in ``gap``) at once."""
    cam = rec.cameras["cam"]
    for n in range(first, last + 1):
        if n not in gap:
            cam.frame_packets(n)


@pytest.mark.parametrize("codec", ["h264", "h265"])
async def test_every_recorded_frame_of_the_range_once_with_its_capture_time_and_flags(
    codec: Codec,
) -> None:
    rec = SimRecorder("r1", {"cam": _clip(codec)}, seed=11)
    await rec.start()
    rec.freeze()  # only the history we fill
    base = _base()
    # GOP 10: the section after the hole starts at a keyframe (base + 50)
    gap = range(base + 33, base + 50)
    _fill(rec, base, base + 99, gap)
    try:
        client = ReplayClient(rec.url("cam"), name="r1")
        frames = await client.fetch((base + 14.5) / FPS, (base + 80) / FPS)
    finally:
        await rec.stop()
    counters = [find_marker(b"".join(f.nals)) for f in frames]
    expected = [n for n in range(base + 10, base + 80) if n not in gap]  # from keyframe 10
    assert [c[0] for c in counters if c] == expected and len(counters) == len(expected)
    assert [f.capture_time for f in frames] == pytest.approx([n / FPS for n in expected])
    assert [f.keyframe for f in frames] == [n % GOP == 0 for n in expected]
    after = expected.index(base + 50)
    assert [i for i, f in enumerate(frames) if f.discontinuity] == [after]
    assert [i for i, f in enumerate(frames) if f.end] == [after - 1]
    assert client.codec == codec and client.ended_by == "terminal"
    assert client.stats.lost_packets == 0 and client.stats.dropped_frames == 0
    clip = _clip(codec)
    assert client.sdp_parameter_sets() == [*([clip.vps] if clip.vps else []), clip.sps, clip.pps]


async def test_a_recorder_without_replay_is_551_unsupported() -> None:
    rec = SimRecorder("r1", {"cam": _clip()}, seed=12)
    await rec.start()
    server = RtspServer(rec.cameras.get, host="127.0.0.1", port=0, name="live-only")
    await server.start()
    try:
        client = ReplayClient(f"rtsp://127.0.0.1:{server.port}/cam")
        now = time.time()
        with pytest.raises(ReplayUnsupported, match=r"does not support ONVIF replay \(551"):
            await client.fetch(now - 10, now - 5)
    finally:
        await server.close()
        await rec.stop()


async def test_credentials_digest_ok_wrong_and_missing_never_shown() -> None:
    rec = SimRecorder("r1", {"cam": _clip()}, seed=13)
    await rec.start()
    rec.freeze()
    base = _base()
    _fill(rec, base, base + 29)
    server = RtspServer(
        rec.cameras.get,
        host="127.0.0.1",
        port=0,
        access=AccessControl([User("operator", PASSWORD)], "recorder"),
        replay=SimReplayProvider(rec.cameras, rec.archive, seed=1),
    )
    await server.start()
    url = f"rtsp://127.0.0.1:{server.port}/cam"
    span = (base / FPS, (base + 20) / FPS)
    try:
        with structlog.testing.capture_logs() as logs:
            ok = await ReplayClient(
                f"rtsp://operator:{PASSWORD}@127.0.0.1:{server.port}/cam"
            ).fetch(*span)
            assert len(ok) == 20
            with pytest.raises(ReplayAuthFailed, match="refused the credentials") as wrong:
                await ReplayClient(url, username="operator", password="nope-" + PASSWORD).fetch(
                    *span
                )
            with pytest.raises(ReplayAuthFailed, match="wants credentials") as missing:
                await ReplayClient(url).fetch(*span)
    finally:
        await server.close()
        await rec.stop()
    client = ReplayClient(f"rtsp://operator:{PASSWORD}@127.0.0.1:1/cam")
    for text in (str(wrong.value), str(missing.value), repr(client), client.url, repr(logs)):
        assert PASSWORD not in text


async def test_a_silent_recorder_is_a_timeout() -> None:
    async def accept_and_say_nothing(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while await reader.read(1 << 16):  # reads requests, answers none, until closed
            pass
        writer.close()

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = ReplayClient(f"rtsp://127.0.0.1:{port}/cam", request_timeout=0.3)
        with pytest.raises(ReplayTimeout, match="no answer to DESCRIBE"):
            await client.fetch(time.time() - 10, time.time() - 5)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_range_with_nothing_recorded_is_a_status_error() -> None:
    rec = SimRecorder("r1", {"cam": _clip()}, seed=14)
    await rec.start()
    rec.freeze()
    base = _base()
    _fill(rec, base, base + 29)
    try:
        client = ReplayClient(rec.url("cam"))
        with pytest.raises(ReplayStatusError, match="PLAY answered 457") as err:
            await client.fetch((base + 100) / FPS, (base + 200) / FPS)
        assert err.value.status == 457
    finally:
        await rec.stop()


async def test_rtsps_recorder_replays_verified_and_an_unknown_ca_is_refused(
    tmp_path: Path,
) -> None:
    # The archive's own factory (recorder_sources -> replay_client) with the config's TLS
    # keys: the test CA verifies, another CA is refused with a clear error, verification
    # off reads encrypted (nothing in clear on a plain connection either: rtsps only).
    pki = make_pki(tmp_path)
    rec = SimRecorder("r1", {"cam": _clip()}, seed=16, tls=ServerTls(pki.cert, pki.key))
    await rec.start()
    rec.freeze()
    base = _base()
    _fill(rec, base, base + 29)
    url = rec.server.tls_url("cam")
    span = (base + 10) / FPS, (base + 25) / FPS
    try:
        good = await replay_client(RecorderSource("r1", url, tls_ca_file=pki.ca)).fetch(*span)
        with pytest.raises(ReplayError, match=r"TLS certificate refused \(.*certificate"):
            await replay_client(RecorderSource("r1", url, tls_ca_file=pki.other_ca)).fetch(*span)
        unverified = await replay_client(RecorderSource("r1", url, tls_verify=False)).fetch(*span)
    finally:
        await rec.stop()
    expected = list(range(base + 10, base + 25))
    for frames in (good, unverified):
        assert [c[0] for f in frames if (c := find_marker(b"".join(f.nals)))] == expected
