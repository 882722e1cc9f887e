#!/usr/bin/python3
"""A re-streaming recorder built from GStreamer (not this project's RTSP/RTP code) for tests.

Run with Debian's system Python, which has the GObject bindings:

    /usr/bin/python3 tests/peers/gst_restream.py --port 0 \\
        --restream /cam=rtsp://127.0.0.1:8601/cam --codec h264 --jitter-ms 20

Prints ``PORT <n>`` once listening; runs until SIGTERM or EOF on standard input.

It behaves like a VMS recording server relaying a camera, not like a forwarder:
for each ``--restream PATH=URL`` it pulls the upstream (``rtspsrc`` over TCP,
started at once and kept running, reconnecting after an error), depayloads
and parses it (``rtph264depay ! h264parse`` / ``rtph265depay ! h265parse``)
into an ``appsink``, and re-serves every access unit through gst-rtsp-server
from an ``appsrc`` into its own payloader (``rtph264pay`` / ``rtph265pay``).
In between (the bridge) each access unit is re-timestamped from its arrival:

- the PTS is the served pipeline's running time when the unit is pushed, so
  the RTP timestamps follow this process's clock, not the camera's grid;
- ``--jitter-ms J`` holds each unit back by a random 0..J ms (order kept), as
  a busy recorder does: its timestamp and its send time move together;
- ``--drift-ppm P`` scales the timestamps by (1 + P/1e6), a clock that runs
  fast (P > 0) or slow.

The bridge also rewrites what travels in band, the way recorders disagree:

- ``--config-interval N``: upstream parameter sets (SPS/PPS, H.265 also VPS)
  are always removed, then re-inserted: ``-1`` in front of every keyframe,
  ``N > 0`` in front of whichever unit comes when N seconds have passed
  (keyframe or not), ``0`` never (the SDP ``sprop-*`` carries them only);
- ``--aud`` puts an access unit delimiter first in every unit;
- ``--sei`` adds an SEI of its own (user data unregistered, payload type 5,
  a UUID and ``--name`` plus a counter) in front of the first slice;
- ``--mtu M`` and ``--aggregate`` set the payloader's packet size and its
  STAP-A/AP use.

Every other NAL unit (the slices, the simulator's frame-counter SEI) passes
through byte for byte. A newly prepared media starts on a keyframe.
The bridge works on length-prefixed units (``avc`` / ``hvc1`` caps with the
parser's ``codec_data``), so the payloader can put the parameter sets into
the SDP even when none is sent in band.

This file must not import rmfproxy: it runs outside the project's venv.
"""

from __future__ import annotations

import argparse
import collections
import random
import signal
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstApp, GstRtspServer  # noqa: E402

INGEST = (
    "rtspsrc name=src location={url} protocols=tcp latency=0 "
    "! rtp{codec}depay ! {codec}parse "
    "! video/x-{codec},stream-format={fmt},alignment=au "
    "! appsink name=sink emit-signals=true sync=false max-buffers=0 drop=false"
)
SERVED = (
    "( appsrc name=src is-live=true format=time do-timestamp=false "
    "! rtp{codec}pay name=pay0 pt={pt} mtu={mtu} config-interval=0 aggregate-mode={aggregate} )"
)
# aggregate-mode values shared by rtph264pay and rtph265pay (their nicks differ for 2).
AGGREGATE = {"none": 0, "zero-latency": 1, "max": 2}
STREAM_FORMAT = {"h264": "avc", "h265": "hvc1"}
SEI_UUID = b"gst-restream-sei"  # 16 bytes: user_data_unregistered's uuid_iso_iec_11578
assert len(SEI_UUID) == 16


def nal_type(codec: str, nal: bytes) -> int:
    """The NAL unit type (H.264: 5 bits; H.265: 6 bits after the forbidden bit)."""
    return nal[0] & 0x1F if codec == "h264" else (nal[0] >> 1) & 0x3F


def is_param_set(codec: str, t: int) -> bool:
    return t in (7, 8) if codec == "h264" else t in (32, 33, 34)


def is_aud(codec: str, t: int) -> bool:
    return t == 9 if codec == "h264" else t == 35


def is_keyframe(codec: str, t: int) -> bool:
    return t == 5 if codec == "h264" else 16 <= t <= 21


def is_vcl(codec: str, t: int) -> bool:
    return 1 <= t <= 5 if codec == "h264" else t <= 31


def make_aud(codec: str) -> bytes:
    """An access unit delimiter allowing any picture type, with its stop bit."""
    # H.264 7.3.2.4: primary_pic_type=7 (any), stop bit: 111 1 0000.
    # H.265 7.3.2.5: type 35, layer 0, TemporalId+1 = 1; pic_type=2 (any): 010 1 0000.
    return b"\x09\xf0" if codec == "h264" else b"\x46\x01\x50"


def make_sei(codec: str, name: str, counter: int) -> bytes:
    """This recorder's own SEI: user data unregistered (payload type 5), ASCII after the UUID.

    ASCII never contains 0x00, so no emulation-prevention byte is needed.
    """
    text = f"{name}:{counter:010d}".encode()[:200]
    payload = SEI_UUID + text
    header = b"\x06" if codec == "h264" else b"\x4e\x01"
    return header + bytes([5, len(payload)]) + payload + b"\x80"


def split_length_prefixed(data: bytes, size: int = 4) -> list[bytes]:
    """NAL units of an ``avc``/``hvc1`` buffer (big-endian length prefixes)."""
    nals = []
    i = 0
    while i + size <= len(data):
        n = int.from_bytes(data[i : i + size], "big")
        i += size
        nals.append(data[i : i + n])
        i += n
    return nals


def join_length_prefixed(nals: list[bytes], size: int = 4) -> bytes:
    return b"".join(len(n).to_bytes(size, "big") + n for n in nals)


def codec_data(caps: Gst.Caps) -> bytes:
    """The ``codec_data`` (avcC / hvcC record) of the caps, or nothing."""
    buf = caps.get_structure(0).get_value("codec_data")
    if buf is None:
        return b""
    mapped, info = buf.map(Gst.MapFlags.READ)
    if not mapped:
        return b""
    try:
        return bytes(info.data)
    finally:
        buf.unmap(info)


def parse_codec_data(codec: str, data: bytes) -> tuple[int, list[bytes]]:
    """(length-prefix size, parameter sets) of an avcC (ISO 14496-15 5.3.3) or hvcC (8.3.3)."""
    nals: list[bytes] = []
    try:
        if codec == "h264":
            size = (data[4] & 0x03) + 1
            pos = 5
            for mask in (0x1F, 0xFF):  # numOfSequenceParameterSets, then PictureParameterSets
                count = data[pos] & mask
                pos += 1
                for _ in range(count):
                    n = int.from_bytes(data[pos : pos + 2], "big")
                    nals.append(data[pos + 2 : pos + 2 + n])
                    pos += 2 + n
        else:
            size = (data[21] & 0x03) + 1
            pos = 23
            for _ in range(data[22]):  # numOfArrays
                count = int.from_bytes(data[pos + 1 : pos + 3], "big")
                pos += 3
                for _ in range(count):
                    n = int.from_bytes(data[pos : pos + 2], "big")
                    nals.append(data[pos + 2 : pos + 2 + n])
                    pos += 2 + n
    except IndexError:
        return 4, []
    return size, [n for n in nals if n]


class Outlet:
    """One prepared media's appsrc: starts on a keyframe, then gets every unit."""

    def __init__(self, src: GstApp.AppSrc) -> None:
        self.src = src
        self.started = False
        self.last_pts = -1


class Restream:
    """One re-streamed camera: the upstream pull, the bridge and the served media factory."""

    def __init__(self, path: str, url: str, args: argparse.Namespace) -> None:
        self.path = path
        self.url = url
        self.args = args
        self.codec: str = args.codec
        self.rng = random.Random(args.seed)
        self.caps: Gst.Caps | None = None
        self.length_size = 4
        self.params: dict[int, bytes] = {}
        self.last_params = float("-inf")
        self.counter = 0
        self.outlets: list[Outlet] = []
        self.lock = threading.Lock()
        self.queue: collections.deque[tuple[float, bytes, bool]] = collections.deque()
        self.wake = threading.Condition(self.lock)
        self.last_due = 0.0
        self.running = True
        self.ingest: Gst.Pipeline | None = None
        self.factory = GstRtspServer.RTSPMediaFactory()
        self.factory.set_launch(
            SERVED.format(
                codec=self.codec, pt=args.pt, mtu=args.mtu, aggregate=AGGREGATE[args.aggregate]
            )
        )
        self.factory.set_shared(True)
        self.factory.connect("media-configure", self._on_media_configure)
        self.worker = threading.Thread(target=self._pump, name=f"bridge{path}", daemon=True)

    # upstream -----------------------------------------------------------------

    def start(self) -> None:
        self.worker.start()
        self._start_ingest()

    def stop(self) -> None:
        with self.lock:
            self.running = False
            self.wake.notify_all()
        if self.ingest is not None:
            self.ingest.set_state(Gst.State.NULL)

    def _start_ingest(self) -> bool:
        if not self.running:
            return False
        desc = INGEST.format(url=self.url, codec=self.codec, fmt=STREAM_FORMAT[self.codec])
        pipe = Gst.parse_launch(desc)
        sink = pipe.get_by_name("sink")
        sink.connect("new-sample", self._on_sample)
        bus = pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self._on_ingest_message)
        self.ingest = pipe
        pipe.set_state(Gst.State.PLAYING)
        return False  # also used as a one-shot GLib timeout

    def _on_ingest_message(self, bus: Gst.Bus, msg: Gst.Message) -> None:
        if msg.type not in (Gst.MessageType.ERROR, Gst.MessageType.EOS):
            return
        if msg.type == Gst.MessageType.ERROR:
            err, _dbg = msg.parse_error()
            print(f"ingest {self.path}: {err.message}; reconnecting", file=sys.stderr, flush=True)
        bus.remove_signal_watch()
        pipe = self.ingest
        self.ingest = None
        if pipe is not None:
            pipe.set_state(Gst.State.NULL)
        GLib.timeout_add(500, self._start_ingest)

    def _on_sample(self, sink: GstApp.AppSink) -> Gst.FlowReturn:
        arrival = time.monotonic()
        sample = sink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.OK
        caps = sample.get_caps()
        buf = sample.get_buffer()
        mapped, info = buf.map(Gst.MapFlags.READ)
        if not mapped:
            return Gst.FlowReturn.OK
        try:
            data = bytes(info.data)
        finally:
            buf.unmap(info)
        with self.lock:
            if self.caps is None or not self.caps.is_equal(caps):
                self.caps = caps
                self.length_size, params = parse_codec_data(self.codec, codec_data(caps))
                for nal in params:
                    self.params[nal_type(self.codec, nal)] = nal
                for outlet in self.outlets:
                    outlet.src.set_caps(caps)
            au, key = self._rewrite(split_length_prefixed(data, self.length_size), arrival)
            jitter = self.rng.uniform(0.0, self.args.jitter_ms / 1000.0)
            due = max(arrival + jitter, self.last_due)
            self.last_due = due
            self.queue.append((due, join_length_prefixed(au, self.length_size), key))
            self.wake.notify()
        return Gst.FlowReturn.OK

    # the bridge ---------------------------------------------------------------

    def _rewrite(self, nals: list[bytes], now: float) -> tuple[list[bytes], bool]:
        """Parameter sets by this recorder's schedule, its own AUD and SEI; the rest as is."""
        codec = self.codec
        body = []
        key = False
        for nal in nals:
            if not nal:
                continue
            t = nal_type(codec, nal)
            if is_param_set(codec, t):
                self.params[t] = nal
            elif not is_aud(codec, t):
                key = key or is_keyframe(codec, t)
                body.append(nal)
        interval = self.args.config_interval
        send_params = (interval == -1 and key) or (
            interval > 0 and now - self.last_params >= interval
        )
        out = []
        if self.args.aud:
            out.append(make_aud(codec))
        if send_params and self.params:
            self.last_params = now
            out.extend(self.params[t] for t in sorted(self.params))
        if self.args.sei:
            first_vcl = next(
                (i for i, n in enumerate(body) if is_vcl(codec, nal_type(codec, n))), len(body)
            )
            body.insert(first_vcl, make_sei(codec, self.args.name, self.counter))
        self.counter += 1
        out.extend(body)
        return out, key

    def _pump(self) -> None:
        """Push each unit when it is due, stamped with the served pipeline's running time."""
        scale = 1.0 + self.args.drift_ppm / 1e6
        while True:
            with self.lock:
                while self.running and not self.queue:
                    self.wake.wait()
                if not self.running:
                    return
                due, data, key = self.queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self.wake.wait(wait)
                    continue
                self.queue.popleft()
                outlets = list(self.outlets)
            for outlet in outlets:
                if not outlet.started and not key:
                    continue  # a new client's picture begins at a keyframe
                running = outlet.src.get_current_running_time()
                if running is None or running == Gst.CLOCK_TIME_NONE:
                    continue
                pts = max(int(running * scale), outlet.last_pts + 1)
                outlet.last_pts = pts
                outlet.started = True
                buf = Gst.Buffer.new_wrapped(data)
                buf.pts = buf.dts = pts
                if not key:
                    buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
                outlet.src.emit("push-buffer", buf)

    # served media -------------------------------------------------------------

    def _on_media_configure(
        self, _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia
    ) -> None:
        src = media.get_element().get_by_name_recurse_up("src")
        outlet = Outlet(src)
        with self.lock:
            if self.caps is not None:
                src.set_caps(self.caps)
            self.outlets.append(outlet)
        media.connect("unprepared", self._on_unprepared, outlet)

    def _on_unprepared(self, _media: GstRtspServer.RTSPMedia, outlet: Outlet) -> None:
        with self.lock:
            if outlet in self.outlets:
                self.outlets.remove(outlet)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--restream", action="append", default=[], metavar="PATH=URL")
    p.add_argument("--codec", choices=["h264", "h265"], default="h264")
    p.add_argument("--name", default="gst", help="this recorder's name (in its own SEI)")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="random extra delay per unit")
    p.add_argument("--drift-ppm", type=float, default=0.0, help="timestamp clock error")
    p.add_argument(
        "--config-interval",
        type=int,
        default=-1,
        help="parameter sets every N s before any unit; -1: before keyframes; 0: SDP only",
    )
    p.add_argument("--mtu", type=int, default=1400, help="largest RTP packet")
    p.add_argument(
        "--aggregate",
        choices=list(AGGREGATE),
        default="zero-latency",
        help="STAP-A/AP use of the payloader (aggregate-mode)",
    )
    p.add_argument("--aud", action="store_true", help="an access unit delimiter per unit")
    p.add_argument("--sei", action="store_true", help="an SEI of this recorder's own per unit")
    p.add_argument("--pt", type=int, default=96, help="RTP payload type")
    p.add_argument("--seed", type=int, default=None, help="seed of the jitter")
    args = p.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    streams = []
    for spec in args.restream:
        path, _, url = spec.partition("=")
        path = path if path.startswith("/") else "/" + path
        r = Restream(path, url, args)
        mounts.add_factory(path, r.factory)
        streams.append(r)
    if server.attach(None) == 0:
        print("cannot listen", file=sys.stderr, flush=True)
        return 1
    for r in streams:
        r.start()
    print(f"PORT {server.get_bound_port()}", flush=True)
    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())

    def watch_stdin() -> None:
        sys.stdin.read()
        GLib.idle_add(loop.quit)

    threading.Thread(target=watch_stdin, daemon=True).start()
    loop.run()
    for r in streams:
        r.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
