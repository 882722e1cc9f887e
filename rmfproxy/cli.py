"""Command line: run, check, sim, fault, demo, coverage, plan, consolidate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import tempfile
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from rmfproxy import __version__
from rmfproxy.config import ConfigError, load_config, load_document, parse_config
from rmfproxy.log import configure_logging


def _size(value: str) -> tuple[int, int]:
    w, _, h = value.lower().partition("x")
    if not (w.isdigit() and h.isdigit()) or int(w) < 16 or int(h) < 16:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {value!r}")
    return int(w), int(h)


def _recorder(value: str) -> tuple[str, int]:
    name, _, port = value.partition(":")
    if not name or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"recorder must be NAME:PORT, got {value!r}")
    return name, int(port)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    p = argparse.ArgumentParser(prog="rmfproxy", description=__doc__)
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve every configured camera")
    run.add_argument("--config", required=True, help="YAML configuration file")

    check = sub.add_parser("check", help="validate a configuration file")
    check.add_argument("--config", required=True, help="YAML configuration file")

    sim = sub.add_parser("sim", help="simulated cameras served by simulated recorders")
    add_sim_arguments(sim)

    fault = sub.add_parser("fault", help="inject a fault into a running 'rmfproxy sim'")
    fault.add_argument("--control", default="127.0.0.1:8600", help="the sim's control HOST:PORT")
    fault.add_argument("recorder")
    fault.add_argument(
        "fault",
        help="close, freeze, unfreeze, stall, unstall, delay, drop, corrupt, restart, clear",
    )
    fault.add_argument(
        "value",
        nargs="?",
        type=float,
        default=0.0,
        help="seconds (delay, restart) or fraction (drop, corrupt)",
    )

    cov = sub.add_parser(
        "coverage",
        help="which recorder covered which time (reads the coverage journal; works while "
        "the proxy runs)",
    )
    cov.add_argument("--config", required=True, help="YAML configuration file")
    cov.add_argument("--camera", required=True, help="camera id")
    cov.add_argument(
        "--since",
        default="1h",
        help="start: a duration ago (90m, 1h, 2d) or an ISO 8601 time with timezone",
    )
    cov.add_argument("--until", default=None, help="end, same forms (default: now)")
    cov.add_argument("--json", action="store_true", help="the API's JSON instead of a table")

    from rmfproxy.manage.commands import add_consolidate_arguments, add_plan_arguments

    add_plan_arguments(
        sub.add_parser(
            "plan",
            help="what each recorder or site failure does to the cameras (M:N coverage, "
            "capacity); exit 1 when a single failure leaves a camera uncovered",
        )
    )
    add_consolidate_arguments(
        sub.add_parser(
            "consolidate",
            help="merge several sites' configurations into one (cameras by identity, "
            "users' rights kept)",
        )
    )

    demo = sub.add_parser("demo", help="simulated recorders, the proxy, and a URL to watch")
    demo.add_argument("--port", type=int, default=8554, help="proxy RTSP port")
    demo.add_argument(
        "--api-port", type=int, default=9100, help="admin port (status page, metrics)"
    )
    demo.add_argument("--size", type=_size, default=(640, 360))
    demo.add_argument("--codec", choices=["h264", "h265"], default="h264")
    return p


def add_sim_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by ``sim`` and the tests' simulator launcher."""
    p.add_argument(
        "--recorder",
        action="append",
        type=_recorder,
        default=None,
        help="NAME:PORT of a simulated recorder (repeatable; default r1:8601 r2:8602)",
    )
    p.add_argument(
        "--camera",
        action="append",
        default=None,
        help="camera id served by every recorder (repeatable; default lobby)",
    )
    p.add_argument("--codec", choices=["h264", "h265"], default="h264")
    p.add_argument("--size", type=_size, default=(640, 360), help="WIDTHxHEIGHT")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--gop", type=int, default=25, help="frames between keyframes")
    p.add_argument("--bitrate", type=int, default=1_000_000, help="bits per second")
    p.add_argument("--seconds", type=float, default=8.0, help="length of the looped clip")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help="recorder NAME that serves a differently encoded copy (repeatable)",
    )
    p.add_argument(
        "--control",
        default="127.0.0.1:8600",
        help="HOST:PORT of the HTTP fault-control API ('' to disable)",
    )
    from rmfproxy.sim.wan import add_impairment_arguments

    wan = p.add_argument_group(
        "WAN impairment",
        "put each recorder behind its own impaired link (rmfproxy.sim.wan); the URLs "
        "printed are the links'",
    )
    add_impairment_arguments(wan, "wan-")


def _run_async(factory: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await factory(stop)

    return uvloop.run(main())


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a configuration; print every problem with its field."""
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    sources = sum(len(c.sources) for c in cfg.cameras.values())
    rtsps = f", rtsps {cfg.rtsp.tls.listen}" if cfg.rtsp.tls is not None else ""
    print(
        f"ok: {len(cfg.cameras)} camera(s), {sources} source(s), "
        f"rtsp {cfg.rtsp.listen or 'off'}{rtsps}, api {cfg.api.listen}"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the proxy until SIGINT/SIGTERM; SIGHUP re-reads the configuration file."""
    try:
        document = load_document(args.config)
        cfg = parse_config(document)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    configure_logging(cfg.log.format, cfg.log.level)
    from rmfproxy.app import ListenError, Proxy
    from rmfproxy.archive.store import JournalError

    async def run(stop: asyncio.Event) -> int:
        proxy = Proxy(cfg, document=document, path=Path(args.config))
        try:
            await proxy.start()
        except (ListenError, JournalError) as exc:
            print(f"rmfproxy: {exc}", file=sys.stderr)
            return 2
        reloads: set[asyncio.Task[object]] = set()

        def reload() -> None:
            # the configuration file, then the RTSPS certificate (renewed in place)
            task = asyncio.create_task(proxy.reload(), name="config-reload")
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, reload)
        try:
            await stop.wait()
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            await proxy.stop()
        return 0

    return _run_async(run)


def cmd_sim(args: argparse.Namespace) -> int:
    """Run simulated recorders until SIGINT/SIGTERM."""
    configure_logging("auto", "info")
    from rmfproxy.sim.runner import SimSpec, run_sim

    try:
        spec = SimSpec.from_args(args)
    except ValueError as exc:
        print(f"rmfproxy sim: {exc}", file=sys.stderr)
        return 2

    async def run(stop: asyncio.Event) -> int:
        await run_sim(spec, stop, announce=print)
        return 0

    return _run_async(run)


def cmd_fault(args: argparse.Namespace) -> int:
    """Send one fault to a running simulator."""
    body = json.dumps({"recorder": args.recorder, "fault": args.fault, "value": args.value})
    req = urllib.request.Request(
        f"http://{args.control}/fault",
        data=body.encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            print(resp.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        print(f"fault refused: {exc.read().decode()}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot reach the simulator at {args.control}: {exc}", file=sys.stderr)
        return 1


def cmd_coverage(args: argparse.Namespace) -> int:
    """Print a camera's coverage report from the journal file (read-only)."""
    import sqlite3
    import time

    from rmfproxy.archive.report import CoverageReport, parse_time
    from rmfproxy.archive.store import JournalError, JournalStore
    from rmfproxy.config import parse_duration

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    cam = cfg.cameras.get(args.camera)
    if cam is None:
        print(f"rmfproxy: no camera {args.camera!r} in {args.config}", file=sys.stderr)
        return 1
    if cfg.archive.journal is None:
        print(f"rmfproxy: archive.journal is not configured in {args.config}", file=sys.stderr)
        return 1
    now = time.time()

    def when(option: str, value: str) -> float:
        try:
            return now - parse_duration(value)
        except ValueError:
            pass
        try:
            return parse_time(value)
        except ValueError:
            raise ValueError(
                f"{option} {value!r}: give a duration ago (90m, 1h, 2d) or an ISO 8601 time "
                "with timezone (2026-11-26T09:00:00Z)"
            ) from None

    try:
        start = when("--since", args.since)
        end = now if args.until is None else when("--until", args.until)
    except ValueError as exc:
        print(f"rmfproxy: {exc}", file=sys.stderr)
        return 1
    if end <= start:
        print("rmfproxy: --until must be later than --since", file=sys.stderr)
        return 1
    try:
        store = JournalStore.open(cfg.archive.journal, readonly=True)
        try:
            stored = store.intervals(args.camera, start, end)
        finally:
            store.close()
    except (JournalError, sqlite3.Error) as exc:
        print(f"rmfproxy: {exc}", file=sys.stderr)
        return 1
    names = [cam.source_name(i) for i in range(len(cam.sources))]
    per = {n: stored.get(n, []) for n in names} | stored
    report = CoverageReport.build(args.camera, start, end, per)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.to_text())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulated recorders plus the proxy in one process."""
    from rmfproxy.sim.demo import run_demo

    log_path = None
    with contextlib.ExitStack() as stack:
        if sys.stdout.isatty():
            # The live view redraws the terminal: log lines go to a file, not across it.
            log_path = Path(tempfile.gettempdir()) / "rmfproxy-demo.log"
            log_file = stack.enter_context(log_path.open("w", buffering=1, encoding="utf-8"))
            configure_logging("console", "warning", file=log_file)
        else:
            configure_logging("console", "warning")

        async def run(stop: asyncio.Event) -> int:
            await run_demo(
                stop,
                port=args.port,
                api_port=args.api_port,
                size=args.size,
                codec=args.codec,
                log_path=log_path,
            )
            return 0

        return _run_async(run)


def cmd_plan(args: argparse.Namespace) -> int:
    """M:N coverage plan of a configuration (reads no secret)."""
    from rmfproxy.manage.commands import cmd_plan as plan

    return plan(args)


def cmd_consolidate(args: argparse.Namespace) -> int:
    """Merge site configurations (reads no secret)."""
    from rmfproxy.manage.commands import cmd_consolidate as merge

    return merge(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rmfproxy`` console script."""
    args = build_parser().parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": cmd_run,
        "check": cmd_check,
        "sim": cmd_sim,
        "fault": cmd_fault,
        "demo": cmd_demo,
        "coverage": cmd_coverage,
        "plan": cmd_plan,
        "consolidate": cmd_consolidate,
    }
    return handlers[args.command](args)
