"""A simulated camera as one recorder serves it: a pre-encoded clip played on a wall-clock grid.

Frame ``n`` of every camera is sent at Unix time ``n / fps``, so two recorders
serving the same camera deliver identical access units at the same moments,
as two recorders relaying one camera would; each has its own SSRC, sequence
and timestamp bases. Every access unit carries a marker NAL with the frame
counter ``n`` and its nominal capture time, rewritten at send time, so tests
count lost and repeated frames exactly.

With ``audio=True`` the camera also has a G.711 µ-law track (PCMU, 8 kHz):
one packet per video frame, timestamped on the same wall-clock grid, whose
first four bytes carry the same counter ``n`` (the rest is a tone), so tests
can tell lost and repeated audio packets too.

A :class:`StreamStyle` makes one recorder re-stream the camera as real
recorders do (FIELD-NOTES, "What real recorders and cameras send"): its own
timestamp jitter and clock drift, its own parameter-set schedule, an AUD and
an SEI of its own per access unit, its own MTU. The slices (VCL NAL units)
and the marker stay byte-identical between recorders; the defaults change
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from dataclasses import dataclass

from rmfproxy.rtp import h264, h265, rtcp
from rmfproxy.rtp import packet as rtp
from rmfproxy.rtp.seqnum import ts_add, ts_lt
from rmfproxy.rtsp.sdp import SessionDescription
from rmfproxy.serve.close_reason import CloseReason
from rmfproxy.serve.fanout import Fanout
from rmfproxy.serve.stream import MediaSink, TrackStart
from rmfproxy.sim.archive import CameraArchive
from rmfproxy.sim.encoder import EncodedClip
from rmfproxy.sim.marker import make_marker_nal

STYLE_SEI_UUID = b"rmfproxy-rec-sei"
"""UUID of a recorder's own SEI (user data unregistered), unlike the marker's."""

PAYLOAD_TYPE = 96
CLOCK_RATE = 90000
AUDIO_RATE = 8000
AUDIO_PT = 0  # PCMU, static payload type (RFC 3551)


def _mulaw(sample: int) -> int:
    """G.711 µ-law encoding of one 16-bit sample."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = max(0, magnitude.bit_length() - 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _tone(samples: int, hz: float = 440.0) -> bytes:
    return bytes(
        _mulaw(int(8000 * math.sin(2 * math.pi * hz * i / AUDIO_RATE))) for i in range(samples)
    )


@dataclass
class Faults:
    """Faults a simulated recorder applies to everything it sends."""

    frozen: bool = False
    """RTP stops; the RTSP connection stays open."""
    drop: float = 0.0
    """Fraction of RTP packets dropped."""
    corrupt: float = 0.0
    """Fraction of RTP packets whose payload bytes are scrambled."""
    delay: float = 0.0
    """Seconds added before each frame is sent."""
    jitter: float = 0.0
    """Random extra delay per frame, uniform in [0, jitter] seconds."""


@dataclass(frozen=True)
class StreamStyle:
    """How one recorder re-streams a camera; the defaults send the encoded clip as it is."""

    ts_jitter_ms: float = 0.0
    """Random extra 0..ts_jitter_ms added to each access unit's RTP timestamp (only the
    timestamp: the frame is still sent on the grid). Timestamps never go backwards."""
    drift_ppm: float = 0.0
    """The recorder's clock error: timestamps advance (1 + drift_ppm / 1e6) times as fast."""
    param_interval: float = -1
    """Parameter sets: -1 as encoded (before every keyframe); N > 0 only every N seconds, in
    front of whichever access unit is due (keyframe or not); 0 never in band (SDP sprop only)."""
    own_sei: bool = False
    """An SEI of the recorder's own (user data unregistered, naming the recorder) per unit."""
    aud: bool = False
    """An access unit delimiter first in every access unit."""
    mtu: int = 1400
    """Largest RTP payload the recorder packetizes to (STAP-A/AP and FU split differ)."""
    marker: bool = True
    """The RTP marker bit on each access unit's last packet (some cameras never set it)."""

    def __post_init__(self) -> None:
        if self.ts_jitter_ms < 0:
            raise ValueError("ts_jitter_ms must not be negative")
        if self.param_interval < 0 and self.param_interval != -1:
            raise ValueError("param_interval must be -1, 0 or positive")
        if self.mtu < 100:
            raise ValueError("mtu must be at least 100")


def _aud_nal(codec: str) -> bytes:
    # H.264 7.3.2.4: type 9, primary_pic_type 7 (any), stop bit. H.265 7.3.2.5: type 35,
    # layer 0, TemporalId+1 = 1, pic_type 2 (any), stop bit.
    return bytes([h264.AUD, 0xF0]) if codec == "h264" else bytes([h265.AUD << 1, 0x01, 0x50])


def _own_sei_nal(codec: str, recorder: str, n: int) -> bytes:
    """A recorder's own SEI: user data unregistered (payload type 5) with ASCII text.

    ASCII holds no 0x00, so no emulation-prevention byte is needed (as in the marker).
    """
    text = f"{recorder[:40]}:{n & 0xFFFFFFFF:08x}".encode()
    payload = STYLE_SEI_UUID + text
    header = bytes([h264.SEI]) if codec == "h264" else bytes([h265.PREFIX_SEI << 1, 0x01])
    return header + bytes([5, len(payload)]) + payload + b"\x80"


class SimCamera:
    """Serves one encoded clip as a live camera; implements ``MediaStream``."""

    def __init__(
        self,
        path: str,
        clip: EncodedClip,
        faults: Faults | None = None,
        *,
        rng: random.Random | None = None,
        mtu: int = 1400,
        payload_type: int = PAYLOAD_TYPE,
        audio: bool = False,
        style: StreamStyle | None = None,
        recorder: str = "",
        archive: CameraArchive | None = None,
    ) -> None:
        self.archive = archive
        """Where the frames this recorder sends are recorded (None: not recorded)."""
        self.style = style or StreamStyle()
        self.recorder = recorder or path
        self.payload_type = payload_type
        self.audio = audio
        self.path = path
        self.clip = clip
        self.faults = faults or Faults()
        self._rng = rng or random.Random()
        self._ssrc = self._rng.getrandbits(32)
        self._seq = self._rng.getrandbits(16)
        self._ts_base = self._rng.getrandbits(32)
        self._packetize = h264.packetize if clip.codec == "h264" else h265.packetize
        self.mtu = mtu if style is None else self.style.mtu
        self._first_frame: int | None = None
        self._last_ts: int | None = None
        self._last_params = -(1 << 62)
        codec_mod = h264 if clip.codec == "h264" else h265
        self._nal_type = codec_mod.nal_type
        self._param_types = (
            frozenset({h264.SPS, h264.PPS})
            if clip.codec == "h264"
            else frozenset({h265.VPS, h265.SPS, h265.PPS})
        )
        self._params = [clip.sps, clip.pps] if clip.vps is None else [clip.vps, clip.sps, clip.pps]
        self._audio_ssrc = self._rng.getrandbits(32)
        self._audio_seq = self._rng.getrandbits(16)
        self._audio_ts_base = self._rng.getrandbits(32)
        self._audio_samples = AUDIO_RATE // clip.fps
        self._audio_tone = _tone(self._audio_samples)
        self.fanout = Fanout(tracks=2 if audio else 1, video_track=0)
        self.frames_sent = 0
        self._octets = 0
        self._packets = 0
        self._task: asyncio.Task[None] | None = None
        self._last_sr = 0.0

    # MediaStream -------------------------------------------------------------

    def sdp(self) -> SessionDescription:
        """The camera's SDP: one video track, dynamic payload type 96, 90 kHz."""
        enc = "H264" if self.clip.codec == "h264" else "H265"
        text = (
            "v=0\r\n"
            f"o=- {self._ssrc} 1 IN IP4 127.0.0.1\r\n"
            f"s=rmfproxy sim {self.path}\r\n"
            "c=IN IP4 0.0.0.0\r\n"
            "t=0 0\r\n"
            "a=control:*\r\n"
            "a=range:npt=now-\r\n"
            f"m=video 0 RTP/AVP {self.payload_type}\r\n"
            f"a=rtpmap:{self.payload_type} {enc}/{CLOCK_RATE}\r\n"
            # sdp_fmtp() is the whole attribute value, payload type first (RFC 4566 §6).
            f"a=fmtp:{self.clip.sdp_fmtp(self.payload_type)}\r\n"
            f"a=framerate:{self.clip.fps}\r\n"
            "a=control:trackID=0\r\n"
        )
        if self.audio:
            text += (
                f"m=audio 0 RTP/AVP {AUDIO_PT}\r\n"
                f"a=rtpmap:{AUDIO_PT} PCMU/{AUDIO_RATE}\r\n"
                "a=control:trackID=1\r\n"
            )
        return SessionDescription.parse(text)

    def ssrc(self, track: int) -> int:
        """The SSRC this recorder uses for the camera's track."""
        return self._audio_ssrc if track == 1 else self._ssrc

    def start_points(self) -> dict[int, TrackStart]:
        """Where a client attached now starts (the buffered GOP)."""
        return self.fanout.start_points()

    def attach(self, sink: MediaSink) -> None:
        """Add a client."""
        self.fanout.attach(sink)

    def detach(self, sink: MediaSink) -> None:
        """Remove a client."""
        self.fanout.detach(sink)

    # playing -----------------------------------------------------------------

    def start(self) -> None:
        """Start the wall-clock frame loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"sim-camera-{self.path}")

    async def stop(self) -> None:
        """Stop the frame loop and drop every client."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.fanout.close_all(CloseReason.CAMERA_STOPPED)

    async def _run(self) -> None:
        fps = self.clip.fps
        n = int(time.time() * fps) + 1
        loop = asyncio.get_running_loop()
        while True:
            delay = n / fps - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:
                n = int(time.time() * fps)  # fell far behind (suspended): skip ahead
            f = self.faults
            if not f.frozen:
                extra = f.delay + (self._rng.uniform(0, f.jitter) if f.jitter else 0.0)
                packets = self.frame_packets(n)
                if extra > 0:
                    loop.call_later(extra, self._send, packets)
                else:
                    self._send(packets)
                self._maybe_send_sr(n)
            n += 1

    def frame_packets(self, n: int) -> list[tuple[int, bytearray, bool]]:
        """RTP packets of frame ``n``: (track, packet, starts-a-keyframe)."""
        clip = self.clip
        au = clip.access_units[n % len(clip.access_units)]
        nals = list(au.nals)
        nals[au.marker_index] = make_marker_nal(clip.codec, n, n * 1_000_000 // clip.fps)
        nals = self._restyle(n, nals)
        if self.archive is not None:
            # Recorded as served; a frozen camera never gets here: a real gap.
            self.archive.record(n, nals, au.keyframe)
        payloads = self._packetize(nals, self.mtu)
        ts = self._video_timestamp(n)
        out = []
        last = len(payloads) - 1 if self.style.marker else -1
        for i, payload in enumerate(payloads):
            pkt = bytearray(
                rtp.build(self.payload_type, self._seq, ts, self._ssrc, payload, i == last)
            )
            self._seq = (self._seq + 1) & 0xFFFF
            out.append((0, pkt, au.keyframe and i == 0))
        if self.audio:
            ats = (self._audio_ts_base + n * self._audio_samples) & 0xFFFFFFFF
            payload = (n & 0xFFFFFFFF).to_bytes(4, "big") + self._audio_tone[4:]
            pkt = bytearray(
                rtp.build(AUDIO_PT, self._audio_seq, ats, self._audio_ssrc, payload, False)
            )
            self._audio_seq = (self._audio_seq + 1) & 0xFFFF
            out.append((1, pkt, False))
        return out

    def _rtp_time(self, frames: float) -> int:
        """The RTP timestamp at ``frames`` frame intervals since the epoch, on this
        recorder's clock (drifting from the start of the stream)."""
        k = CLOCK_RATE / self.clip.fps
        if self._first_frame is None:
            self._first_frame = int(frames)
        n0 = self._first_frame
        scale = 1.0 + self.style.drift_ppm / 1e6
        return (self._ts_base + round(n0 * k + (frames - n0) * k * scale)) & 0xFFFFFFFF

    def _video_timestamp(self, n: int) -> int:
        style = self.style
        if style.drift_ppm == 0 and style.ts_jitter_ms == 0:
            return (self._ts_base + n * CLOCK_RATE // self.clip.fps) & 0xFFFFFFFF
        ts = self._rtp_time(n)
        if style.ts_jitter_ms:
            ts = (ts + round(self._rng.uniform(0, style.ts_jitter_ms) * CLOCK_RATE / 1000)) & (
                0xFFFFFFFF
            )
            # Arrival-derived timestamps never run backwards (nor repeat).
            if self._last_ts is not None and not ts_lt(self._last_ts, ts):
                ts = ts_add(self._last_ts, 1)
        self._last_ts = ts
        return ts

    def _restyle(self, n: int, nals: list[bytes]) -> list[bytes]:
        """The access unit as this recorder sends it: parameter sets by its schedule, its
        own AUD and SEI; the marker and the slices unchanged."""
        style = self.style
        if style.param_interval == -1 and not style.aud and not style.own_sei:
            return nals
        ntype, params = self._nal_type, self._param_types
        if style.param_interval != -1:
            nals = [x for x in nals if ntype(x) not in params]
            interval = style.param_interval * self.clip.fps
            if interval > 0 and n - self._last_params >= interval:
                self._last_params = n
                nals = self._params + nals
        if style.own_sei:
            vcl = h264.FORMAT.vcl_types if self.clip.codec == "h264" else h265.FORMAT.vcl_types
            first_vcl = next((i for i, x in enumerate(nals) if ntype(x) in vcl), len(nals))
            nals = [
                *nals[:first_vcl],
                _own_sei_nal(self.clip.codec, self.recorder, n),
                *nals[first_vcl:],
            ]
        if style.aud:
            nals = [_aud_nal(self.clip.codec), *nals]
        return nals

    def _send(self, packets: list[tuple[int, bytearray, bool]]) -> None:
        f = self.faults
        rng = self._rng
        now = time.monotonic()
        for track, pkt, key in packets:
            if f.drop and rng.random() < f.drop:
                continue
            if f.corrupt and rng.random() < f.corrupt:
                for _ in range(4):
                    i = rng.randrange(12, len(pkt))
                    pkt[i] = rng.getrandbits(8)
            if track == 0:
                self._packets += 1
                self._octets += len(pkt) - 12
            self.fanout.send_rtp(track, pkt, key, now)
        self.frames_sent += 1

    def _maybe_send_sr(self, n: int) -> None:
        now = time.time()
        if now - self._last_sr < 1.0:
            return
        self._last_sr = now
        if self.style.drift_ppm:
            ts = self._rtp_time(now * self.clip.fps)
        else:
            ts = (self._ts_base + int(now * CLOCK_RATE)) & 0xFFFFFFFF
        sr = rtcp.build_sender_report(
            self._ssrc,
            rtcp.ntp_from_unix(now),
            ts,
            self._packets,
            self._octets,
            cname=f"sim-{self.path}",
        )
        self.fanout.send_rtcp(0, sr)
