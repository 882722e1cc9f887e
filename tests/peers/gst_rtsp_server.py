#!/usr/bin/python3
"""A GStreamer RTSP server (gst-rtsp-server, not this project's code) for tests and benchmarks.

Run with Debian's system Python, which has the GObject bindings:

    /usr/bin/python3 tests/peers/gst_rtsp_server.py --port 0 --test-source /cam
    /usr/bin/python3 tests/peers/gst_rtsp_server.py --port 0 --relay /cam=rtsp://127.0.0.1:8601/cam

Prints ``PORT <n>`` once listening; runs until SIGTERM or EOF on standard input.
``--test-source`` encodes videotestsrc with x264 (a camera-like upstream);
``--relay`` is the GStreamer relay a user would otherwise build (rtspsrc ->
depay -> parse -> pay, one shared upstream for all clients).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

TEST_SOURCE = (
    "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=25/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bitrate=500 "
    "sliced-threads=false threads=1 "
    "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
)
RELAY = (
    "( rtspsrc location={url} latency=0 protocols=tcp ! rtph264depay ! h264parse "
    "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--test-source", action="append", default=[], metavar="PATH")
    p.add_argument("--relay", action="append", default=[], metavar="PATH=URL")
    args = p.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for path in args.test_source:
        f = GstRtspServer.RTSPMediaFactory()
        f.set_launch(TEST_SOURCE)
        f.set_shared(True)
        mounts.add_factory(path if path.startswith("/") else "/" + path, f)
    for spec in args.relay:
        path, _, url = spec.partition("=")
        f = GstRtspServer.RTSPMediaFactory()
        f.set_launch(RELAY.format(url=url))
        f.set_shared(True)
        mounts.add_factory(path if path.startswith("/") else "/" + path, f)
    server.attach(None)
    print(f"PORT {server.get_bound_port()}", flush=True)
    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())

    def watch_stdin() -> None:
        sys.stdin.read()
        GLib.idle_add(loop.quit)

    threading.Thread(target=watch_stdin, daemon=True).start()
    loop.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
