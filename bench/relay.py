"""Relay benchmark: rmfproxy against a plain TCP byte pipe (the floor) and a GStreamer relay
(rtspsrc into gst-rtsp-server, the peer a user would otherwise build), on the same simulated
camera streams in the same invocation.

    .venv/bin/python bench/relay.py [--cameras 4] [--bitrate 4000000] [--seconds 20] [--tls]

Prints one JSON document. Per relay: the relay process's CPU seconds per relayed GB,
RTP packets per second delivered to the clients, and added latency p50/p99: each frame's
arrival at a client of the relay minus its arrival at a client reading the simulator
directly (matched by the frame counter the simulator embeds). Ratios compare rmfproxy
with each peer. Relays run one after the other, each with the machine to itself
besides the simulator and the readers. ``--tls``: the same rmfproxy process is also read
through its RTSPS listener (``rmfproxy_tls``: TLS 1.3, a throw-away certificate), and the
ratios say what encryption costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.rtsp_reader import ReaderStats, client_ssl, read
from rmfproxy.rtsp.message import Headers, Request

ROOT = Path(__file__).resolve().parent.parent
GST_PEER = ROOT / "tests" / "peers" / "gst_rtsp_server.py"
TICKS = os.sysconf("SC_CLK_TCK")


def self_signed(directory: Path) -> dict[str, str]:
    """A throw-away EC P-256 certificate for 127.0.0.1 (``rtsp.tls`` cert_file/key_file)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return {"cert_file": str(cert), "key_file": str(key)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


async def wait_rtsp(url: str, limit: float = 60) -> None:
    """Until DESCRIBE on ``url`` answers 200."""
    host, _, port = url.split("/")[2].rpartition(":")
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, int(port), ssl=client_ssl(url))
            writer.write(Request("DESCRIBE", url, Headers({"CSeq": "1"})).serialize())
            line = await asyncio.wait_for(reader.readline(), 2)
            writer.close()
            if b" 200 " in line:
                return
        except (OSError, TimeoutError):
            pass
        await asyncio.sleep(0.3)
    raise RuntimeError(f"{url} never became ready")


def start(cmd: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )


def read_port(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        raise RuntimeError(f"peer did not start: {line!r}")
    return int(line.split()[1])


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def measure(
    name: str,
    relay_urls: list[str],
    direct_urls: list[str],
    pid: int,
    seconds: float,
    warmup: float,
) -> dict[str, Any]:
    for u in relay_urls:
        await wait_rtsp(u)
    relay_stats = [ReaderStats() for _ in relay_urls]
    direct_stats = [ReaderStats() for _ in direct_urls]
    cpu0 = cpu_seconds(pid)
    t0 = time.monotonic()
    await asyncio.gather(
        *(read(u, seconds, s, warmup) for u, s in zip(relay_urls, relay_stats, strict=True)),
        *(read(u, seconds, s, warmup) for u, s in zip(direct_urls, direct_stats, strict=True)),
    )
    wall = time.monotonic() - t0
    cpu = cpu_seconds(pid) - cpu0
    # The CPU window includes the warm-up; scale bytes to the same window.
    total_bytes = sum(s.bytes for s in relay_stats) * (wall / seconds)
    packets = sum(s.packets for s in relay_stats)
    delays = []
    for r, d in zip(relay_stats, direct_stats, strict=True):
        delays += [(r.arrivals[c] - d.arrivals[c]) * 1000 for c in r.arrivals if c in d.arrivals]
    return {
        "relay": name,
        "cpu_seconds": round(cpu, 3),
        "cpu_seconds_per_gb": round(cpu / (total_bytes / 1e9), 2) if total_bytes else None,
        "packets_per_second": round(packets / seconds, 1),
        "megabits_per_second": round(sum(s.bytes for s in relay_stats) * 8 / seconds / 1e6, 2),
        "frames_matched": len(delays),
        "added_latency_ms_p50": round(percentile(delays, 50), 3),
        "added_latency_ms_p99": round(percentile(delays, 99), 3),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    cams = [f"cam{i + 1}" for i in range(args.cameras)]
    sim_port = free_port()
    py = sys.executable
    sim_cmd = [
        py,
        "-m",
        "rmfproxy",
        "sim",
        "--recorder",
        f"r1:{sim_port}",
        "--size",
        args.size,
        "--bitrate",
        str(args.bitrate),
        "--fps",
        str(args.fps),
        "--gop",
        str(args.fps),
        "--seconds",
        "4",
        "--control",
        "",
    ]
    for c in cams:
        sim_cmd += ["--camera", c]
    sim = start(sim_cmd)
    results: dict[str, Any] = {}
    try:
        direct = [f"rtsp://127.0.0.1:{sim_port}/{c}" for c in cams]
        for u in direct:
            await wait_rtsp(u, 120)
        # rmfproxy
        port = free_port()
        tls_port = free_port()
        tls_dir = tempfile.TemporaryDirectory()
        rtsp: dict[str, Any] = {"listen": f"127.0.0.1:{port}"}
        if args.tls:
            rtsp["tls"] = {"listen": f"127.0.0.1:{tls_port}", **self_signed(Path(tls_dir.name))}
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            json.dump(
                {
                    "rtsp": rtsp,
                    "api": {"listen": "127.0.0.1:0"},
                    "log": {"format": "json", "level": "warning"},
                    "cameras": {
                        c: {"sources": [{"url": u}]} for c, u in zip(cams, direct, strict=True)
                    },
                },
                f,
            )
        proc = start([py, "-m", "rmfproxy", "run", "--config", f.name])
        try:
            results["rmfproxy"] = await measure(
                "rmfproxy",
                [f"rtsp://127.0.0.1:{port}/{c}" for c in cams],
                direct,
                proc.pid,
                args.seconds,
                args.warmup,
            )
            if args.tls:
                results["rmfproxy_tls"] = await measure(
                    "rmfproxy_tls",
                    [f"rtsps://127.0.0.1:{tls_port}/{c}" for c in cams],
                    direct,
                    proc.pid,
                    args.seconds,
                    args.warmup,
                )
        finally:
            stop(proc)
            os.unlink(f.name)
            tls_dir.cleanup()
        # tcp byte pipe: one pipe process for all connections
        proc = start([py, str(ROOT / "bench" / "tcp_pipe.py"), "--target", f"127.0.0.1:{sim_port}"])
        try:
            pport = read_port(proc)
            results["tcp_pipe"] = await measure(
                "tcp_pipe",
                [f"rtsp://127.0.0.1:{pport}/{c}" for c in cams],
                direct,
                proc.pid,
                args.seconds,
                args.warmup,
            )
        finally:
            stop(proc)
        # GStreamer relay
        if shutil.which("gst-launch-1.0") and shutil.which("python3", path="/usr/bin"):
            cmd = ["/usr/bin/python3", str(GST_PEER), "--port", "0"]
            for c, u in zip(cams, direct, strict=True):
                cmd += ["--relay", f"/{c}={u}"]
            proc = start(cmd)
            try:
                gport = read_port(proc)
                results["gstreamer"] = await measure(
                    "gstreamer",
                    [f"rtsp://127.0.0.1:{gport}/{c}" for c in cams],
                    direct,
                    proc.pid,
                    args.seconds,
                    args.warmup,
                )
            finally:
                stop(proc)
    finally:
        stop(sim)
    ratios: dict[str, Any] = {}
    me = results["rmfproxy"]
    for peer in ("tcp_pipe", "gstreamer"):
        if peer in results and results[peer]["cpu_seconds_per_gb"]:
            ratios[f"rmfproxy_vs_{peer}_cpu"] = round(
                me["cpu_seconds_per_gb"] / results[peer]["cpu_seconds_per_gb"], 2
            )
            ratios[f"rmfproxy_minus_{peer}_latency_p50_ms"] = round(
                me["added_latency_ms_p50"] - results[peer]["added_latency_ms_p50"], 3
            )
    if "rmfproxy_tls" in results and me["cpu_seconds_per_gb"]:
        tls = results["rmfproxy_tls"]
        ratios["rmfproxy_tls_vs_rmfproxy_cpu"] = round(
            tls["cpu_seconds_per_gb"] / me["cpu_seconds_per_gb"], 2
        )
        ratios["rmfproxy_tls_minus_rmfproxy_latency_p50_ms"] = round(
            tls["added_latency_ms_p50"] - me["added_latency_ms_p50"], 3
        )
    return {
        "benchmark": "relay",
        "config": {
            "cameras": args.cameras,
            "bitrate": args.bitrate,
            "fps": args.fps,
            "size": args.size,
            "seconds": args.seconds,
            "tls": args.tls,
            "cpus": os.cpu_count(),
        },
        "relays": results,
        "ratios": ratios,
        "median_cpu_seconds_per_gb": statistics.median(
            [r["cpu_seconds_per_gb"] for r in results.values() if r["cpu_seconds_per_gb"]]
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--bitrate", type=int, default=4_000_000)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="1 camera, 320x240, 3 s per relay")
    ap.add_argument("--tls", action="store_true", help="also read rmfproxy over RTSPS")
    args = ap.parse_args()
    if args.quick:
        args.cameras, args.size, args.bitrate, args.seconds, args.warmup = (
            1,
            "320x240",
            500_000,
            3,
            0.5,
        )
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
