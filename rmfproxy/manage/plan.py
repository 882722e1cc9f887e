"""M→N coverage planner: what the failure of each recorder, and of each site, does.

Theory of operation.

- **Input.** A validated configuration (secrets are not read: the planner works from
  the file alone, :func:`rmfproxy.config.parse_config_offline`) seen as a
  :class:`~rmfproxy.manage.topology.Topology`: each camera's sources in priority order,
  each source on a recorder, each recorder maybe in a site and maybe with a capacity.
- **Load is what a recorder serves to the proxy.** The proxy pulls every source of
  every camera at once (the standbys are hot, so a switch needs no new connection).
  A recorder therefore serves one stream per camera source it carries, *all the time*:
  its load is that number of streams and the sum of those cameras' ``bitrate_mbps``
  (default 4). A failover moves the *active* role to a standby the recorder already
  serves, it adds no stream: after a failure every surviving recorder carries exactly
  its normal load. Capacity is therefore checked once, on the normal load, and holds
  or fails alike in every scenario the recorder survives; what a failure changes, and
  what each scenario reports besides, is how many cameras each recorder is now the
  *active* source of (``active``). A recorder over its capacity is an error.
- **Scenarios.** One per recorder (it alone fails) and one per declared site (all its
  recorders fail together). In each, every camera is served by its first source in
  priority order whose recorder survives; a camera whose active source (normally its
  first) is on a failed recorder *fails over* to that source, or is *uncovered* when
  none is left.
- **Verdict.** Errors decide the exit code of ``rmfproxy plan``: a camera left without
  a source by a single-recorder failure, a recorder over capacity, and with
  ``strict_sites`` a camera left without a source by a site failure (otherwise such a
  site finding is a warning: sites are reported, flagged, and only decide when asked).
  Notes say what the planner had to assume (recorders named by ``host:port``, unknown
  capacities, pending cameras).
- **Suggestion** (:mod:`rmfproxy.manage.suggest`): the fewest new redundant recorders
  that would leave no error; the configuration with them is planned again and the
  errors it would still have are reported with it (none, unless some demand could not
  be placed or a recorder is overloaded by its primaries).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Literal

from rmfproxy.config import Config
from rmfproxy.manage.suggest import SpareSpec, Suggestion, apply_suggestion, suggest_spares
from rmfproxy.manage.topology import Capacity, Topology

Severity = Literal["error", "warning", "note"]

LOAD_MODEL = (
    "load = streams a recorder serves to the proxy: every source of every camera is "
    "pulled at once (hot standby), so a failover adds no stream to any recorder"
)


@dataclass(frozen=True)
class Finding:
    """One thing the planner found."""

    severity: Severity
    """``error`` decides the exit code; ``warning`` and ``note`` do not."""
    kind: str
    """``uncovered``, ``site-uncovered``, ``over-capacity``, ``capacity-unknown``,
    ``recorder-undeclared``, ``recorder-unused``, ``no-sites``, ``pending``."""
    message: str
    cameras: tuple[str, ...] = ()
    recorders: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The finding as JSON data."""
        return {
            "severity": self.severity,
            "kind": self.kind,
            "message": self.message,
            "cameras": list(self.cameras),
            "recorders": list(self.recorders),
        }


@dataclass(frozen=True)
class Load:
    """What one recorder carries."""

    recorder: str
    site: str | None
    streams: int
    """Streams it serves to the proxy (one per camera source on it)."""
    mbps: float
    active: int
    """Cameras it is the active source of."""
    capacity: Capacity
    over: tuple[str, ...]
    """How the load exceeds the capacity (empty: within it, or capacity unknown)."""

    def to_json(self) -> dict[str, Any]:
        """The load as JSON data."""
        return {
            "recorder": self.recorder,
            "site": self.site,
            "streams": self.streams,
            "mbps": round(self.mbps, 3),
            "active": self.active,
            "capacity": self.capacity.to_json() if self.capacity.known else None,
            "over_capacity": list(self.over),
        }


@dataclass(frozen=True)
class Failover:
    """A camera whose active source was on a failed recorder."""

    camera: str
    from_source: str
    from_recorder: str
    to_source: str | None
    """The source it continues on (None: no source left, the camera is uncovered)."""
    to_recorder: str | None

    def to_json(self) -> dict[str, Any]:
        """The failover as JSON data."""
        to = None
        if self.to_source is not None:
            to = {"source": self.to_source, "recorder": self.to_recorder}
        return {
            "camera": self.camera,
            "from": {"source": self.from_source, "recorder": self.from_recorder},
            "to": to,
        }


@dataclass(frozen=True)
class Scenario:
    """One failure: a recorder, or every recorder of a site."""

    kind: Literal["recorder", "site"]
    name: str
    failed: tuple[str, ...]
    failovers: tuple[Failover, ...]
    uncovered: tuple[str, ...]
    """Cameras left without any source."""
    loads: tuple[Load, ...]
    """Every surviving recorder that carries streams."""
    decides: bool
    """Whether its uncovered cameras decide the exit code (single recorders always;
    sites with ``strict_sites``)."""

    @property
    def ok(self) -> bool:
        """Every camera keeps a source and every surviving recorder is within capacity."""
        return not self.uncovered and not any(load.over for load in self.loads)

    def to_json(self) -> dict[str, Any]:
        """The scenario as JSON data."""
        return {
            "kind": self.kind,
            "name": self.name,
            "failed": list(self.failed),
            "ok": self.ok,
            "decides_exit_code": self.decides,
            "failovers": [f.to_json() for f in self.failovers],
            "uncovered": list(self.uncovered),
            "loads": [load.to_json() for load in self.loads],
        }


@dataclass(frozen=True)
class PlanReport:
    """The whole plan: normal loads, every scenario, findings, maybe a suggestion."""

    cameras: int
    recorders: tuple[Load, ...]
    """Every recorder in normal operation (every source healthy)."""
    scenarios: tuple[Scenario, ...]
    findings: tuple[Finding, ...]
    strict_sites: bool
    suggestion: Suggestion | None = None

    @property
    def ok(self) -> bool:
        """No error: every deciding failure leaves every camera covered within capacity."""
        return not any(f.severity == "error" for f in self.findings)

    @property
    def exit_code(self) -> int:
        """0 when :attr:`ok`, else 1."""
        return 0 if self.ok else 1

    @property
    def uncovered(self) -> tuple[str, ...]:
        """Cameras left without a source by some failure that decides the exit code."""
        seen = dict.fromkeys(c for s in self.scenarios if s.decides for c in s.uncovered)
        return tuple(seen)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON data (for ``--json`` and an API)."""
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "strict_sites": self.strict_sites,
            "load_model": LOAD_MODEL,
            "cameras": self.cameras,
            "uncovered": list(self.uncovered),
            "recorders": [load.to_json() for load in self.recorders],
            "scenarios": [s.to_json() for s in self.scenarios],
            "findings": [f.to_json() for f in self.findings],
            "suggestion": None if self.suggestion is None else self.suggestion.to_json(),
        }

    def to_text(self) -> str:
        """The report for a terminal."""
        return render_text(self)


def plan(cfg: Config, *, strict_sites: bool = False, spares: SpareSpec | None = None) -> PlanReport:
    """Plan a configuration: every single-recorder and site failure, findings, and with
    ``spares`` a suggestion of new redundant recorders."""
    return plan_topology(Topology.from_config(cfg), strict_sites=strict_sites, spares=spares)


def plan_topology(
    topo: Topology, *, strict_sites: bool = False, spares: SpareSpec | None = None
) -> PlanReport:
    """:func:`plan` on an already built topology."""
    normal = _loads(topo, frozenset(), include_idle=True)
    scenarios = [_scenario(topo, "recorder", name, (name,), True) for name in topo.recorders]
    scenarios += [
        _scenario(topo, "site", site, tuple(members), strict_sites)
        for site, members in topo.sites().items()
    ]
    findings = _findings(topo, normal, scenarios, strict_sites)
    suggestion = None
    if spares is not None:
        needs: dict[str, list[str]] = {}
        for s in scenarios:
            if s.decides:
                for cam in s.uncovered:
                    needs.setdefault(cam, []).append(f"uncovered when {_what(s)} fails")
        overloaded = [load.recorder for load in normal if load.over]
        suggestion = suggest_spares(topo, needs, overloaded, strict_sites, spares)
        # Check the proposal the way the operator would: plan the result again.
        after = plan_topology(apply_suggestion(topo, suggestion), strict_sites=strict_sites)
        remaining = tuple(f.message for f in after.findings if f.severity == "error")
        suggestion = replace(suggestion, remaining=remaining)
    return PlanReport(
        cameras=len(topo.cameras),
        recorders=tuple(normal),
        scenarios=tuple(scenarios),
        findings=tuple(findings),
        strict_sites=strict_sites,
        suggestion=suggestion,
    )


def _what(s: Scenario) -> str:
    return s.name if s.kind == "recorder" else f"site {s.name}"


def _loads(topo: Topology, failed: frozenset[str], *, include_idle: bool) -> list[Load]:
    """Every surviving recorder's load (with ``include_idle``, also those carrying none)."""
    active: Counter[str] = Counter()
    for streams in topo.cameras.values():
        alive = [s for s in streams if s.recorder not in failed]
        if alive:
            active[alive[0].recorder] += 1
    out = []
    for rec in topo.recorders.values():
        if rec.name in failed:
            continue
        served = topo.streams_on(rec.name)
        if not served and not include_idle:
            continue
        mbps = sum(s.mbps for s in served)
        over = tuple(rec.capacity.exceeded(len(served), mbps))
        out.append(
            Load(rec.name, rec.site, len(served), mbps, active[rec.name], rec.capacity, over)
        )
    return out


def _scenario(
    topo: Topology,
    kind: Literal["recorder", "site"],
    name: str,
    failed: tuple[str, ...],
    decides: bool,
) -> Scenario:
    down = frozenset(failed)
    failovers = []
    uncovered = []
    for cam, streams in topo.cameras.items():
        active = streams[0]  # every source healthy before the failure: the primary
        if active.recorder not in down:
            continue
        alive = [s for s in streams if s.recorder not in down]
        to = alive[0] if alive else None
        failovers.append(
            Failover(
                cam,
                active.source,
                active.recorder,
                None if to is None else to.source,
                None if to is None else to.recorder,
            )
        )
        if to is None:
            uncovered.append(cam)
    loads = _loads(topo, down, include_idle=False)
    return Scenario(kind, name, failed, tuple(failovers), tuple(uncovered), tuple(loads), decides)


def _findings(
    topo: Topology, normal: list[Load], scenarios: list[Scenario], strict_sites: bool
) -> list[Finding]:
    out: list[Finding] = []
    for s in scenarios:
        if not s.uncovered:
            continue
        cams = ", ".join(s.uncovered)
        if s.kind == "recorder":
            out.append(
                Finding(
                    "error",
                    "uncovered",
                    f"when {s.name} fails, {len(s.uncovered)} camera(s) have no source "
                    f"left: {cams}",
                    s.uncovered,
                    s.failed,
                )
            )
        else:
            out.append(
                Finding(
                    "error" if strict_sites else "warning",
                    "site-uncovered",
                    f"when site {s.name} fails ({', '.join(s.failed)}), "
                    f"{len(s.uncovered)} camera(s) have no source left: {cams}",
                    s.uncovered,
                    s.failed,
                )
            )
    for load in normal:
        if load.over:
            out.append(
                Finding(
                    "error",
                    "over-capacity",
                    f"{load.recorder} serves {load.streams} streams, {load.mbps:g} Mbit/s "
                    f"to the proxy, over its capacity {load.capacity.describe()} "
                    f"({'; '.join(load.over)}), in normal operation and in every failure "
                    "it survives",
                    recorders=(load.recorder,),
                )
            )
    unknown = tuple(load.recorder for load in normal if load.streams and not load.capacity.known)
    if unknown:
        out.append(
            Finding(
                "note",
                "capacity-unknown",
                f"no capacity given for {', '.join(unknown)}: load reported, not checked "
                "(recorders.<name>.capacity)",
                recorders=unknown,
            )
        )
    undeclared = tuple(r.name for r in topo.recorders.values() if not r.declared)
    if undeclared:
        labels = ", ".join(topo.recorders[r].label() for r in undeclared)
        out.append(
            Finding(
                "note",
                "recorder-undeclared",
                f"recorders named by their URL's host:port (no recorders entry for the "
                f"source name): {labels}; no site, no capacity",
                recorders=undeclared,
            )
        )
    idle = tuple(load.recorder for load in normal if not load.streams)
    if idle:
        out.append(
            Finding(
                "note",
                "recorder-unused",
                f"declared but no source uses it: {', '.join(idle)}",
                recorders=idle,
            )
        )
    if not topo.sites():
        out.append(
            Finding(
                "note",
                "no-sites",
                "no recorder has a site: site failures not planned (recorders.<name>.site)",
            )
        )
    if topo.pending:
        out.append(
            Finding(
                "note",
                "pending",
                f"pending (imported while unreachable, still relayed): {', '.join(topo.pending)}",
                cameras=topo.pending,
            )
        )
    return out


def render_text(report: PlanReport) -> str:
    """The report as a terminal table: recorders, scenarios, findings, suggestion, verdict."""
    lines = [f"{report.cameras} camera(s); {LOAD_MODEL}.", ""]
    width = max([8, *(len(r.recorder) for r in report.recorders)])
    lines.append(
        f"{'recorder':<{width}}  {'site':<12} {'streams':>7} {'Mbit/s':>8} {'active':>6}  capacity"
    )
    for load in report.recorders:
        lines.append(_load_line(load, width))
    for kind, title in (
        ("recorder", "Single recorder failures"),
        (
            "site",
            "Site failures"
            + ("" if report.strict_sites else " (reported; they decide only with --strict-sites)"),
        ),
    ):
        chosen = [s for s in report.scenarios if s.kind == kind]
        if not chosen:
            continue
        lines += ["", f"{title}:"]
        for s in chosen:
            alone = len(s.failed) == 1 and s.kind == "site"
            lines += _scenario_lines(s, s.failed[0] if alone else None)
    if report.findings:
        lines += ["", "Findings:"]
        lines += [f"  {f.severity.upper():<7} {f.message}" for f in report.findings]
    if report.suggestion is not None:
        lines += ["", *report.suggestion.to_text().splitlines()]
    lines.append("")
    if report.ok:
        lines.append(
            "OK: every single-recorder failure"
            + (" and every site failure" if report.strict_sites else "")
            + " leaves every camera covered, every recorder within capacity"
        )
    else:
        errors = sum(1 for f in report.findings if f.severity == "error")
        tail = f"; uncovered: {', '.join(report.uncovered)}" if report.uncovered else ""
        lines.append(f"FAILED: {errors} error(s){tail}")
    return "\n".join(lines)


def _load_line(load: Load, width: int, indent: str = "") -> str:
    cap = load.capacity.describe() if load.capacity.known else "unknown"
    verdict = f"  OVER ({'; '.join(load.over)})" if load.over else ""
    return (
        f"{indent}{load.recorder:<{width}}  {load.site or '-':<12} {load.streams:>7} "
        f"{load.mbps:>8g} {load.active:>6}  {cap}{verdict}"
    )


def _scenario_lines(s: Scenario, same_as: str | None = None) -> list[str]:
    head = f"  {s.name}" if s.kind == "recorder" else f"  site {s.name} ({', '.join(s.failed)})"
    if same_as is not None:
        return [f"{head} fails: as {same_as} alone above"]
    if not s.failovers:
        state = "no camera has its active source there"
    elif s.uncovered:
        state = f"{len(s.failovers)} camera(s) fail over, {len(s.uncovered)} UNCOVERED" + (
            "" if s.decides else " (flagged)"
        )
    else:
        state = f"{len(s.failovers)} camera(s) fail over, all covered"
    lines = [f"{head} fails: {state}"]
    width = max([6, *(len(f.camera) for f in s.failovers)])
    for f in s.failovers:
        lines.append(
            f"      {f.camera:<{width}}  {_end(f.from_source, f.from_recorder)} -> "
            + ("NO SOURCE LEFT" if f.to_source is None else _end(f.to_source, f.to_recorder))
        )
    if s.loads:
        lines.append("    then:")
        width = max(len(load.recorder) for load in s.loads)
        for load in s.loads:
            lines.append(_load_line(load, width, indent="      "))
    return lines


def _end(source: str, recorder: str | None) -> str:
    return source if source == recorder else f"{source} (on {recorder})"
