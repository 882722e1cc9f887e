"""WAN detection benchmark: false failovers from an impaired path, and detection of real faults.

    .venv/bin/python bench/wan.py [--minutes 10] [--transport tcp|udp]
                                  [--camera-config '{"stall_timeout": 0.4}']
    .venv/bin/python bench/wan.py --sweep --minutes 5 [--sweep-configs JSON-LIST]

One camera, two hot sources: simulated recorders r1 and r2, each behind its own WAN link
(:mod:`rmfproxy.sim.wan`, in this process): 80 ms RTT (40 ms each way), ±20 ms jitter, a
300 ms TCP stall every 10 s (r1's at 2.5 s + 10k s, r2's at 7.5 s + 10k s: never both at
once), 1 % UDP loss. The proxy (``rmfproxy run``, a process of its own) pulls both over
``--transport``; an FFmpeg client (PyAV, a process of its own) reads the proxy for the
whole run and counts decoded frames, decode errors and, from the simulator's frame
counters, frames lost and repeated.

For ``--minutes`` both recorders are alive: any switch then is a false (link-caused) one,
counted from the proxy's switch records (``/api/v1/cameras/cam``, polled every 2 s) and
its metrics (``rmfproxy_camera_switches_total``). Then the active recorder is frozen (RTP
stops, TCP stays open, for 8 s: found by the RTP heartbeat) and, once both are healthy
again, killed (connections closed, RTSP port silent: found at the close); each fault's time to
the switch comes from the switch record (``at`` minus the fault time) and from the
client's longest frame gap around it. ``--camera-config`` is merged into the camera's
configuration (detection settings); ``--sweep`` runs each of several such settings for
``--minutes`` and prints a table of detection time against false failovers per 10 min.
Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.relay import free_port, wait_rtsp
from bench.soak import http, log_summary, spawn, stop_process, switches
from rmfproxy.config import ConfigError, parse_config
from rmfproxy.log import configure_logging
from rmfproxy.sim.impair import Impairment
from rmfproxy.sim.runner import SimCluster, SimSpec

HERE = Path(__file__).resolve().parent
CAMERA = "cam"
POLL = 2.0
"""Seconds between reads of the proxy's switch records (it keeps the last 50)."""
FAULT_WINDOW = 8.0
"""Seconds given to each fault before it is mended."""
GAP_WINDOW = 2.0
"""The client's frame gap of a fault is its longest in the first seconds after it (later
ones are the new source's link stalls)."""
DEFAULT_SWEEP = [
    {},
    {"stall_timeout": 0.4},
    {"stall_timeout": 0.8},
]
"""Settings ``--sweep`` runs by default: today's defaults, then higher freeze floors."""


def wan_impairment(args: argparse.Namespace) -> Impairment:
    """The issue's WAN path (each recorder's link: seed + i, stall phases spread)."""
    return Impairment(
        delay=args.rtt_ms / 2000,
        jitter=args.jitter_ms / 1000,
        stall_every=args.stall_every,
        stall_for=args.stall_ms / 1000,
        udp_loss=args.udp_loss,
        seed=args.seed,
    )


# --- the client process -------------------------------------------------------------------


def client_main(args: argparse.Namespace) -> None:
    """Read the proxy with FFmpeg until SIGTERM or ``--seconds``; write what it saw."""
    import signal

    from rmfproxy.sim.probe import read_rtsp

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    r = read_rtsp(args.url, seconds=args.seconds, stop=stop, open_timeout=20.0)
    doc = {
        "frames_decoded": r.frames_decoded,
        "decode_errors": r.decode_errors,
        "lost": r.lost(),
        "repeated": r.repeated(),
        "error": r.error,
        "warnings": r.warnings[:10],
        "stream_warnings": r.stream_warnings,
        "arrivals": [round(t, 4) for t in r.arrivals],
        "counters": r.counters,
    }
    Path(args.out).write_text(json.dumps(doc))


# --- one run ------------------------------------------------------------------------------


def iso_to_unix(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def client_gap(doc: dict[str, Any], t0: float, t1: float) -> dict[str, Any]:
    """Longest interval between frames the client got in [t0 - 0.2, t1] (monotonic), and
    frames lost/repeated there."""
    pairs = [
        (t, c)
        for t, c in zip(doc.get("arrivals", []), doc.get("counters", []), strict=False)
        if t0 - 0.2 <= t <= t1
    ]
    if len(pairs) < 2:
        return {"gap_ms": round((t1 - t0) * 1000, 1), "lost": None, "repeated": None}
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(pairs)]
    counters = [c for _, c in pairs if c is not None]
    return {
        "gap_ms": round(max(gaps) * 1000, 1),
        "lost": sum(b - a - 1 for a, b in itertools.pairwise(counters) if b > a + 1),
        "repeated": sum(1 for a, b in itertools.pairwise(counters) if b <= a),
    }


class SwitchLog:
    """Every switch record the proxy reported, polled often enough not to miss any."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.records: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.errors: list[str] = []
        self.camera: dict[str, Any] = {}

    async def poll(self) -> None:
        try:
            body = await asyncio.to_thread(http, f"{self.api}/api/v1/cameras/{CAMERA}")
        except OSError as exc:
            self.errors.append(repr(exc))
            return
        self.camera = json.loads(body)
        for rec in self.camera.get("switches", []):
            self.records[(rec["at"], str(rec["from"]), rec["to"])] = rec

    def sorted(self) -> list[dict[str, Any]]:
        return sorted(self.records.values(), key=lambda r: r["at"])

    def active(self) -> str | None:
        return self.camera.get("active")

    def all_healthy(self) -> bool:
        return all(s.get("healthy") for s in self.camera.get("sources", [{}]))


async def wait_until(cond: Any, switch_log: SwitchLog, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        await switch_log.poll()
        if cond():
            return True
        await asyncio.sleep(0.5)
    return False


async def one_run(args: argparse.Namespace, camera_config: dict[str, Any]) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="rmfproxy-wan-"))
    py = sys.executable
    imp = wan_impairment(args)
    spec = SimSpec(
        recorders=[("r1", 0), ("r2", 0)],
        cameras=[CAMERA],
        size=(320, 240),
        fps=25,
        gop=25,
        bitrate=500_000,
        seconds=8.0,
        session_timeout=60,
        impairment=imp,
    )
    steady = args.minutes * 60.0
    total = steady + (FAULT_WINDOW * 2 + 40.0 if args.freeze else FAULT_WINDOW + 10.0)
    procs: list[subprocess.Popen[bytes]] = []
    out: dict[str, Any] = {"camera_config": camera_config, "work_dir": str(work)}

    def log(msg: str) -> None:
        print(f"wan {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    async with SimCluster(spec) as sim:
        prtsp, papi = free_port(), free_port()
        api = f"http://127.0.0.1:{papi}"
        config = {
            "rtsp": {"listen": f"127.0.0.1:{prtsp}"},
            "api": {"listen": f"127.0.0.1:{papi}"},
            "log": {"format": "json", "level": "info"},
            "cameras": {
                CAMERA: {
                    "sources": [
                        {"url": sim.url(r, CAMERA), "name": r, "transport": args.transport}
                        for r in ("r1", "r2")
                    ],
                    **camera_config,
                }
            },
        }
        try:
            parse_config(config)  # a bad --camera-config is named here, not by a dead proxy
        except ConfigError as exc:
            raise SystemExit(f"--camera-config: {exc}") from None
        cfg = work / "rmfproxy.json"
        cfg.write_text(json.dumps(config, indent=1))
        try:
            proxy = spawn([py, "-m", "rmfproxy", "run", "--config", str(cfg)], work / "proxy.log")
            procs.append(proxy)
            url = f"rtsp://127.0.0.1:{prtsp}/{CAMERA}"
            await wait_rtsp(url, 60)
            sw = SwitchLog(api)
            if not await wait_until(lambda: sw.active() is not None and sw.all_healthy(), sw, 30.0):
                raise RuntimeError("the proxy did not get both sources healthy in 30 s")
            stats_file = work / "client.json"
            cmd = [py, str(HERE / "wan.py"), "--role", "client", "--url", url]
            cmd += ["--seconds", str(total + 120), "--out", str(stats_file)]
            client = spawn(cmd, work / "client.log")
            procs.append(client)
            t_start_wall, t_start = time.time(), time.monotonic()
            log(f"steady phase: {steady:.0f} s, {args.transport}, camera config {camera_config}")
            while time.monotonic() - t_start < steady:
                await switch_log_poll(sw, proxy)
                await asyncio.sleep(POLL)
            t_steady_end_wall = time.time()
            faults: list[dict[str, Any]] = []
            if args.freeze:
                faults.append(await fault(sim, sw, "freeze"))
                await wait_until(lambda: sw.all_healthy(), sw, 60.0)
                await asyncio.sleep(10.0)  # a fresh standby, as in the steady phase
            faults.append(await fault(sim, sw, "kill"))
            await asyncio.sleep(2.0)
            stop_process(client, wait=15.0)
            doc = json.loads(stats_file.read_text()) if stats_file.exists() else {}
            with contextlib.suppress(OSError, ValueError):
                out["metrics"] = switches(api)
            await sw.poll()
        finally:
            for p in reversed(procs):
                stop_process(p)
        out["proxy_log"] = log_summary(work / "proxy.log")
        out["links"] = {
            name: {
                "stall_phase_s": link.impairment.stall_phase,
                "stalls_down": link.stats.down.stalls,
                "udp_datagrams_down": link.stats.down.datagrams,
                "udp_dropped_down": link.stats.down.dropped,
                "bytes_down": link.stats.down.bytes,
                "connections": link.stats.connections,
            }
            for name, link in sim.links.items()
        }
    records = sw.sorted()
    false = [
        r
        for r in records
        if r["direction"] in ("failover", "failback")
        and t_start_wall - 5 <= iso_to_unix(r["at"]) < t_steady_end_wall
    ]
    false_failovers = [r for r in false if r["direction"] == "failover"]
    steady_minutes = (t_steady_end_wall - t_start_wall) / 60
    for f in faults:
        after = [
            r
            for r in records
            if r["from"] == f["recorder"] and iso_to_unix(r["at"]) >= f["t_wall"] - 0.05
        ]
        rec = after[0] if after else None
        f["switch_ms"] = (
            None if rec is None else round((iso_to_unix(rec["at"]) - f["t_wall"]) * 1000)
        )
        f["switch_record"] = rec
        f["client"] = client_gap(doc, f["t_mono"], f["t_mono"] + GAP_WINDOW)
        del f["t_mono"]
    steady_client = client_gap(doc, t_start, t_start + steady)
    out.update(
        {
            "transport": args.transport,
            "steady_minutes": round(steady_minutes, 2),
            "false_switches": len(false),
            "false_failovers": len(false_failovers),
            "false_failovers_per_10min": round(len(false_failovers) / steady_minutes * 10, 1),
            "false_failover_causes": _count(r["reason"] for r in false_failovers),
            "false_failover_detection_ms_median": _median(
                [r["detection_ms"] for r in false_failovers]
            ),
            "false_switch_gap_ms_median": _median([r["gap_ms"] for r in false]),
            "faults": faults,
            "steady_client": steady_client,
            "client": {k: v for k, v in doc.items() if k not in ("arrivals", "counters")},
            "switch_records": records[-60:],
            "api_errors": sw.errors[:5],
        }
    )
    return out


async def switch_log_poll(sw: SwitchLog, proxy: subprocess.Popen[bytes]) -> None:
    if proxy.poll() is not None:
        raise RuntimeError(f"the proxy exited with {proxy.returncode}")
    await sw.poll()


async def fault(sim: SimCluster, sw: SwitchLog, kind: str) -> dict[str, Any]:
    """Break the active recorder for ``FAULT_WINDOW`` seconds (freeze or kill), then mend it."""
    await sw.poll()
    active = sw.active() or "r1"
    rec = sim.recorders[active]
    t_wall, t_mono = time.time(), time.monotonic()
    await rec.apply(kind)
    print(f"wan {time.strftime('%H:%M:%S')} {kind} {active}", file=sys.stderr, flush=True)
    end = t_mono + FAULT_WINDOW
    while time.monotonic() < end:
        await sw.poll()
        await asyncio.sleep(0.5)
    rec.clear()
    return {"fault": kind, "recorder": active, "t_wall": t_wall, "t_mono": t_mono}


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[str(i)] = out.get(str(i), 0) + 1
    return out


def row(result: dict[str, Any]) -> dict[str, Any]:
    """One line of the sweep table."""
    by_fault = {f["fault"]: f for f in result["faults"]}
    return {
        "camera_config": json.dumps(result["camera_config"]),
        "false_failovers_per_10min": result["false_failovers_per_10min"],
        "freeze_to_switch_ms": by_fault.get("freeze", {}).get("switch_ms"),
        "kill_to_switch_ms": by_fault.get("kill", {}).get("switch_ms"),
        "freeze_client_gap_ms": by_fault.get("freeze", {}).get("client", {}).get("gap_ms"),
        "kill_client_gap_ms": by_fault.get("kill", {}).get("client", {}).get("gap_ms"),
        "decode_errors": result["client"].get("decode_errors"),
    }


async def main(args: argparse.Namespace) -> None:
    configure_logging("json", os.environ.get("BENCH_LOG", "error"))
    base = json.loads(args.camera_config) if args.camera_config else {}
    if not isinstance(base, dict):
        raise SystemExit("--camera-config must be a JSON object")
    settings = [base]
    if args.sweep:
        sweep = json.loads(args.sweep_configs) if args.sweep_configs else DEFAULT_SWEEP
        if not isinstance(sweep, list) or not all(isinstance(s, dict) for s in sweep):
            raise SystemExit("--sweep-configs must be a JSON list of objects")
        settings = [{**base, **s} for s in sweep]
    results = []
    for s in settings:
        results.append(await one_run(args, s))
        print(json.dumps(row(results[-1])), file=sys.stderr, flush=True)
    doc: dict[str, Any] = {
        "benchmark": "wan",
        "minutes_per_run": args.minutes,
        "transport": args.transport,
        "wan": {
            "rtt_ms": args.rtt_ms,
            "jitter_ms": args.jitter_ms,
            "stall_every_s": args.stall_every,
            "stall_ms": args.stall_ms,
            "udp_loss": args.udp_loss,
        },
        "cpus": os.cpu_count(),
        "results": results,
    }
    if args.sweep:
        doc["table"] = [row(r) for r in results]
        for r in doc["table"]:
            print(
                f"{r['camera_config']:<32} false failovers/10 min "
                f"{r['false_failovers_per_10min']:>6}  freeze->switch "
                f"{r['freeze_to_switch_ms']} ms  kill->switch {r['kill_to_switch_ms']} ms",
                file=sys.stderr,
            )
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--minutes",
        type=float,
        default=10.0,
        help="of both recorders alive, per run (the faults add about a minute)",
    )
    ap.add_argument("--transport", choices=["tcp", "udp"], default="tcp")
    ap.add_argument("--camera-config", help="JSON object merged into the camera's config")
    ap.add_argument("--sweep", action="store_true", help="run several camera configs")
    ap.add_argument(
        "--sweep-configs", help=f"JSON list of camera configs (default {DEFAULT_SWEEP})"
    )
    ap.add_argument("--no-freeze", dest="freeze", action="store_false", help="skip the freeze")
    ap.add_argument("--rtt-ms", type=float, default=80.0)
    ap.add_argument("--jitter-ms", type=float, default=20.0)
    ap.add_argument("--stall-every", type=float, default=10.0)
    ap.add_argument("--stall-ms", type=float, default=300.0)
    ap.add_argument("--udp-loss", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--role", choices=["bench", "client"], default="bench")
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role == "client":
        client_main(a)
    else:
        import uvloop

        uvloop.run(main(a))
