"""Scale benchmark: N cameras, each pulled from two simulated recorders, one client each.

    .venv/bin/python bench/scale.py [--cameras 10,50,100,200] [--seconds 20] [--warmup 5]
        [--bitrate 1500000] [--size 640x360] [--gop 50] [--plot docs/bench/scale-DATE.png]
        [--memory-report FILE [--tracemalloc]]

For every N, in separate processes: two simulated recorders (r1, r2: each serves all N
cameras, one shared encoded clip, frame counters in every picture), the proxy
(``python -m rmfproxy run``, hitless, r1 primary) and one reader process holding one
RTSP-over-TCP client per camera (``bench/rtsp_reader.py``). Measured over ``--seconds``
after ``--warmup``:

- ``proxy_cores``: the proxy process's user+system CPU seconds per wall second;
- ``cameras_per_core``: N / proxy_cores;
- ``frames_delivered_ratio``: distinct frame counters the clients got / the counters the
  recorders produced in the span each client saw (1.0 = nothing lost);
- ``rate_ratio``: frames the clients got / N x fps x seconds (below 1 when whole streams
  lag or stop, e.g. when the simulator or the readers run out of CPU);
- ``rss_mb``, ``rss_per_camera_mb``: the proxy's resident memory at the end, and divided
  by N (the process's own ~60 MB included); ``rss_mean_mb``: its mean over the window
  (sampled every RSS_EVERY s: with every camera's GOP in step, the RSS at one instant
  depends on where the GOPs are); ``heap_mean_mb``, ``heap_range_mb``: the part of it in
  glibc's main heap (``[heap]`` in ``/proc/PID/smaps``; it stays at its high-water mark
  between two trims), mean and range over the window; ``rss_peak_mb``: its peak since
  the start (``VmHWM``); ``proxy_minor_faults_per_second``: pages the proxy touched anew (the
  kernel's cost of memory given back and taken again); ``rss_mb_per_added_camera``
  (over all N): the least-squares slope of RSS over N, and of the mean RSS with its
  intercept and what it gives at 100 cameras (``rss_mean_fit``);
  ``machine_busy_cores``: every process's CPU over the window (the simulator and
  readers share the machine: past it, losses are the machine's, not the proxy's).

Prints one JSON document; with ``--plot`` also draws cameras vs proxy CPU and RSS (an SVG
rendered to PNG by headless Chromium). With ``--memory-report FILE`` the proxy writes
FILE-N.txt per size at the end of the window: glibc's heap in use and free, a census of the
buffers that hold a camera's bytes and, with ``--tracemalloc`` (slower; its RSS then
includes the traces), the live Python allocations by source line (see
:func:`memory_report`). glibc's allocator settings (``MALLOC_ARENA_MAX``,
``MALLOC_TRIM_THRESHOLD_``) pass to the proxy from the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.relay import cpu_seconds, wait_rtsp
from bench.rtsp_reader import ReaderStats, read

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
RSS_EVERY = 0.5
"""Seconds between the samples of the proxy's RSS over the window."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory (``VmRSS``) or its peak so far (``VmHWM``), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def heap_mb(pid: int) -> float:
    """Resident memory of glibc's main heap (the ``[heap]`` mapping), MB."""
    in_heap = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if not line.split(" ", 1)[0].endswith(":"):  # a mapping's first line, not a field
            in_heap = line.endswith("[heap]")
        elif in_heap and line.startswith("Rss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def minor_faults(pid: int) -> int:
    """Page faults of ``pid`` served without I/O so far (``minflt``: each a page the process
    touched for the first time, e.g. after a heap trim gave it back)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / TICKS


# child processes -----------------------------------------------------------------------


async def serve_recorder(name: str, cameras: int, args: argparse.Namespace) -> None:
    """A simulated recorder serving ``cameras`` cameras (one shared clip); prints its port."""
    from rmfproxy.log import configure_logging
    from rmfproxy.sim.encoder import encode_clip
    from rmfproxy.sim.recorder import SimRecorder

    configure_logging("json", "error")
    w, h = args.size
    # --independent: r2 encodes the pictures its own way (another bit rate), as a recorder of
    # another make re-streaming the camera would: the proxy never aligns the two.
    own = args.independent and name != "r1"
    clip = await asyncio.to_thread(
        encode_clip,
        "h264",
        width=w,
        height=h,
        fps=25,
        gop=args.gop,
        bitrate=args.bitrate * 3 // 4 if own else args.bitrate,
        seconds=max(4.0, 2 * args.gop / 25),
    )
    clips = {f"c{i:03d}": clip for i in range(cameras)}
    if args.stagger:
        # Real cameras' keyframes do not come at the same instant: start camera i's loop
        # i/N of a GOP further on (both recorders alike, so their pictures still match).
        for i in range(cameras):
            k = i * clip.gop // cameras
            clips[f"c{i:03d}"] = dataclasses.replace(
                clip, access_units=clip.access_units[k:] + clip.access_units[:k]
            )
    rec = SimRecorder(name, clips, port=0, retention=5.0)
    await rec.start()
    print(f"PORT {rec.port}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await rec.stop()


async def run_readers(urls: list[str], seconds: float, warmup: float) -> None:
    """One client per URL; prints what each saw as JSON."""
    stats = [ReaderStats() for _ in urls]
    await asyncio.gather(*(read(u, seconds, s, warmup) for u, s in zip(urls, stats, strict=True)))
    out = [
        {
            "frames": len(s.arrivals),
            "span": (max(s.arrivals) - min(s.arrivals) + 1) if s.arrivals else 0,
            "bytes": s.bytes,
        }
        for s in stats
    ]
    print(json.dumps(out), flush=True)


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            *("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks"),
            *("fsmblks", "uordblks", "fordblks", "keepcost"),
        )
    ]


def malloc_totals() -> dict[str, float]:
    """glibc's heap now (MB): in use, free inside the heap (fragmentation, or a high-water
    mark not given back), and mmapped blocks (``mallinfo2``, glibc 2.33+)."""
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _Mallinfo2
    m = libc.mallinfo2()
    return {
        "heap_in_use": m.uordblks / 1e6,
        "heap_free": m.fordblks / 1e6,
        "mmapped": m.hblkhd / 1e6,
    }


def memory_report(top: int = 25) -> str:
    """What holds the proxy's memory now: glibc's heap (in use, free), a census of the
    buffers a camera's stream passes through (by walking the live objects) and, when
    ``tracemalloc`` runs, the live Python allocations by source line."""
    import gc
    import tracemalloc

    from rmfproxy.relay.merge import Merger
    from rmfproxy.rtsp.message import StreamParser
    from rmfproxy.serve.gop import GopBuffer
    from rmfproxy.serve.sink import ClientSink

    census: dict[str, list[int]] = {}

    def add(what: str, size: int) -> None:
        entry = census.setdefault(what, [0, 0])
        entry[0] += 1
        entry[1] += size

    for obj in gc.get_objects():
        if isinstance(obj, GopBuffer):
            kind = "source" if obj.first_unit_only else "fan-out"
            add(f"GopBuffer ({kind}) packets held", sum(len(p) for _, p in obj.packets))
        elif isinstance(obj, StreamParser):
            add("StreamParser receive buffer (capacity)", obj._buf.__alloc__())
        elif isinstance(obj, ClientSink):
            tcp = obj._tcp
            add("client transport write buffer", tcp.get_write_buffer_size() if tcp else 0)
            add("client turn queue", obj._pending_bytes)
        elif isinstance(obj, Merger):
            for src in obj._sources.values():
                add("merger rings (AUs held while unlocated)", src.ring_bytes)
                cur = src.asm._cur
                add("merger AU being assembled", sum(len(p) for p in cur.packets) if cur else 0)
                held = src.held
                add("merger held AU", sum(len(p) for p in held.packets) if held else 0)
    lines = [f"malloc (MB): {json.dumps({k: round(v, 1) for k, v in malloc_totals().items()})}"]
    # What glibc could give back now: the free pages inside its heap (RSS must be read
    # before this report, which changes it).
    rss = rss_mb(os.getpid())
    ctypes.CDLL(None).malloc_trim(0)
    lines.append(f"malloc_trim(0): RSS {rss:.1f} -> {rss_mb(os.getpid()):.1f} MB")
    lines.append("census (objects, bytes):")
    lines += [f"  {k}: {n} objects, {b / 1e6:.2f} MB" for k, (n, b) in sorted(census.items())]
    if tracemalloc.is_tracing():
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        stats = snap.statistics("lineno")
        total = sum(s.size for s in stats)
        lines.append(f"tracemalloc: {total / 1e6:.1f} MB live in {len(stats)} sites; top {top}:")
        lines += [
            f"  {s.size / 1e6:8.2f} MB {s.count:8d} blocks  {s.traceback}" for s in stats[:top]
        ]
    return "\n".join(lines) + "\n"


def reported_proxy(config: str, report: str, trace: bool) -> int:
    """The proxy (under ``tracemalloc`` if ``trace``); SIGUSR1 writes :func:`memory_report`
    to ``report``."""
    import tracemalloc

    from rmfproxy.cli import main as rmfproxy_main

    if trace:
        tracemalloc.start()
    signal.signal(signal.SIGUSR1, lambda *_: Path(report).write_text(memory_report()))
    return rmfproxy_main(["run", "--config", config])


# the run ---------------------------------------------------------------------------------


def child(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def one_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    size = f"{args.size[0]}x{args.size[1]}"
    recorders = [
        child(
            *("recorder", name, str(n), "--size", size),
            *("--bitrate", str(args.bitrate), "--gop", str(args.gop)),
            *(["--stagger"] if args.stagger else []),
            *(["--independent"] if args.independent else []),
        )
        for name in ("r1", "r2")
    ]
    procs = list(recorders)
    try:
        ports = []
        for rec in recorders:
            assert rec.stdout is not None
            line = await asyncio.to_thread(rec.stdout.readline)
            if not line.startswith("PORT "):
                raise RuntimeError("a simulated recorder did not start")
            ports.append(int(line.split()[1]))
        rtsp_port, api_port = free_port(), free_port()
        cameras = [f"c{i:03d}" for i in range(n)]
        config = {
            "rtsp": {"listen": f"127.0.0.1:{rtsp_port}"},
            "api": {"listen": f"127.0.0.1:{api_port}"},
            "log": {"format": "json", "level": "error"},
            "cameras": {
                cam: {
                    "sources": [
                        {"url": f"rtsp://127.0.0.1:{p}/{cam}", "name": name}
                        for name, p in zip(("r1", "r2"), ports, strict=True)
                    ]
                }
                for cam in cameras
            },
        }
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(config, f)  # JSON is YAML
        report = None
        command = [sys.executable, "-m", "rmfproxy", "run", "--config", f.name]
        if args.memory_report is not None:
            report = args.memory_report.with_name(
                f"{args.memory_report.stem}-{n}{args.memory_report.suffix}"
            )
            report.parent.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, __file__, "proxy", f.name, str(report.resolve())]
            command += ["trace"] if args.tracemalloc else []
        proxy = subprocess.Popen(  # noqa: ASYNC220 - started once per size, not on a hot path
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        procs.append(proxy)
        urls = [f"rtsp://127.0.0.1:{rtsp_port}/{cam}" for cam in cameras]
        for u in urls:
            await wait_rtsp(u, limit=120)
        await asyncio.sleep(2.0)  # every camera's sources connected and merged
        readers = child("read", str(args.seconds), str(args.warmup), *urls)
        procs.append(readers)
        await asyncio.sleep(args.warmup)
        cpu0, busy0, t0 = cpu_seconds(proxy.pid), machine_busy(), time.monotonic()
        faults0 = minor_faults(proxy.pid)
        spy = None
        if args.py_spy is not None:
            # Sampling profile of the proxy over the window (collapsed stacks, one per line).
            out = args.py_spy.with_name(f"{args.py_spy.stem}-{n}{args.py_spy.suffix}")
            spy = subprocess.Popen(  # noqa: ASYNC220 - once per size
                [
                    str(Path(sys.executable).with_name("py-spy")),
                    *("record", "-p", str(proxy.pid), "-d", str(int(args.seconds))),
                    *("-r", "100", "-f", "raw", "-o", str(out), "--nonblocking"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        samples: list[float] = []
        heap: list[float] = []
        end = t0 + args.seconds
        while (left := end - time.monotonic()) > 0:
            samples.append(rss_mb(proxy.pid))
            heap.append(heap_mb(proxy.pid))
            await asyncio.sleep(min(RSS_EVERY, left))
        faults = minor_faults(proxy.pid) - faults0
        cpu, busy, wall = (
            cpu_seconds(proxy.pid) - cpu0,
            machine_busy() - busy0,
            time.monotonic() - t0,
        )
        rss, rss_peak = rss_mb(proxy.pid), rss_mb(proxy.pid, "VmHWM")
        if report is not None:
            proxy.send_signal(signal.SIGUSR1)
            for _ in range(600):  # the snapshot of a big heap takes a while
                if report.exists():
                    break
                await asyncio.sleep(0.1)
        if spy is not None:
            await asyncio.to_thread(spy.wait, 30)  # it writes its file when done
        assert readers.stdout is not None
        line = await asyncio.to_thread(readers.stdout.readline)
        seen = json.loads(line) if line.strip() else []
        os.unlink(f.name)
    finally:
        for p in reversed(procs):
            stop(p)
    frames = sum(s["frames"] for s in seen)
    span = sum(s["span"] for s in seen)
    cores = cpu / wall
    return {
        "cameras": n,
        "proxy_cores": round(cores, 3),
        "cameras_per_core": round(n / cores, 1) if cores else None,
        "proxy_minor_faults_per_second": round(faults / wall),
        "frames_delivered_ratio": round(frames / span, 5) if span else 0.0,
        "rate_ratio": round(frames / (n * 25 * args.seconds), 4),
        "clients_with_frames": sum(1 for s in seen if s["frames"]),
        "megabits_per_second_delivered": round(
            sum(s["bytes"] for s in seen) * 8 / args.seconds / 1e6, 1
        ),
        "rss_mb": round(rss, 1),
        "rss_per_camera_mb": round(rss / n, 3),
        "rss_mean_mb": round(sum(samples) / len(samples), 1),
        "heap_mean_mb": round(sum(heap) / len(heap), 1),
        "heap_range_mb": [round(min(heap), 1), round(max(heap), 1)],
        "rss_peak_mb": round(rss_peak, 1),
        "machine_busy_cores": round(busy / wall, 2),
    }


def fit(xs: list[int], ys: list[float]) -> tuple[float, float]:
    """Least-squares line through the points: slope and intercept."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return slope, my - slope * mx


def svg_plot(rows: list[dict[str, Any]]) -> str:
    """Cameras vs proxy CPU cores (left axis) and RSS MB (right axis)."""
    w, h, pad = 720, 420, 60
    xs = [r["cameras"] for r in rows]
    cpu = [r["proxy_cores"] for r in rows]
    rss = [r["rss_mb"] for r in rows]
    xmax, cmax, rmax = max(xs) * 1.05, max(cpu) * 1.2 or 1, max(rss) * 1.2 or 1

    def pt(x: float, y: float, ymax: float) -> str:
        return f"{pad + x / xmax * (w - 2 * pad):.1f},{h - pad - y / ymax * (h - 2 * pad):.1f}"

    def series(ys: list[float], ymax: float, colour: str) -> str:
        line = " ".join(pt(x, y, ymax) for x, y in zip(xs, ys, strict=True))
        dots = "".join(
            f'<circle cx="{pt(x, y, ymax).split(",")[0]}" cy="{pt(x, y, ymax).split(",")[1]}" '
            f'r="4" fill="{colour}"/>'
            for x, y in zip(xs, ys, strict=True)
        )
        return f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>{dots}'

    ticks = "".join(
        f'<text x="{pt(x, 0, 1).split(",")[0]}" y="{h - pad + 20}" text-anchor="middle">{x}</text>'
        for x in xs
    )
    labels = "".join(
        f'<text x="{pad - 8}" y="{pt(0, cmax * k / 4, cmax).split(",")[1]}" text-anchor="end">'
        f"{cmax * k / 4:.2f}</text>"
        f'<text x="{w - pad + 8}" y="{pt(0, rmax * k / 4, rmax).split(",")[1]}">'
        f"{rmax * k / 4:.0f}</text>"
        for k in range(5)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'font-family="DejaVu Sans" font-size="13">'
        f'<rect width="{w}" height="{h}" fill="white"/>'
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>'
        f'<line x1="{w - pad}" y1="{pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>'
        f"{ticks}{labels}"
        f'<text x="{w / 2}" y="{h - 15}" text-anchor="middle">'
        "cameras (2 sources, 1 client each)</text>"
        f'<text x="{pad}" y="30" fill="#1f77b4">proxy CPU (cores)</text>'
        f'<text x="{w - pad}" y="30" fill="#d62728" text-anchor="end">proxy RSS (MB)</text>'
        f"{series(cpu, cmax, '#1f77b4')}{series(rss, rmax, '#d62728')}</svg>"
    )


async def render_png(svg: str, target: Path) -> None:
    from rmfproxy.sim.browser import Browser

    with tempfile.NamedTemporaryFile("w", suffix=".svg", delete=False) as f:
        f.write(svg)
    try:
        async with Browser(width=720, height=420) as browser:
            await browser.goto(f"file://{f.name}")
            png = await browser.screenshot()
        await asyncio.to_thread(target.write_bytes, png)
    finally:
        os.unlink(f.name)


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(w), int(h)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "proxy":
        raise SystemExit(reported_proxy(sys.argv[2], sys.argv[3], "trace" in sys.argv[4:]))
    if len(sys.argv) > 1 and sys.argv[1] in ("recorder", "read"):
        mode = sys.argv[1]
        if mode == "recorder":
            p = argparse.ArgumentParser()
            p.add_argument("name")
            p.add_argument("cameras", type=int)
            p.add_argument("--size", type=_size, default=(640, 360))
            p.add_argument("--bitrate", type=int, default=1_500_000)
            p.add_argument("--gop", type=int, default=50)
            p.add_argument("--stagger", action="store_true")
            p.add_argument("--independent", action="store_true")
            a = p.parse_args(sys.argv[2:])
            import uvloop

            uvloop.run(serve_recorder(a.name, a.cameras, a))
        else:
            import uvloop

            seconds, warmup, urls = float(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
            uvloop.run(run_readers(urls, seconds, warmup))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cameras", default="10,50,100,200", help="comma-separated camera counts")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--bitrate", type=int, default=1_500_000)
    p.add_argument("--size", type=_size, default=(640, 360))
    p.add_argument("--gop", type=int, default=50, help="frames between keyframes (25 fps)")
    p.add_argument(
        "--stagger",
        action="store_true",
        help="spread the cameras' keyframes over the GOP (default: all at the same instant)",
    )
    p.add_argument(
        "--independent",
        action="store_true",
        help="r2 encodes the camera its own way (independent recorders: never aligned)",
    )
    p.add_argument("--plot", type=Path, default=None, help="write a PNG plot here")
    p.add_argument(
        "--memory-report",
        type=Path,
        default=None,
        help="write the proxy's memory report to FILE-N.txt per size at the window's end",
    )
    p.add_argument(
        "--tracemalloc",
        action="store_true",
        help="with --memory-report: run the proxy under tracemalloc (slow: clients may lag)",
    )
    p.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        help="profile the proxy with py-spy (pip install py-spy) into FILE-N.txt per size",
    )
    args = p.parse_args()
    rows = []
    failed = []
    for n in (int(x) for x in args.cameras.split(",")):
        try:
            rows.append(asyncio.run(one_size(n, args)))
        except (RuntimeError, OSError, TimeoutError) as exc:
            # e.g. the machine cannot run that many simulated streams: say so, go on
            failed.append({"cameras": n, "error": str(exc)})
            print(json.dumps(failed[-1]), file=sys.stderr, flush=True)
            continue
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result: dict[str, Any] = {
        "benchmark": "scale",
        "bitrate": args.bitrate,
        "size": f"{args.size[0]}x{args.size[1]}",
        "gop": args.gop,
        "stagger": args.stagger,
        "independent": args.independent,
        "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "results": rows,
        "failed": failed,
    }
    if len(rows) > 1:
        # Marginal memory per camera: least-squares slope of RSS over the camera count.
        xs = [r["cameras"] for r in rows]
        result["rss_mb_per_added_camera"] = round(fit(xs, [r["rss_mb"] for r in rows])[0], 3)
        slope, base = fit(xs, [r["rss_mean_mb"] for r in rows])
        result["rss_mean_fit"] = {
            "mb_per_added_camera": round(slope, 3),
            "base_mb": round(base, 1),
            "per_camera_at_100_mb": round((base + 100 * slope) / 100, 3),
        }
    if args.plot is not None and len(rows) > 1:
        asyncio.run(render_png(svg_plot(rows), args.plot))
        result["plot"] = str(args.plot)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
