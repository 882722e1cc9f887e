"""Two proxies in step: an active-active pair whose camera changes follow each other.

Theory of operation.

- **Camera operations.** Every accepted change of the running document
  (:class:`rmfproxy.manage.revisions.ConfigKeeper`) is also recorded as camera-level
  operations: "put camera X with this body" or "delete camera X". Only cameras are
  shared; listeners, users, the journal... stay each proxy's own.
- **Versions.** Each camera has a :class:`CameraVersion`: a Lamport counter
  (``max(every version seen) + 1`` on a local edit), the node that made it, and the
  ids ``(version, node)`` of the versions it replaced (its ancestors, the last
  :data:`MAX_ANCESTORS`). Deleted cameras keep theirs (a tombstone).
- **Change feed.** ``GET /api/v1/config/changes?since=REV&wait=S`` answers the
  operations committed after local revision ``REV`` (long poll: waits up to ``S``
  seconds for one), or ``410`` with a snapshot (every camera with its version) when
  ``REV`` is older than the kept history or newer than the revision (the peer
  restarted without its file).
- **The follower** (:class:`PeerFollower`) long-polls the peer's feed, signed with
  the pair token (:mod:`rmfproxy.manage.signing`), and hands each operation to
  :meth:`ConfigKeeper.apply_peer`, which :func:`judge` s it against the local version:

  - made by this node (it came back through the peer's feed): skipped;
  - already known (the same id, or one of the local version's ancestors): skipped,
    versions never go backwards;
  - the same body as ours: the two versions are merged (the larger id wins on both
    sides, ancestors united) without a new revision;
  - it replaces our version (our id is among its ancestors): applied, recorded with
    the peer's version and origin, so it is not a new local edit and the peer skips
    it when it comes back (no ping-pong);
  - otherwise both sides changed the camera since the last version both had: a
    **conflict**. The local camera stays, the conflict (both versions, both origins,
    when) is listed by ``GET /api/v1/config/conflicts``; the next write of that camera,
    on either side, replaces both versions and clears it.

- **Catch-up.** The last peer revision applied is kept in ``<config>.sync-state.json``
  (with the camera versions and open conflicts), written atomically: a proxy that was
  down asks for what it missed, or gets the snapshot.
- **Streaming never depends on the peer.** The follower only calls keeper methods;
  when the peer is unreachable it retries with jittered exponential backoff and logs
  once per change of state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rmfproxy.manage.signing import SIGNATURE, response_is_signed, sign_headers

if TYPE_CHECKING:
    from collections.abc import Callable

    from rmfproxy.manage.revisions import ConfigKeeper

log = structlog.get_logger(__name__)

MAX_ANCESTORS = 32
"""Ancestor ids a camera version remembers."""
POLL_WAIT = 25.0
"""Seconds the follower asks the peer to hold a long poll."""
MAX_WAIT = 30.0
"""Longest long poll the feed holds."""
MAX_FEED_BYTES = 16 << 20
"""Largest feed answer read from the peer."""
BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0

VersionId = tuple[int, str]
"""``(version, node)``."""


@dataclass(frozen=True)
class CameraVersion:
    """The version of one camera's configuration."""

    version: int
    """Lamport counter: larger than every version its author had seen."""
    origin: str
    """The node that made it ("" for the configuration the proxy started with)."""
    ancestors: tuple[VersionId, ...] = ()
    """The versions it replaced, newest first."""

    @property
    def id(self) -> VersionId:
        """``(version, origin)``."""
        return (self.version, self.origin)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "version": self.version,
            "origin": self.origin,
            "ancestors": [list(a) for a in self.ancestors],
        }

    @classmethod
    def from_json(cls, data: Any) -> CameraVersion:
        """From :meth:`to_json`; ValueError when malformed."""
        if not isinstance(data, dict):
            raise ValueError("a version must be an object")
        version, origin, ancestors = data.get("version"), data.get("origin"), data.get("ancestors")
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ValueError("version must be a non-negative integer")
        if not isinstance(origin, str) or not isinstance(ancestors, list):
            raise ValueError("origin must be a string and ancestors a list")
        ids: list[VersionId] = []
        for a in ancestors[:MAX_ANCESTORS]:
            if not (
                isinstance(a, list)
                and len(a) == 2
                and isinstance(a[0], int)
                and isinstance(a[1], str)
            ):
                raise ValueError("an ancestor must be [version, origin]")
            ids.append((a[0], a[1]))
        return cls(version, origin, tuple(ids))


START = CameraVersion(0, "")
"""The version of a camera as the proxy started with it (or never heard of)."""


@dataclass(frozen=True)
class CameraOp:
    """One camera put or deleted."""

    camera: str
    body: dict[str, Any] | None
    """The camera's object under ``cameras``; None: deleted."""
    version: CameraVersion
    revision: int = 0
    """The local revision that committed it."""

    def to_json(self) -> dict[str, Any]:
        """JSON form (the change feed's items)."""
        out: dict[str, Any] = {
            "revision": self.revision,
            "camera": self.camera,
            "op": "delete" if self.body is None else "put",
            **self.version.to_json(),
        }
        if self.body is not None:
            out["body"] = self.body
        return out

    @classmethod
    def from_json(cls, data: Any) -> CameraOp:
        """From :meth:`to_json`; ValueError when malformed."""
        if not isinstance(data, dict) or not isinstance(data.get("camera"), str):
            raise ValueError("an operation must be an object with a camera")
        op = data.get("op")
        body = data.get("body")
        if op == "put" and not isinstance(body, dict):
            raise ValueError("a put needs a body object")
        if op not in ("put", "delete"):
            raise ValueError("op must be put or delete")
        revision = data.get("revision", 0)
        return cls(
            data["camera"],
            body if op == "put" else None,
            CameraVersion.from_json(data),
            revision if isinstance(revision, int) else 0,
        )


@dataclass(frozen=True)
class Conflict:
    """Both proxies changed one camera since the last version they shared."""

    camera: str
    local: CameraVersion
    """The version this proxy kept."""
    remote: CameraVersion
    """The peer's version, not applied."""
    at: float
    """Unix time it was found."""

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "camera": self.camera,
            "local": self.local.to_json(),
            "remote": self.remote.to_json(),
            "at": self.at,
        }

    @classmethod
    def from_json(cls, data: Any) -> Conflict:
        """From :meth:`to_json`; ValueError when malformed."""
        if not isinstance(data, dict) or not isinstance(data.get("camera"), str):
            raise ValueError("a conflict must be an object with a camera")
        at = data.get("at")
        return cls(
            data["camera"],
            CameraVersion.from_json(data.get("local")),
            CameraVersion.from_json(data.get("remote")),
            float(at) if isinstance(at, (int, float)) else 0.0,
        )


class Verdict(Enum):
    """What to do with a peer's operation."""

    OWN = "own"
    """Made by this node: it came back through the peer."""
    KNOWN = "known"
    """The version we have, or one it replaced."""
    SAME = "same"
    """Another version with our body: versions merged, nothing applied."""
    APPLY = "apply"
    """It replaces our version."""
    CONFLICT = "conflict"
    """Both sides changed the camera."""


def judge(
    node: str, local: CameraVersion, local_body: dict[str, Any] | None, op: CameraOp
) -> Verdict:
    """What ``node``, holding ``local`` (and ``local_body``), does with the peer's ``op``."""
    theirs = op.version
    if theirs.origin == node:
        return Verdict.OWN
    if theirs.id == local.id:
        # Only at the start versions can match with other bodies: two different files.
        return Verdict.KNOWN if op.body == local_body else Verdict.CONFLICT
    if theirs.id in local.ancestors:
        return Verdict.KNOWN
    if op.body == local_body:
        return Verdict.SAME
    if local.id in theirs.ancestors and theirs.version > local.version:
        return Verdict.APPLY
    return Verdict.CONFLICT


def merged(a: CameraVersion, b: CameraVersion) -> CameraVersion:
    """Two versions of the same body as one (the same result on both sides)."""
    top, other = (a, b) if a.id >= b.id else (b, a)
    ancestors = [other.id, *top.ancestors, *other.ancestors]
    return CameraVersion(top.version, top.origin, _unique(ancestors))


def successor(
    node: str, clock: int, current: CameraVersion, also: CameraVersion | None
) -> CameraVersion:
    """The version of a local edit replacing ``current`` (and ``also``: the peer's side
    of an open conflict, which the edit resolves)."""
    ancestors = [current.id, *current.ancestors]
    if also is not None:
        ancestors[1:1] = [also.id, *also.ancestors]
    return CameraVersion(clock + 1, node, _unique(ancestors))


def _unique(ids: list[VersionId]) -> tuple[VersionId, ...]:
    return tuple(dict.fromkeys(ids))[:MAX_ANCESTORS]


# the follower ------------------------------------------------------------------------


class PeerFollower:
    """Long-polls the peer's change feed and applies its camera operations locally."""

    def __init__(self, keeper: ConfigKeeper, peer: str, token: str) -> None:
        self.keeper = keeper
        self.peer = peer.rstrip("/")
        self._token = token
        self.up = False
        """True while the last poll of the peer succeeded."""
        self.applied = 0
        """Peer operations applied (or merged)."""
        self._task: asyncio.Task[None] | None = None
        self._applying: asyncio.Task[None] | None = None
        """The operations of one answer being applied: never cancelled half-way."""
        self._state: str | None = None

    def start(self) -> None:
        """Start following (a task; :meth:`stop` ends it)."""
        self._task = asyncio.create_task(self._run(), name="sync-follower")

    async def stop(self) -> None:
        """Stop following; waits for the task to end."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._applying is not None:
            # a stop between two keeper calls, not inside one (a half-applied camera,
            # a state file behind the running configuration)
            with contextlib.suppress(Exception):  # logged by _apply
                await self._applying
            self._applying = None

    async def _run(self) -> None:
        backoff = BACKOFF_MIN
        timeout = aiohttp.ClientTimeout(total=POLL_WAIT + 10, sock_connect=5)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http:
                while True:
                    try:
                        await self.poll_once(http, POLL_WAIT)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        expected = (aiohttp.ClientError, TimeoutError, ValueError, OSError)
                        if not isinstance(exc, expected):
                            log.exception("sync.poll_failed", peer=self.peer)
                        self._set_state("down", reason=type(exc).__name__, detail=str(exc)[:200])
                        await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                        backoff = min(backoff * 2, BACKOFF_MAX)
                        continue
                    backoff = BACKOFF_MIN
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sync.follower_failed", peer=self.peer)
            self.up = False
            raise
        finally:
            log.info("sync.follower_stopped", peer=self.peer)

    async def poll_once(self, http: aiohttp.ClientSession, wait: float) -> None:
        """One long poll of the peer's feed, its operations applied."""
        since = self.keeper.peer_revision
        base = urlsplit(self.peer).path
        target = f"{base}/api/v1/config/changes?since={since}&wait={wait:g}"
        headers = sign_headers(self._token, "GET", target, b"", time.time())
        url = f"{self.peer}/api/v1/config/changes?since={since}&wait={wait:g}"
        async with http.get(url, headers=headers) as r:
            if r.status not in (200, 410):
                raise ValueError(f"the peer answered {r.status}")
            raw = bytearray()
            async for chunk in r.content.iter_chunked(1 << 16):
                raw += chunk
                if len(raw) > MAX_FEED_BYTES:
                    raise ValueError(f"the peer's answer is over {MAX_FEED_BYTES} bytes")
            status = r.status
            given = r.headers.get(SIGNATURE)
        if not response_is_signed(self._token, headers[SIGNATURE], status, bytes(raw), given):
            raise ValueError("the peer's answer is not signed with the pair token")
        data = json.loads(raw)
        self._set_state("up")
        if not isinstance(data, dict) or not isinstance(data.get("revision"), int):
            raise ValueError("the peer's feed is malformed")
        if data.get("node") == self.keeper.node:
            # Each would take the other's changes for its own and skip them.
            raise ValueError(
                f"the peer is named {self.keeper.node!r} too: give each proxy its own sync.node"
            )
        if status == 410:
            log.info("sync.snapshot", peer=self.peer, since=since, revision=data["revision"])
            ops = _snapshot_ops(data.get("cameras"))
        else:
            changes = data.get("changes")
            if not isinstance(changes, list):
                raise ValueError("the peer's feed is malformed")
            ops = [CameraOp.from_json(c) for c in changes]
        self._applying = asyncio.create_task(self._apply(ops, data["revision"]))
        await asyncio.shield(self._applying)  # a cancel here leaves it to stop()
        self._applying = None

    async def _apply(self, ops: list[CameraOp], revision: int) -> None:
        try:
            for op in ops:
                if await self.keeper.apply_peer(op) in (Verdict.APPLY, Verdict.SAME):
                    self.applied += 1
            await self.keeper.set_peer_revision(revision)
        except Exception:
            log.exception("sync.apply_failed", peer=self.peer)
            raise

    def _set_state(self, state: str, **fields: Any) -> None:
        self.up = state == "up"
        if state != self._state:
            self._state = state
            # once per change of state, never per retry
            if self.up:
                log.info("sync.peer_up", peer=self.peer)
            else:
                log.warning("sync.peer_down", peer=self.peer, **fields)


def _snapshot_ops(cameras: Any) -> list[CameraOp]:
    if not isinstance(cameras, dict):
        raise ValueError("the peer's snapshot is malformed")
    ops = []
    for cam, item in cameras.items():
        if not isinstance(item, dict):
            raise ValueError("the peer's snapshot is malformed")
        ops.append(CameraOp.from_json({**item, "camera": cam}))
    return ops


class SyncCollector(Collector):
    """The pair's metrics (zeros when the proxy runs alone)."""

    def __init__(
        self, keeper: Callable[[], ConfigKeeper], follower: Callable[[], PeerFollower | None]
    ) -> None:
        self._keeper = keeper
        self._follower = follower

    def collect(self) -> Iterator[Metric]:
        follower = self._follower()
        yield GaugeMetricFamily(
            "rmfproxy_sync_peer_up",
            "1 while the last poll of the pair's other proxy succeeded.",
            value=1 if follower is not None and follower.up else 0,
        )
        yield CounterMetricFamily(
            "rmfproxy_sync_applied",
            "Camera changes of the other proxy applied here.",
            value=follower.applied if follower is not None else 0,
        )
        yield GaugeMetricFamily(
            "rmfproxy_sync_conflicts",
            "Cameras both proxies changed since they last agreed (not overwritten).",
            value=len(self._keeper().conflicts),
        )
