"""The fewest new redundant recorders ("spares") that leave no planner error.

Theory of operation.

- **Demands.** Each camera that some deciding failure leaves without a source
  (:mod:`rmfproxy.manage.plan`) needs one more source, on a new spare. A recorder over
  its capacity sheds *standby* streams (sources after a camera's first) onto new
  spares: the fewest streams that bring it within capacity, the largest bitrates
  first (taking the k largest is what reaches a bitrate reduction with the fewest
  streams). A camera's primary is never moved: when the standbys are not enough the
  overload is reported as beyond a spare's reach. A camera needs at most one new
  spare stream (a shed stream of a camera that is also uncovered covers both).
- **Capacity of a spare.** Given (``--spare-cameras``, ``--spare-mbps``), or else the
  largest capacity any declared recorder has (by streams, then Mbit/s): "another one
  like our biggest". No declared capacity at all: spares are taken as unlimited.
- **Fault domains.** A new spare is in a site of its own unless sites are given
  (``--spare-site``, each spare goes to one of them). With ``strict_sites`` a spare
  must not share a site with any recorder the camera keeps (else one site failure
  would take the camera's every source again); without it sites are not constrained.
- **Search.** Bin packing: first-fit decreasing by bitrate, then, if that is above the
  lower bound (``ceil(streams / capacity)``, ``ceil(Mbit/s / capacity)``), an exact
  branch-and-bound over the same demands (for up to :data:`EXACT_MAX_DEMANDS`
  demands, at most :data:`EXACT_MAX_STEPS` steps). The answer says which it is:
  optimal (lower bound met, or search complete) or greedy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from rmfproxy.manage.topology import Capacity, Recorder, Stream, Topology

EXACT_MAX_DEMANDS = 40
"""Above this many demands only first-fit decreasing runs."""
EXACT_MAX_STEPS = 20_000
"""Steps the exact search may take before the greedy answer stands."""


@dataclass(frozen=True)
class SpareSpec:
    """How new spares are sized and placed."""

    cameras: int | None = None
    """Streams one spare can serve (None: from the largest existing recorder)."""
    mbps: float | None = None
    """Mbit/s one spare can serve (None: from the largest existing recorder)."""
    sites: tuple[str, ...] = ()
    """Sites a spare may stand in (empty: each in a new site of its own)."""


@dataclass(frozen=True)
class Demand:
    """One new spare stream a camera needs."""

    camera: str
    mbps: float
    reasons: tuple[str, ...]
    replaces: str | None
    """The overloaded recorder whose standby stream of this camera moves to the spare."""
    forbidden_sites: frozenset[str] = field(default_factory=frozenset)
    """Sites the spare must not be in (its kept recorders' sites, with ``strict_sites``)."""

    def to_json(self) -> dict[str, Any]:
        """The demand as JSON data."""
        return {
            "camera": self.camera,
            "mbps": self.mbps,
            "reasons": list(self.reasons),
            "replaces": self.replaces,
            "forbidden_sites": sorted(self.forbidden_sites),
        }


@dataclass(frozen=True)
class Spare:
    """One proposed new redundant recorder and the cameras it should carry."""

    name: str
    site: str | None
    """Its site (None: a new site of its own)."""
    cameras: tuple[str, ...]
    mbps: float

    def to_json(self) -> dict[str, Any]:
        """The spare as JSON data."""
        return {
            "name": self.name,
            "site": self.site,
            "cameras": list(self.cameras),
            "streams": len(self.cameras),
            "mbps": round(self.mbps, 3),
        }


@dataclass(frozen=True)
class Suggestion:
    """The proposal, with how it was found and what it cannot fix."""

    capacity: Capacity
    capacity_from: str
    spares: tuple[Spare, ...]
    demands: tuple[Demand, ...]
    lower_bound: int
    optimal: bool
    method: str
    unplaceable: tuple[tuple[str, str], ...] = ()
    """``(camera, why)`` for demands no spare can take."""
    unfixable: tuple[str, ...] = ()
    """Problems new spares cannot solve (a recorder overloaded by primaries)."""
    remaining: tuple[str, ...] | None = None
    """The errors a plan with these spares still has (None: not checked); the planner
    fills it in by planning :func:`apply_suggestion`'s topology."""

    def to_json(self) -> dict[str, Any]:
        """The suggestion as JSON data."""
        return {
            "spares_needed": len(self.spares),
            "capacity": self.capacity.to_json(),
            "capacity_from": self.capacity_from,
            "lower_bound": self.lower_bound,
            "optimal": self.optimal,
            "method": self.method,
            "spares": [s.to_json() for s in self.spares],
            "demands": [d.to_json() for d in self.demands],
            "unplaceable": [{"camera": c, "why": why} for c, why in self.unplaceable],
            "unfixable": list(self.unfixable),
            "remaining_errors": None if self.remaining is None else list(self.remaining),
        }

    def to_text(self) -> str:
        """The suggestion for a terminal."""
        if not self.demands and not self.unfixable:
            return "Suggestion: no new redundant recorder needed."
        quality = "fewest possible" if self.optimal else "not proven fewest"
        lines = [
            f"Suggestion: {len(self.spares)} new redundant recorder(s) ({quality}: "
            f"lower bound {self.lower_bound}, {self.method})",
            f"  capacity of each: {self.capacity.describe()} ({self.capacity_from})",
        ]
        by_camera = {d.camera: d for d in self.demands}
        for spare in self.spares:
            where = "a site of its own" if spare.site is None else f"site {spare.site}"
            lines.append(
                f"  {spare.name} ({where}): {len(spare.cameras)} streams, {spare.mbps:g} Mbit/s"
            )
            width = max(len(c) for c in spare.cameras)
            for cam in spare.cameras:
                d = by_camera[cam]
                action = (
                    f"move its {d.replaces} source to {spare.name}"
                    if d.replaces
                    else f"add a source on {spare.name}"
                )
                lines.append(f"      {cam:<{width}}  {action}  ({'; '.join(d.reasons)})")
        for cam, why in self.unplaceable:
            lines.append(f"  cannot place {cam}: {why}")
        for problem in self.unfixable:
            lines.append(f"  not fixable by spares: {problem}")
        if self.remaining == ():
            lines.append("  planned again with these spares: no error left")
        elif self.remaining:
            lines.append("  planned again with these spares, errors left:")
            lines += [f"    {error}" for error in self.remaining]
        return "\n".join(lines)


def suggest_spares(
    topo: Topology,
    needs: dict[str, list[str]],
    overloaded: list[str],
    strict_sites: bool,
    spec: SpareSpec,
) -> Suggestion:
    """New spares for the cameras in ``needs`` (camera -> why) and the ``overloaded``
    recorders' standby streams; see the module docstring."""
    capacity, capacity_from = _spare_capacity(topo, spec)
    demands: dict[str, Demand] = {
        cam: Demand(cam, topo.cameras[cam][0].mbps, tuple(why), None) for cam, why in needs.items()
    }
    unfixable = []
    for name in overloaded:
        rec = topo.recorders[name]
        streams = topo.streams_on(name)
        movable = [
            s
            for s in streams
            if s.priority > 0 and (s.camera not in demands or demands[s.camera].replaces is None)
        ]
        # Largest first; among equals prefer a camera that needs a spare stream anyway.
        movable.sort(key=lambda s: (-s.mbps, s.camera not in demands))
        k = _streams_to_shed(rec.capacity, streams, movable)
        if k is None:
            unfixable.append(
                f"{name} stays over its capacity {rec.capacity.describe()} even with every "
                "standby stream moved: move some primaries to another recorder"
            )
            continue
        for s in movable[:k]:
            old = demands.get(s.camera)
            why = (*(old.reasons if old else ()), f"moves off {name} (over capacity)")
            demands[s.camera] = Demand(s.camera, s.mbps, why, name)
    ordered = [d for cam in topo.cameras if (d := demands.get(cam)) is not None]
    if strict_sites:
        ordered = [_with_sites(topo, d) for d in ordered]
    candidates: list[str | None] = list(spec.sites) if spec.sites else [None]
    placeable: list[Demand] = []
    unplaceable: list[tuple[str, str]] = []
    for d in ordered:
        problem = _unplaceable(d, capacity, candidates)
        if problem:
            unplaceable.append((d.camera, problem))
        else:
            placeable.append(d)
    bins, optimal, method, bound = _pack(placeable, capacity, candidates)
    names = _spare_names(topo, len(bins))
    order = {cam: i for i, cam in enumerate(topo.cameras)}
    spares = tuple(
        Spare(
            names[i],
            site,
            tuple(sorted((d.camera for d in items), key=order.__getitem__)),
            sum(d.mbps for d in items),
        )
        for i, (site, items) in enumerate(bins)
    )
    return Suggestion(
        capacity,
        capacity_from,
        spares,
        tuple(ordered),
        bound,
        optimal,
        method,
        tuple(unplaceable),
        tuple(unfixable),
    )


def apply_suggestion(topo: Topology, sug: Suggestion) -> Topology:
    """``topo`` with the proposed spares: each placed demand's camera gets a last source on
    its spare, and loses the standby stream it moves off an overloaded recorder."""
    recorders = dict(topo.recorders)
    spare_of: dict[str, Spare] = {}
    for new in sug.spares:
        recorders[new.name] = Recorder(new.name, new.site, sug.capacity, declared=False)
        spare_of.update(dict.fromkeys(new.cameras, new))
    demands = {d.camera: d for d in sug.demands}
    cameras: dict[str, tuple[Stream, ...]] = {}
    for cam, streams in topo.cameras.items():
        spare = spare_of.get(cam)
        if spare is None:
            cameras[cam] = streams
            continue
        kept = list(streams)
        moved = demands[cam].replaces
        if moved is not None:
            kept.remove(next(s for s in kept if s.recorder == moved and s.priority > 0))
        kept.append(Stream(cam, 0, spare.name, spare.name, streams[0].mbps))
        cameras[cam] = tuple(replace(s, priority=i) for i, s in enumerate(kept))
    return Topology(recorders, cameras, topo.pending)


def _spare_capacity(topo: Topology, spec: SpareSpec) -> tuple[Capacity, str]:
    known = [r for r in topo.recorders.values() if r.capacity.known]
    largest = max(
        known,
        key=lambda r: (
            math.inf if r.capacity.cameras is None else r.capacity.cameras,
            math.inf if r.capacity.mbps is None else r.capacity.mbps,
        ),
        default=None,
    )
    base = largest.capacity if largest else Capacity()
    cap = Capacity(
        spec.cameras if spec.cameras is not None else base.cameras,
        spec.mbps if spec.mbps is not None else base.mbps,
    )
    given = spec.cameras is not None or spec.mbps is not None
    if given and (largest is None or (spec.cameras is not None and spec.mbps is not None)):
        where = "as given"
    elif largest is not None:
        where = f"like the largest existing recorder, {largest.name}" + (
            ", with the given limits" if given else ""
        )
    else:
        where = "no recorder has a capacity: taken as unlimited (--spare-cameras, --spare-mbps)"
    return cap, where


def _streams_to_shed(cap: Capacity, streams: list[Stream], movable: list[Stream]) -> int | None:
    """The fewest of ``movable`` (largest first) whose removal fits ``cap``; None: none do."""
    total = sum(s.mbps for s in streams)
    shed = 0.0
    for k in range(len(movable) + 1):
        if cap.fits(len(streams) - k, total - shed):
            return k
        if k < len(movable):
            shed += movable[k].mbps
    return None


def _with_sites(topo: Topology, d: Demand) -> Demand:
    kept = {
        s.recorder
        for s in topo.cameras[d.camera]
        if not (d.replaces is not None and s.recorder == d.replaces and s.priority > 0)
    }
    sites = frozenset(site for r in kept if (site := topo.recorders[r].site) is not None)
    return Demand(d.camera, d.mbps, d.reasons, d.replaces, sites)


def _unplaceable(d: Demand, cap: Capacity, candidates: list[str | None]) -> str | None:
    if not cap.fits(1, d.mbps):
        return f"its {d.mbps:g} Mbit/s exceed a spare's capacity {cap.describe()}"
    if all(site in d.forbidden_sites for site in candidates):
        own = ", ".join(sorted(d.forbidden_sites))
        return f"every allowed spare site is one of its own sites ({own})"
    return None


Bin = tuple[str | None, list[Demand]]


def _pack(
    demands: list[Demand], cap: Capacity, candidates: list[str | None]
) -> tuple[list[Bin], bool, str, int]:
    """``(bins, optimal, method, lower bound)`` for placeable demands."""
    if not demands:
        return [], True, "nothing to place", 0
    bound = 1
    if cap.cameras is not None:
        bound = max(bound, math.ceil(len(demands) / cap.cameras))
    if cap.mbps is not None:
        bound = max(bound, math.ceil(sum(d.mbps for d in demands) / cap.mbps - 1e-9))
    items = sorted(demands, key=lambda d: -d.mbps)
    greedy = _first_fit(items, cap, candidates)
    if len(greedy) <= bound:
        return greedy, True, "first-fit decreasing meets the lower bound", bound
    if len(items) > EXACT_MAX_DEMANDS:
        return greedy, False, f"first-fit decreasing ({len(items)} demands: no exact search)", bound
    exact, complete = _exact(items, cap, candidates, len(greedy), bound)
    best = exact if exact is not None and len(exact) < len(greedy) else greedy
    if complete:
        return best, True, "exact search", bound
    return best, False, f"exact search stopped after {EXACT_MAX_STEPS} steps", bound


def _fits(bin_: Bin, d: Demand, cap: Capacity) -> bool:
    site, items = bin_
    if site is not None and site in d.forbidden_sites:
        return False
    return cap.fits(len(items) + 1, sum(i.mbps for i in items) + d.mbps)


def _first_fit(items: list[Demand], cap: Capacity, candidates: list[str | None]) -> list[Bin]:
    bins: list[Bin] = []
    for d in items:
        for b in bins:
            if _fits(b, d, cap):
                b[1].append(d)
                break
        else:
            site = next(s for s in candidates if s is None or s not in d.forbidden_sites)
            bins.append((site, [d]))
    return bins


@dataclass
class _Open:
    """A spare being filled by the exact search."""

    site: str | None
    items: list[Demand]
    mbps: float


def _exact(
    items: list[Demand], cap: Capacity, candidates: list[str | None], limit: int, bound: int
) -> tuple[list[Bin] | None, bool]:
    """The fewest bins below ``limit``, by depth-first search; ``(bins, complete)``.

    A branch is cut when even a perfect fill of the open bins' room, and then of new
    bins, would need ``limit`` bins or more; bins in the same state (site, streams,
    Mbit/s) are tried once per item.
    """
    rest = [0.0] * (len(items) + 1)
    for i in range(len(items) - 1, -1, -1):
        rest[i] = rest[i + 1] + items[i].mbps
    best: list[Bin] | None = None
    best_n = limit
    steps = 0
    stopped = False

    def at_least(i: int, bins: list[_Open]) -> int:
        extra = 0
        if cap.cameras is not None:
            room = sum(cap.cameras - len(b.items) for b in bins)
            extra = math.ceil(max(0, len(items) - i - room) / cap.cameras)
        if cap.mbps is not None:
            room_mbps = sum(cap.mbps - b.mbps for b in bins)
            extra = max(extra, math.ceil(max(0.0, rest[i] - room_mbps) / cap.mbps - 1e-9))
        return len(bins) + extra

    def search(i: int, bins: list[_Open]) -> None:
        nonlocal best, best_n, steps, stopped
        steps += 1
        if steps > EXACT_MAX_STEPS:
            stopped = True
        if stopped or best_n <= bound or at_least(i, bins) >= best_n:
            return
        if i == len(items):
            best = [(b.site, list(b.items)) for b in bins]
            best_n = len(bins)
            return
        d = items[i]
        tried: set[tuple[str | None, int, float]] = set()
        for b in bins:
            key = (b.site, len(b.items), round(b.mbps, 6))
            if key in tried or (b.site is not None and b.site in d.forbidden_sites):
                continue
            if not cap.fits(len(b.items) + 1, b.mbps + d.mbps):
                continue
            tried.add(key)
            b.items.append(d)
            b.mbps += d.mbps
            search(i + 1, bins)
            b.items.pop()
            b.mbps -= d.mbps
        for site in dict.fromkeys(candidates):
            if site is not None and site in d.forbidden_sites:
                continue
            bins.append(_Open(site, [d], d.mbps))
            search(i + 1, bins)
            bins.pop()

    search(0, [])
    return best, not stopped


def _spare_names(topo: Topology, n: int) -> list[str]:
    names: list[str] = []
    i = 1
    while len(names) < n:
        name = f"new-spare-{i}"
        if name not in topo.recorders:
            names.append(name)
        i += 1
    return names
