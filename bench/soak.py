"""Soak benchmark: many cameras, forced failovers every minute, for an hour; does the proxy leak?

    .venv/bin/python bench/soak.py [--cameras 50] [--duration 3600] [--failover-every 60]
                                   [--out docs/bench/soak-DATE.json]

Three processes besides this one: the simulator (``rmfproxy sim``: two recorders, r1 and
r2, each serving every camera), the proxy (``rmfproxy run`` with both recorders as the
sources of every camera) and the clients (this script with ``--role clients``): one
client per camera, all but ``--decoded`` of them light readers that count packets and
the simulator's frame counters without decoding (RTSP over TCP, keepalive by
GET_PARAMETER); the other ``--decoded`` decode with FFmpeg (PyAV) for decode errors.

Every ``--failover-every`` seconds the recorder most cameras are playing from is frozen
(RTP stops, TCP stays open) through the sim's control API for ``--freeze-for`` seconds,
then thawed; the proxy fails over to the other recorder, and back to the primary after
``failback_hold`` once it is healthy again. Every ``--sample-every`` seconds the proxy's
RSS (VmRSS), open file descriptors and CPU time are sampled. The JSON report (written to
``--out`` after every sample, so a run cut short leaves its figures so far, and printed
at the end) holds the samples, the RSS growth after the warm-up (the first 5 minutes, or
a quarter of a shorter run), fd min/max after it, per-client disconnects, the switches
the proxy made (``rmfproxy_camera_switches_total``), and the decoded clients' decode
errors and lost/repeated frames. Child processes end with this one (also on Ctrl-C,
SIGTERM, an exception, or if this process dies: PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.relay import cpu_seconds, free_port, wait_rtsp
from rmfproxy.rtsp.message import Headers, Request, Response, StreamParser
from rmfproxy.rtsp.sdp import SessionDescription, resolve_control
from rmfproxy.sim.marker import RMF_UUID, find_marker

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 300.0
"""RSS growth and fd range are measured after this many seconds (a quarter of shorter runs)."""
READ_TIMEOUT = 10.0
"""A light client that receives nothing for this long counts a disconnect and reconnects."""
KEEPALIVE = 15.0


# --- the clients process ------------------------------------------------------------------


@dataclass
class LightStats:
    """What one light client saw (frames are the simulator's counters, not decoded)."""

    camera: str
    kind: str = "light"
    packets: int = 0
    bytes: int = 0
    frames: int = 0
    lost: int = 0
    repeated: int = 0
    max_gap_ms: float = 0.0
    disconnects: int = 0
    errors: list[str] = field(default_factory=list)
    last_counter: int = -1
    last_frame_at: float = 0.0

    def on_marker(self, counter: int, now: float) -> None:
        if counter == self.last_counter:
            return  # the marker of a frame already counted
        if self.last_counter >= 0:
            if counter > self.last_counter + 1:
                self.lost += counter - self.last_counter - 1
            elif counter < self.last_counter:
                self.repeated += 1
            self.max_gap_ms = max(self.max_gap_ms, (now - self.last_frame_at) * 1000)
        self.frames += 1
        self.last_counter = counter
        self.last_frame_at = now

    def disconnected(self, reason: str) -> None:
        self.disconnects += 1
        if len(self.errors) < 5:
            self.errors.append(f"{time.strftime('%H:%M:%S')} {reason}")
        # The next connection starts a new frame sequence: a gap across it is not a loss.
        self.last_counter = -1


async def light_session(url: str, stats: LightStats, deadline: float) -> None:
    """Play ``url`` over interleaved TCP until ``deadline``; raise on any disconnect."""
    host, _, port = url.split("/")[2].rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))

    def on_frame(channel: int, data: bytearray) -> None:
        if channel % 2:
            return
        stats.packets += 1
        stats.bytes += len(data)
        if RMF_UUID in data:
            m = find_marker(data)
            if m is not None:
                stats.on_marker(m[0], time.monotonic())

    parser = StreamParser(on_frame)
    cseq = 0
    session: str | None = None

    def send(method: str, uri: str, **headers: str) -> None:
        nonlocal cseq
        cseq += 1
        h = Headers({"CSeq": str(cseq), **{k.replace("_", "-"): v for k, v in headers.items()}})
        if session:
            h["Session"] = session
        writer.write(Request(method, uri, h).serialize())

    async def request(method: str, uri: str, **headers: str) -> Response:
        send(method, uri, **headers)
        while True:
            ev = parser.next_event()
            if isinstance(ev, Response):
                if ev.status != 200:
                    raise RuntimeError(f"{method}: {ev.status}")
                return ev
            data = await asyncio.wait_for(reader.read(65536), READ_TIMEOUT)
            if not data:
                raise RuntimeError(f"closed during {method}")
            parser.feed(data)

    try:
        resp = await request("DESCRIBE", url, Accept="application/sdp")
        sdp = SessionDescription.parse(resp.body.decode())
        base = resp.headers.get("Content-Base") or url
        for i, m in enumerate(sdp.media):
            r = await request(
                "SETUP",
                resolve_control(base, m.control),
                Transport=f"RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1}",
            )
            session = (r.headers.get("Session") or "").split(";")[0]
        await request("PLAY", resolve_control(base, sdp.control) if sdp.control else base)
        next_keepalive = time.monotonic() + KEEPALIVE
        while (now := time.monotonic()) < deadline:
            if now >= next_keepalive:
                send("GET_PARAMETER", url)
                next_keepalive = now + KEEPALIVE
            try:
                data = await asyncio.wait_for(reader.read(262144), READ_TIMEOUT)
            except TimeoutError:
                raise RuntimeError(f"no data for {READ_TIMEOUT:.0f} s") from None
            if not data:
                raise RuntimeError("connection closed by the proxy")
            parser.feed(data)
            while (ev := parser.next_event()) is not None:
                if isinstance(ev, Response) and ev.status != 200:
                    raise RuntimeError(f"keepalive answered {ev.status}")
    finally:
        writer.close()


async def light_client(url: str, stats: LightStats, deadline: float) -> None:
    """Keep a session on ``url`` until ``deadline``, counting (and surviving) disconnects."""
    while time.monotonic() < deadline - 1.0:
        try:
            await light_session(url, stats, deadline)
        except (OSError, RuntimeError, ValueError, TimeoutError) as exc:
            stats.disconnected(str(exc) or type(exc).__name__)
            await asyncio.sleep(1.0)


def decoded_json(camera: str, result: Any, ended_early: bool) -> dict[str, Any]:
    return {
        "camera": camera,
        "kind": "decoded",
        "frames_decoded": result.frames_decoded,
        "packets": result.packets,
        "decode_errors": result.decode_errors,
        "lost": result.lost(),
        "repeated": result.repeated(),
        "beyond_span": result.beyond_span(),
        "max_gap_ms": round(result.max_gap_seconds() * 1000, 1),
        "disconnects": 1 if (result.error is not None or ended_early) else 0,
        "errors": [result.error] if result.error else [],
        "stream_warnings": result.stream_warnings,
        "warnings": result.warnings[:5],
    }


def write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


async def clients_main(args: argparse.Namespace) -> None:
    """The clients process: one client per camera until the duration ends."""
    from rmfproxy.sim.probe import read_rtsp

    cams = camera_names(args.cameras)
    url = {c: f"rtsp://{args.proxy}/{c}" for c in cams}
    decoded = cams[: args.decoded]
    deadline = time.monotonic() + args.duration
    stats = {c: LightStats(c) for c in cams if c not in decoded}
    stop = threading.Event()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    lights = [asyncio.create_task(light_client(url[c], s, deadline)) for c, s in stats.items()]
    decoders = {
        c: asyncio.create_task(
            asyncio.to_thread(read_rtsp, url[c], seconds=args.duration + 60, stop=stop)
        )
        for c in decoded
    }
    out = Path(args.stats)

    def snapshot(final: bool, decoded_rows: list[dict[str, Any]]) -> None:
        rows = [
            {k: v for k, v in asdict(s).items() if k not in ("last_counter", "last_frame_at")}
            for s in stats.values()
        ]
        for r in rows:
            r["max_gap_ms"] = round(r["max_gap_ms"], 1)
        write_json(out, {"final": final, "light": rows, "decoded": decoded_rows})

    while time.monotonic() < deadline and not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), min(10.0, deadline - time.monotonic()))
        snapshot(False, [])
    # A decoded client whose session ended before the deadline was disconnected.
    early = {c: t.done() for c, t in decoders.items()}
    stop.set()
    for t in lights:
        t.cancel()
    await asyncio.gather(*lights, return_exceptions=True)
    results = {c: await t for c, t in decoders.items()}
    snapshot(True, [decoded_json(c, r, early[c]) for c, r in results.items()])


# --- the orchestrating process ------------------------------------------------------------


def camera_names(n: int) -> list[str]:
    return [f"cam{i + 1:03d}" for i in range(n)]


def die_with_parent() -> None:
    """In a child before exec: SIGTERM when this process dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=die_with_parent,
        )


def stop_process(proc: subprocess.Popen[bytes], wait: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def http(url: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return bytes(resp.read())


def proc_sample(pid: int) -> tuple[int, int]:
    """(VmRSS in kB, open file descriptors) of ``pid``."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


_SWITCH = re.compile(r"^rmfproxy_camera_switches_total\{([^}]*)\}\s+([0-9.e+]+)", re.M)


def switches(api: str) -> dict[str, Any]:
    """Switches by direction (failover, failback, ...) summed over cameras, and per camera."""
    text = http(f"{api}/metrics").decode()
    by_direction: dict[str, int] = {}
    by_reason: dict[str, int] = {}
    per_camera: dict[str, int] = {}
    for labels, value in _SWITCH.findall(text):
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        direction = lab.get("direction", "?")
        n = int(float(value))
        by_direction[direction] = by_direction.get(direction, 0) + n
        key = f"{direction}:{lab.get('reason', '?')}"
        by_reason[key] = by_reason.get(key, 0) + n
        if direction != "initial":
            per_camera[lab.get("camera", "?")] = per_camera.get(lab.get("camera", "?"), 0) + n
    return {"by_direction": by_direction, "by_reason": by_reason, "per_camera": per_camera}


def active_counts(api: str) -> dict[str, int]:
    """How many cameras play from each source."""
    counts: dict[str, int] = {}
    for cam in json.loads(http(f"{api}/api/v1/cameras"))["cameras"]:
        name = str(cam.get("active"))
        counts[name] = counts.get(name, 0) + 1
    return counts


def median_between(samples: list[dict[str, Any]], key: str, t0: float, t1: float) -> float | None:
    values = [s[key] for s in samples if t0 <= s["t"] <= t1]
    return statistics.median(values) if values else None


def log_summary(path: Path) -> dict[str, Any]:
    """The proxy log's lines by level and the first few warnings/errors (JSON lines)."""
    levels: dict[str, int] = {}
    events: dict[str, int] = {}
    first: list[str] = []
    with contextlib.suppress(OSError), path.open(errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
                level, event = str(rec.get("level", "?")), str(rec.get("event", "?"))
            except ValueError:
                level, event = "text", line.strip()[:80]
            levels[level] = levels.get(level, 0) + 1
            events[f"{level}:{event}"] = events.get(f"{level}:{event}", 0) + 1
            if level in ("warning", "error", "critical", "text") and len(first) < 10:
                first.append(line.strip()[:400])
    top = dict(sorted(events.items(), key=lambda kv: -kv[1])[:15])
    return {"lines_by_level": levels, "top_events": top, "first_warnings": first}


def summarize(
    args: argparse.Namespace,
    samples: list[dict[str, Any]],
    faults: list[dict[str, Any]],
    clients: dict[str, Any],
    switch_doc: dict[str, Any] | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    warm = min(WARMUP, args.duration / 4)
    after = [s for s in samples if s["t"] >= warm]
    at_warm = after[0] if after else None
    last = samples[-1] if samples else None
    growth = None
    if at_warm and last and last is not at_warm:
        growth = round((last["rss_kb"] - at_warm["rss_kb"]) / at_warm["rss_kb"] * 100, 2)
    t_end = last["t"] if last else 0.0
    early = median_between(samples, "rss_kb", warm, 2 * warm)
    late = median_between(samples, "rss_kb", max(2 * warm, t_end - warm), t_end)
    median_growth = None
    if early and late and t_end >= 3 * warm:
        median_growth = round((late - early) / early * 100, 2)
    cpu = None
    cpu_after = None
    if len(samples) >= 2:
        first = samples[0]
        cpu = round((last["cpu_s"] - first["cpu_s"]) / (last["t"] - first["t"]) * 100, 1)  # type: ignore[index]
        if at_warm and last is not at_warm:
            cpu_after = round(
                (last["cpu_s"] - at_warm["cpu_s"]) / (last["t"] - at_warm["t"]) * 100,  # type: ignore[index]
                1,
            )
    rows = clients.get("light", []) + clients.get("decoded", [])
    decoded = clients.get("decoded", [])
    by_dir = (switch_doc or {}).get("by_direction", {})
    per_cam = (switch_doc or {}).get("per_camera", {})
    return {
        "benchmark": "soak",
        "complete": extra.pop("complete", False),
        "config": {
            "cameras": args.cameras,
            "duration_s": args.duration,
            "failover_every_s": args.failover_every,
            "freeze_for_s": args.freeze,
            "failback_hold_s": args.failback_hold,
            "size": args.size,
            "fps": args.fps,
            "bitrate": args.bitrate,
            "decoded_clients": args.decoded,
            "sample_every_s": args.sample_every,
            "warmup_s": warm,
            "cpus": os.cpu_count(),
        },
        **extra,
        "rss_kb_at_warmup": at_warm["rss_kb"] if at_warm else None,
        "rss_kb_last": last["rss_kb"] if last else None,
        "rss_growth_pct": growth,
        "rss_kb_median_early": early,
        "rss_kb_median_late": late,
        "rss_median_growth_pct": median_growth,
        "fds_min_after_warmup": min((s["fds"] for s in after), default=None),
        "fds_max_after_warmup": max((s["fds"] for s in after), default=None),
        "proxy_cpu_percent": cpu,
        "proxy_cpu_percent_after_warmup": cpu_after,
        "faults_injected": len(faults),
        "failovers": by_dir.get("failover", 0),
        "switches_by_direction": by_dir,
        "switches_by_reason": (switch_doc or {}).get("by_reason", {}),
        "switches_per_camera_min": min(per_cam.values(), default=0),
        "switches_per_camera_max": max(per_cam.values(), default=0),
        "client_disconnects_total": sum(r["disconnects"] for r in rows),
        "client_disconnects": {r["camera"]: r["disconnects"] for r in rows},
        "light_frames_lost_total": sum(r["lost"] for r in clients.get("light", [])),
        "light_frames_repeated_total": sum(r["repeated"] for r in clients.get("light", [])),
        "light_max_gap_ms": max((r["max_gap_ms"] for r in clients.get("light", [])), default=None),
        "decode_errors": sum(r["decode_errors"] for r in decoded) if decoded else None,
        "decoded_frames_lost": sum(r["lost"] for r in decoded) if decoded else None,
        "decoded_frames_repeated": sum(r["repeated"] for r in decoded) if decoded else None,
        "clients": rows,
        "faults": faults,
        "samples": samples,
    }


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    cams = camera_names(args.cameras)
    py = sys.executable
    work = Path(tempfile.mkdtemp(prefix="rmfproxy-soak-"))
    out = Path(args.out) if args.out else None
    p1, p2, pc, prtsp, papi = (free_port() for _ in range(5))
    api = f"http://127.0.0.1:{papi}"
    control = f"http://127.0.0.1:{pc}"
    procs: list[subprocess.Popen[bytes]] = []
    samples: list[dict[str, Any]] = []
    faults: list[dict[str, Any]] = []
    clients: dict[str, Any] = {}
    extra: dict[str, Any] = {"work_dir": str(work)}
    switch_doc: dict[str, Any] | None = None

    def report(complete: bool = False) -> dict[str, Any]:
        doc = summarize(args, samples, faults, clients, switch_doc, {**extra, "complete": complete})
        if out is not None:
            write_json(out, doc)
        return doc

    def log(msg: str) -> None:
        print(f"soak {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    try:
        sim_cmd = [py, "-m", "rmfproxy", "sim", "--recorder", f"r1:{p1}", "--recorder", f"r2:{p2}"]
        sim_cmd += ["--size", args.size, "--fps", str(args.fps), "--gop", str(args.fps)]
        sim_cmd += ["--bitrate", str(args.bitrate), "--seconds", "4"]
        sim_cmd += ["--control", f"127.0.0.1:{pc}"]
        for c in cams:
            sim_cmd += ["--camera", c]
        sim = spawn(sim_cmd, work / "sim.log")
        procs.append(sim)
        for p in (p1, p2):
            asyncio.run(wait_rtsp(f"rtsp://127.0.0.1:{p}/{cams[-1]}", 300))
        log(f"simulator up: {len(cams)} cameras on r1:{p1} r2:{p2}")
        config = {
            "rtsp": {"listen": f"127.0.0.1:{prtsp}"},
            "api": {"listen": f"127.0.0.1:{papi}"},
            "log": {"format": "json", "level": "info"},
            "cameras": {
                c: {
                    "failback_hold": args.failback_hold,
                    "sources": [
                        {"url": f"rtsp://127.0.0.1:{p1}/{c}", "name": "r1"},
                        {"url": f"rtsp://127.0.0.1:{p2}/{c}", "name": "r2"},
                    ],
                }
                for c in cams
            },
        }
        cfg = work / "rmfproxy.yaml"
        cfg.write_text(json.dumps(config, indent=1))  # JSON is YAML
        proxy = spawn([py, "-m", "rmfproxy", "run", "--config", str(cfg)], work / "proxy.log")
        procs.append(proxy)
        extra["proxy_log"] = str(work / "proxy.log")
        for c in cams:
            asyncio.run(wait_rtsp(f"rtsp://127.0.0.1:{prtsp}/{c}", 120))
        log("proxy ready")
        stats_file = work / "clients.json"
        client_cmd = [py, str(Path(__file__).resolve()), "--role", "clients"]
        client_cmd += ["--proxy", f"127.0.0.1:{prtsp}", "--cameras", str(args.cameras)]
        client_cmd += ["--decoded", str(args.decoded), "--duration", str(args.duration)]
        client_cmd += ["--stats", str(stats_file)]
        workers = spawn(client_cmd, work / "clients.log")
        procs.append(workers)
        t0 = time.monotonic()
        extra["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        next_sample = 0.0
        next_fault = float(args.failover_every)
        thaw: tuple[float, str] | None = None
        api_errors: list[str] = []
        extra["api_errors"] = api_errors

        def api_error(what: str, exc: Exception) -> None:
            # A slow answer from a loaded machine is a finding, not the end of the run.
            api_errors.append(f"t={time.monotonic() - t0:.1f} {what}: {exc!r}")

        def fault(recorder: str, name: str) -> bool:
            for attempt in range(3):
                try:
                    http(f"{control}/fault", {"recorder": recorder, "fault": name}, timeout=10)
                    return True
                except OSError as exc:
                    api_error(f"sim {name} {recorder} (try {attempt + 1})", exc)
            return False

        cpu_sim0, cpu_clients0 = cpu_seconds(sim.pid), cpu_seconds(workers.pid)
        while True:
            t = time.monotonic() - t0
            if thaw is not None and t >= thaw[0]:
                if fault(thaw[1], "unfreeze"):
                    faults[-1]["thawed_t"] = round(t, 1)
                thaw = None
            if t >= next_fault and t < args.duration - 1:
                try:
                    counts = active_counts(api)
                    target = max(("r1", "r2"), key=lambda r: counts.get(r, 0))
                except (OSError, ValueError, KeyError) as exc:
                    # Without the proxy's answer, freeze the recorder not frozen last time.
                    api_error("/api/v1/cameras", exc)
                    counts = {}
                    target = "r2" if faults and faults[-1]["recorder"] == "r1" else "r1"
                if not fault(target, "freeze"):
                    next_fault += args.failover_every
                    continue
                faults.append({"t": round(t, 1), "recorder": target, "active_before": counts})
                thaw = (t + args.freeze, target)
                next_fault += args.failover_every
            if t >= next_sample:
                if proxy.poll() is not None:
                    raise RuntimeError(f"the proxy exited with {proxy.returncode}")
                rss, fds = proc_sample(proxy.pid)
                sample = {"t": round(t, 1), "rss_kb": rss, "fds": fds}
                sample["cpu_s"] = cpu_seconds(proxy.pid)
                with contextlib.suppress(OSError, ValueError):
                    clients = json.loads(stats_file.read_text())
                try:
                    switch_doc = switches(api)
                except (OSError, ValueError) as exc:
                    api_error("/metrics", exc)
                else:
                    by_dir = switch_doc["by_direction"]
                    sample["failovers"] = by_dir.get("failover", 0)
                    sample["failbacks"] = by_dir.get("failback", 0)
                samples.append(sample)
                extra["sim_cpu_percent"] = round((cpu_seconds(sim.pid) - cpu_sim0) / t * 100, 1)
                extra["clients_cpu_percent"] = round(
                    (cpu_seconds(workers.pid) - cpu_clients0) / t * 100, 1
                )
                report()
                next_sample += args.sample_every
            if workers.poll() is not None:
                break
            if t > args.duration + 120:
                raise RuntimeError("the clients did not finish in time")
            time.sleep(0.2)
        if thaw is not None:
            fault(thaw[1], "unfreeze")
        clients = json.loads(stats_file.read_text())
        try:
            switch_doc = switches(api)
            extra["cameras_api_sample"] = json.loads(http(f"{api}/api/v1/cameras"))["cameras"][0]
        except (OSError, ValueError, KeyError) as exc:
            api_error("final /metrics or /api/v1/cameras", exc)
        stop_process(proxy)
        extra["proxy_exit_code"] = proxy.returncode
        extra["proxy_log_summary"] = log_summary(work / "proxy.log")
        log("done")
        return report(complete=True)
    except BaseException as exc:
        extra["aborted"] = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):
            extra["proxy_log_summary"] = log_summary(work / "proxy.log")
        report()
        raise
    finally:
        for child in reversed(procs):
            stop_process(child)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", type=int, default=50)
    ap.add_argument("--duration", type=float, default=3600.0, help="seconds")
    ap.add_argument("--failover-every", type=float, default=60.0, help="seconds")
    ap.add_argument("--freeze", type=float, help="seconds a fault lasts (a third of the period)")
    ap.add_argument("--failback-hold", type=float, default=5.0)
    ap.add_argument("--out", help="JSON report, rewritten after every sample")
    ap.add_argument("--decoded", type=int, default=2, help="clients that decode (PyAV)")
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--bitrate", type=int, default=300_000)
    ap.add_argument("--sample-every", type=float, default=10.0)
    ap.add_argument("--role", choices=["orchestrator", "clients"], default="orchestrator")
    ap.add_argument("--proxy", help=argparse.SUPPRESS)
    ap.add_argument("--stats", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "clients":
        import uvloop

        uvloop.run(clients_main(args))
        return
    if args.freeze is None:
        args.freeze = args.failover_every / 3

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    doc = orchestrate(args)
    print(json.dumps({k: v for k, v in doc.items() if k != "samples"}, indent=2))


if __name__ == "__main__":
    main()
