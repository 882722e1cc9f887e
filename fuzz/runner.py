"""Runs fuzz inputs through a target and records what the brief asks for: inputs run,
crashes, invariant failures and the slowest inputs.

An exception escaping a target's ``test_one_input`` is a crash (the target
already suppressed the parser's documented rejection); an
:class:`~fuzz.targets.InvariantError` is an invariant failure. Both are
deduplicated by a signature (kind, exception type, innermost rmfproxy file and
function: line numbers move while owners edit), keeping the smallest input.

Parse time is taken per input with ``perf_counter`` (wall clock, cheap) around
the whole harness; the slowest inputs, and every input over the bound, are kept
and re-timed at the end as the minimum CPU time (``process_time``) over several
runs of the target's ``timed`` function (the parse alone), so neither a
scheduler pause on a shared machine nor the harness's cross-checks count as a
slow parse. This module imports nothing of rmfproxy, so
the atheris engine can instrument rmfproxy when the target imports it.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import importlib
import json
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from fuzz.targets import NAMES, InvariantError

FUZZ_DIR = Path(__file__).resolve().parent
REPO = FUZZ_DIR.parent
BOUND_MS = 10.0
"""The hardening issue's bound: no input may take longer to parse."""
MAX_OVER_BOUND_KEPT = 64


@dataclass
class Finding:
    """One distinct crash or invariant failure, with the smallest input that shows it."""

    kind: str
    """``crash`` (an undocumented exception) or ``invariant``."""
    signature: str
    exc_type: str
    message: str
    location: str
    """``file:line in function`` of the innermost rmfproxy frame (else the innermost frame)."""
    count: int = 0
    data: bytes = field(default=b"", repr=False)
    trace: str = field(default="", repr=False)


def load_target(name: str) -> ModuleType:
    """The target module ``fuzz.targets.<name>``."""
    if name not in NAMES:
        raise SystemExit(f"unknown target {name!r}; targets: {', '.join(NAMES)}")
    return importlib.import_module(f"fuzz.targets.{name}")


def load_corpus(path: Path) -> list[bytes]:
    """Every file of a corpus directory, in name order (empty if it does not exist)."""
    if not path.is_dir():
        return []
    return [p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()]


def _rel(filename: str) -> str:
    try:
        return str(Path(filename).resolve().relative_to(REPO))
    except ValueError:
        return filename


def classify(exc: BaseException) -> tuple[str, str, str]:
    """``(kind, signature, location)`` of an exception a target let escape."""
    kind = "invariant" if isinstance(exc, InvariantError) else "crash"
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/rmfproxy/" in f.filename]
    frame = (ours or frames)[-1] if frames else None
    if frame is None:
        return kind, f"{kind}:{type(exc).__name__}", "?"
    rel = _rel(frame.filename)
    location = f"{rel}:{frame.lineno} in {frame.name}"
    if kind == "invariant":
        # Every check goes through one helper: the property it names tells them apart.
        caller = frames[-2] if len(frames) > 1 and frame.name == "check" else frame
        location = f"{_rel(caller.filename)}:{caller.lineno} in {caller.name}"
        return kind, f"{kind}:{_rel(caller.filename)}:{str(exc)[:80]}", location
    return kind, f"{kind}:{type(exc).__name__}:{rel}:{frame.name}", location


def timed_function(module: ModuleType) -> Any:
    """What a target's parse time is: its ``timed(data)`` if it has one (the parse alone,
    without the harness's cross-checks), else ``test_one_input``."""
    return getattr(module, "timed", module.test_one_input)


def cpu_time_ms(fn: Any, data: bytes, repeats: int = 5) -> float:
    """The minimum CPU time of ``fn(data)`` over ``repeats`` calls, exceptions ignored."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time_ns()
        with contextlib.suppress(Exception):
            fn(data)
        best = min(best, (time.process_time_ns() - t0) / 1e6)
    return best


def _provenance() -> dict[str, Any]:
    """Which rmfproxy code is under test: HEAD, and the loaded modules that differ from it
    (others edit the tree while long runs go)."""
    files = sorted(
        _rel(m.__file__)
        for name, m in list(sys.modules.items())
        if name.startswith("rmfproxy") and getattr(m, "__file__", None)
    )
    out: dict[str, Any] = {"files": files}
    try:
        git = ["git", "-C", str(REPO)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True)
        dirty = subprocess.run(
            [*git, "diff", "--name-only", "HEAD", "--", *files], capture_output=True
        )
        out["git_head"] = head.stdout.decode().strip()
        out["modified_since_head"] = dirty.stdout.decode().split()
    except OSError:
        pass
    return out


class Runner:
    """Feeds inputs to one target and keeps the statistics of the run."""

    def __init__(self, name: str, module: ModuleType, keep_slowest: int = 8) -> None:
        self.name = name
        self.module = module
        self.fn = module.test_one_input
        self.timed = timed_function(module)
        self.inputs = 0
        self.crashes = 0
        self.invariant_failures = 0
        self.over_bound_wall = 0
        """Inputs whose wall-clock time exceeded the bound (noisy; see ``retime``)."""
        self.findings: dict[str, Finding] = {}
        self._slowest: list[tuple[int, int, bytes]] = []  # min-heap (ns, serial, data)
        self._keep = keep_slowest
        self._over: list[bytes] = []  # inputs over the bound by wall clock, re-timed at the end
        self.provenance = _provenance()
        self.started = time.monotonic()
        self.cpu_started = time.process_time()

    def run_one(self, data: bytes) -> None:
        """Run one input; never raises (except KeyboardInterrupt/SystemExit)."""
        self.inputs += 1
        t0 = time.perf_counter_ns()
        try:
            self.fn(data)
        except Exception as exc:
            self._record(exc, data)
        ns = time.perf_counter_ns() - t0
        if ns > BOUND_MS * 1e6:
            self.over_bound_wall += 1
            if len(self._over) < MAX_OVER_BOUND_KEPT:
                self._over.append(data)
        heap = self._slowest
        if len(heap) < self._keep:
            heapq.heappush(heap, (ns, self.inputs, data))
        elif ns > heap[0][0]:
            heapq.heapreplace(heap, (ns, self.inputs, data))

    def _record(self, exc: Exception, data: bytes) -> None:
        kind, sig, location = classify(exc)
        if kind == "crash":
            self.crashes += 1
        else:
            self.invariant_failures += 1
        f = self.findings.get(sig)
        if f is None:
            f = self.findings[sig] = Finding(
                kind, sig, type(exc).__name__, str(exc)[:200], location, data=data
            )
            f.trace = "".join(traceback.format_exception(exc))
        elif len(data) < len(f.data):
            f.data, f.message, f.location = data, str(exc)[:200], location
            f.trace = "".join(traceback.format_exception(exc))
        f.count += 1

    def slowest(self) -> list[tuple[float, bytes]]:
        """The kept slowest inputs as ``(wall ms, data)``, slowest first."""
        return [(ns / 1e6, d) for ns, _, d in sorted(self._slowest, reverse=True)]

    def retime(self, repeats: int = 5) -> list[tuple[float, bytes]]:
        """The kept slowest inputs and those over the bound by wall clock, re-timed in this
        process as ``(min CPU ms, data)``, slowest first."""
        kept = [d for _, d in self.slowest()]
        inputs = kept + [d for d in self._over if d not in kept]
        out = [(cpu_time_ms(self.timed, d, repeats), d) for d in inputs]
        return sorted(out, key=lambda t: -t[0])

    def stats(self, retimed: list[tuple[float, bytes]] | None = None) -> dict[str, Any]:
        """A JSON-able summary of the run."""
        elapsed = time.monotonic() - self.started
        cpu = time.process_time() - self.cpu_started
        slow = self.slowest()
        out: dict[str, Any] = {
            "target": self.name,
            "inputs": self.inputs,
            "crashes": self.crashes,
            "invariant_failures": self.invariant_failures,
            "distinct_findings": len(self.findings),
            "elapsed_s": round(elapsed, 1),
            "cpu_s": round(cpu, 1),
            "inputs_per_s": round(self.inputs / elapsed) if elapsed > 0 else None,
            "inputs_per_cpu_s": round(self.inputs / cpu) if cpu > 0 else None,
            "slowest_wall_ms": round(slow[0][0], 3) if slow else None,
            "slowest_wall_len": len(slow[0][1]) if slow else None,
            "over_bound_wall": self.over_bound_wall,
            "provenance": self.provenance,
            "findings": [
                {k: v for k, v in asdict(f).items() if k not in ("data", "trace")}
                | {"input_len": len(f.data)}
                for f in self.findings.values()
            ],
        }
        if retimed is not None:
            out["slowest_cpu_ms"] = round(retimed[0][0], 3) if retimed else None
            out["slowest_cpu_len"] = len(retimed[0][1]) if retimed else None
            out["over_bound_cpu"] = sum(1 for ms, _ in retimed if ms > BOUND_MS)
        return out

    def save(self, work: Path, stats: dict[str, Any]) -> None:
        """Write the stats, every finding's smallest input and trace, the slowest inputs and
        those over the bound by wall clock."""
        work.mkdir(parents=True, exist_ok=True)
        (work / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        crashes = work / "crashes"
        for f in self.findings.values():
            crashes.mkdir(exist_ok=True)
            slug = f"{f.kind}-{f.exc_type}-{hashlib.sha1(f.signature.encode()).hexdigest()[:10]}"
            (crashes / f"{slug}.bin").write_bytes(f.data)
            (crashes / f"{slug}.txt").write_text(f"{f.signature}\n\n{f.trace}")
        slow = work / "slowest"
        slow.mkdir(exist_ok=True)
        for old in slow.iterdir():
            old.unlink()
        for i, (ms, d) in enumerate(self.slowest()):
            (slow / f"{i:02d}-{ms:.2f}ms.bin").write_bytes(d)
        over = work / "over_bound"
        over.mkdir(exist_ok=True)
        for i, d in enumerate(self._over):
            (over / f"{i:02d}.bin").write_bytes(d)
