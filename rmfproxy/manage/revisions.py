"""The running configuration, its revision, and changes to it while the proxy runs.

Theory of operation.

- **One document, one revision.** :class:`ConfigKeeper` holds the configuration
  document the proxy runs (plain YAML data: secrets are references, ``password_env``
  / ``password_file``, never values; an inline secret is refused by validation) and
  its ``revision``, a number that only goes up. The admin API returns it as the
  ``ETag`` (``"7"``); every write must carry ``If-Match`` with the revision it was
  based on: ``428`` without one, ``412`` when another change came first (``*`` matches
  any). Changes are serialized by one lock, so "check the revision, validate, write,
  apply" is atomic with respect to the others.
- **Validate, write, apply.** A change is the whole new document
  (``PUT /api/v1/config``), one camera put or deleted (``PUT``/``DELETE
  /api/v1/cameras/{id}``), or the file re-read on SIGHUP. The new document is
  validated first (:func:`rmfproxy.config.parse_config`: every problem with its field);
  fields only a restart can change (listeners, the journal file, log format, limits)
  are refused with their names (:func:`restart_only_changes`). Then it is written to
  the configuration file atomically (a temporary file in the same directory, fsync,
  rename over, fsync of the directory) **before** it is applied, so a crash right
  after leaves the file saying what ran. Then the proxy applies it
  (:meth:`rmfproxy.app.Proxy.apply`): only added, removed and changed cameras
  are touched; the others keep their clients.
- **SIGHUP** re-reads the file the operator edited. A broken file changes nothing:
  the error (with its fields) is logged and the running configuration serves on. The
  file is the operator's: it is not rewritten (comments stay), only its top-level
  ``revision:`` line is set to the new revision (added if missing), so the revision
  survives a restart. A change through the API rewrites the whole file from the
  document (comments are lost: keep the file under version control, or manage it
  through the API only).
- **History.** The last :data:`HISTORY` changes are kept (revision, when, what,
  through which path) for the API and the pair's change feed: each also holds its
  camera-level operations with their versions (:mod:`rmfproxy.manage.sync`).
- **The pair.** With ``sync:`` configured, the keeper also keeps a version per camera,
  the open conflicts and the peer revision last applied, in
  ``<config>.sync-state.json`` (written atomically after every change); the peer's
  operations come in through :meth:`ConfigKeeper.apply_peer` (no If-Match: they are
  judged by their versions instead), and long polls wait on :meth:`wait_for_change`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import re
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import structlog
import yaml

from rmfproxy.config import Config, ConfigError, load_document, parse_config
from rmfproxy.manage.sync import (
    START,
    CameraOp,
    CameraVersion,
    Conflict,
    Verdict,
    judge,
    merged,
    successor,
)

log = structlog.get_logger(__name__)

HISTORY = 100
"""Changes remembered."""


@dataclass(frozen=True)
class ConfigChange:
    """What one live reconfiguration did to the cameras."""

    added: list[str]
    removed: list[str]
    changed: list[str]


@dataclass(frozen=True)
class Revision:
    """One accepted change."""

    revision: int
    at: float
    """Unix time it was applied."""
    origin: str
    """"api", "sighup", "start" or "peer" (the pair's other proxy)."""
    change: ConfigChange = field(default_factory=lambda: ConfigChange([], [], []))
    ops: tuple[CameraOp, ...] = ()
    """Its camera-level operations, with their versions and origin nodes."""


class PreconditionRequired(Exception):
    """A write without If-Match (HTTP 428)."""


class PreconditionFailed(Exception):
    """A write based on another revision than the current one (HTTP 412)."""

    def __init__(self, current: int) -> None:
        super().__init__(f"the configuration is at revision {current}: re-read it and retry")
        self.current = current


LIVE_RTSP_FIELDS = frozenset({"users", "realm"})
"""The ``rtsp`` fields a running proxy takes over (every ``cameras`` field too)."""
LIVE_TLS_FIELDS = frozenset({"cert_file", "key_file"})
"""The ``rtsp.tls`` fields a running proxy takes over (its ``listen`` needs a restart)."""


def restart_only_changes(old: Config, new: Config) -> list[str]:
    """The fields that differ between ``old`` and ``new`` but only apply at start."""
    # recorders: planning data only (rmfproxy plan), nothing running depends on it
    a = old.model_dump(exclude={"cameras", "revision", "recorders"})
    b = new.model_dump(exclude={"cameras", "revision", "recorders"})
    for d in (a, b):
        for key in LIVE_RTSP_FIELDS:
            d["rtsp"].pop(key, None)
        if isinstance(d["rtsp"].get("tls"), dict):
            for key in LIVE_TLS_FIELDS:  # re-read on every SIGHUP anyway
                d["rtsp"]["tls"].pop(key, None)
    return _differences(a, b, "")


def _differences(a: object, b: object, where: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in [*a, *(k for k in b if k not in a)]:
            out += _differences(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
        return out
    return [] if a == b else [where]


def document_of(config: Config) -> dict[str, Any]:
    """A configuration as a document (for a proxy built without one: tests, the demo)."""
    doc: dict[str, Any] = config.model_dump(mode="json", exclude_none=True)
    return doc


class Applier(Protocol):
    """What the keeper changes: a running proxy (:class:`rmfproxy.app.Proxy`)."""

    config: Config

    async def apply(self, new: Config) -> ConfigChange:
        """Run ``new`` from now on."""


class ConfigKeeper:
    """The running document of one proxy, its revision and its file (module docstring)."""

    def __init__(self, proxy: Applier, document: dict[str, Any], path: Path | None) -> None:
        self.proxy = proxy
        self.path = path
        """The configuration file (None: changes are applied, not written)."""
        self.document = copy.deepcopy(document)
        self.revision = max(1, proxy.config.revision)
        self.history: deque[Revision] = deque(maxlen=HISTORY)
        self.history.append(Revision(self.revision, time.time(), "start"))
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._closing = False
        # the pair (rmfproxy.manage.sync); inert until enable_sync
        self.node = ""
        """This proxy's name in the pair ("" without one)."""
        self.versions: dict[str, CameraVersion] = {}
        """Camera -> its version (deleted cameras keep theirs); absent: START."""
        self.conflicts: dict[str, Conflict] = {}
        """Camera -> the open conflict with the peer."""
        self.clock = 0
        """Lamport clock: the largest camera version seen."""
        self.peer: str | None = None
        self.peer_revision = 0
        """The peer's revision whose changes were last applied here."""
        self.sync_token: str | None = None
        """The pair's secret (signed requests of the peer), None without a pair."""
        self.state_path: Path | None = None

    def enable_sync(self, node: str, peer: str, token: str) -> None:
        """Keep camera versions for a pair; loads ``<config>.sync-state.json``."""
        self.node = node
        self.peer = peer
        self.sync_token = token
        if self.path is None:
            return
        self.state_path = self.path.with_name(self.path.name + ".sync-state.json")
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("sync.state_unreadable", path=str(self.state_path), reason=str(exc))
            return
        try:
            self.versions = {
                cam: CameraVersion.from_json(v) for cam, v in (data.get("cameras") or {}).items()
            }
            self.conflicts = {
                c["camera"]: Conflict.from_json(c) for c in data.get("conflicts") or []
            }
            seen = [v.version for v in self.versions.values()]
            self.clock = max([_int(data.get("clock")), *seen])
            if data.get("peer") == peer and data.get("node") == node:
                self.peer_revision = _int(data.get("peer_revision"))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.error("sync.state_unreadable", path=str(self.state_path), reason=str(exc))

    @property
    def etag(self) -> str:
        """The current revision as an HTTP entity tag."""
        return f'"{self.revision}"'

    # changes ------------------------------------------------------------------------

    async def replace(self, document: Any, if_match: str | None) -> ConfigChange:
        """The whole document replaced (``PUT /api/v1/config``)."""
        if not isinstance(document, dict):
            raise ConfigError([("(top level)", "the configuration must be a mapping")])
        return await self._commit(lambda _: copy.deepcopy(document), if_match, "api")

    async def put_camera(self, camera: str, body: Any, if_match: str | None) -> ConfigChange:
        """One camera added or replaced (``PUT /api/v1/cameras/{id}``)."""

        def edit(doc: dict[str, Any]) -> dict[str, Any]:
            doc.setdefault("cameras", {})[camera] = copy.deepcopy(body)
            return doc

        return await self._commit(edit, if_match, "api", frozenset({camera}))

    async def delete_camera(self, camera: str, if_match: str | None) -> ConfigChange:
        """One camera removed (``DELETE /api/v1/cameras/{id}``); KeyError if unknown."""

        def edit(doc: dict[str, Any]) -> dict[str, Any]:
            cameras = doc.get("cameras") or {}
            if camera not in cameras:
                raise KeyError(camera)
            del cameras[camera]
            return doc

        return await self._commit(edit, if_match, "api", frozenset({camera}))

    async def reload(self) -> ConfigChange | None:
        """SIGHUP: apply the file as the operator left it; None (logged) if it is broken
        or unchanged."""
        if self.path is None:
            log.warning("config.reload_skipped", reason="the proxy runs without a file")
            return None
        try:
            document = await asyncio.to_thread(load_document, self.path)
            if not isinstance(document, dict):
                raise ConfigError([("(top level)", "the file must hold a mapping with 'cameras'")])
            return await self._commit(lambda _: document, None, "sighup")
        except ConfigError as exc:
            log.error(
                "config.reload_failed",
                path=str(self.path),
                problems=[f"{where}: {what}" for where, what in exc.problems],
            )
            return None

    # the one path every change takes ----------------------------------------------

    async def _commit(
        self,
        edit: Any,
        if_match: str | None,
        origin: str,
        touched: frozenset[str] = frozenset(),
    ) -> ConfigChange:
        async with self._lock:
            if origin == "api":
                self._check(if_match)
            doc = edit(copy.deepcopy(self.document))
            unchanged = _without_revision(doc) == _without_revision(self.document)
            if origin == "sighup" and unchanged:
                log.info("config.reload_unchanged", revision=self.revision)
                return ConfigChange([], [], [])
            return await self._commit_locked(doc, origin, touched=touched)

    async def _commit_locked(
        self,
        doc: dict[str, Any],
        origin: str,
        *,
        peer_op: CameraOp | None = None,
        touched: frozenset[str] = frozenset(),
    ) -> ConfigChange:
        revision = max(self.revision, _int(doc.get("revision"))) + 1
        doc["revision"] = revision
        new = parse_config(doc)  # ConfigError: nothing written, nothing applied
        fixed = restart_only_changes(self.proxy.config, new)
        if fixed:
            raise ConfigError([(f, "changing it needs a restart of rmfproxy") for f in fixed])
        if self.path is not None:
            if origin == "sighup":
                await asyncio.to_thread(_set_revision_line, self.path, revision)
            else:
                await asyncio.to_thread(write_atomically, self.path, _dump(doc))
        change = await self.proxy.apply(new)
        old, self.document = self.document, doc
        self.revision = revision
        if peer_op is not None:
            ops = [replace(peer_op, revision=revision)]
        else:
            ops = self._local_ops(old, doc, revision, touched)
        for op in ops:
            self.versions[op.camera] = op.version
        self.history.append(Revision(revision, time.time(), origin, change, tuple(ops)))
        await self._save_state()
        self._wake()
        log.info(
            "config.applied",
            revision=revision,
            origin=origin,
            added=change.added,
            removed=change.removed,
            changed=change.changed,
        )
        return change

    def _local_ops(
        self, old: dict[str, Any], new: dict[str, Any], revision: int, touched: frozenset[str]
    ) -> list[CameraOp]:
        """The camera operations of a local change, each with a new version; a camera
        written again (even unchanged) closes its conflict."""
        before, after = old.get("cameras") or {}, new.get("cameras") or {}
        ops = []
        for cam in [*after, *(c for c in before if c not in after)]:
            body = after.get(cam)
            if body == before.get(cam) and not (cam in touched and cam in self.conflicts):
                continue
            conflict = self.conflicts.pop(cam, None)
            also = conflict.remote if conflict is not None else None
            version = successor(self.node, self.clock, self.versions.get(cam, START), also)
            self.clock = version.version
            ops.append(CameraOp(cam, copy.deepcopy(body), version, revision))
        return ops

    # the pair -------------------------------------------------------------------------

    async def apply_peer(self, op: CameraOp) -> Verdict:
        """The peer's camera operation, judged by its version (:func:`judge`): applied
        (recorded with the peer's version and origin), merged, skipped, or kept out as
        a conflict. Never needs If-Match; never raises for a refused document (logged,
        kept out as a conflict)."""
        async with self._lock:
            self.clock = max(self.clock, op.version.version)
            cam = op.camera
            local = self.versions.get(cam, START)
            body = (self.document.get("cameras") or {}).get(cam)
            verdict = judge(self.node, local, body, op)
            if verdict is Verdict.SAME:
                self.versions[cam] = merged(local, op.version)
                self.conflicts.pop(cam, None)
                await self._save_state()
            elif verdict is Verdict.APPLY:
                doc = copy.deepcopy(self.document)
                if op.body is None:
                    (doc.get("cameras") or {}).pop(cam, None)
                else:
                    doc.setdefault("cameras", {})[cam] = copy.deepcopy(op.body)
                conflict = self.conflicts.pop(cam, None)
                try:
                    await self._commit_locked(doc, "peer", peer_op=op)
                except ConfigError as exc:
                    if conflict is not None:
                        self.conflicts[cam] = conflict
                    log.error(
                        "sync.op_refused",
                        camera=cam,
                        origin=op.version.origin,
                        version=op.version.version,
                        problems=[f"{where}: {what}" for where, what in exc.problems],
                    )
                    self._record_conflict(local, op)
                    await self._save_state()
                    return Verdict.CONFLICT
            elif verdict is Verdict.CONFLICT and self._record_conflict(local, op):
                await self._save_state()
            return verdict

    def _record_conflict(self, local: CameraVersion, op: CameraOp) -> bool:
        known = self.conflicts.get(op.camera)
        if known is not None and known.remote.id == op.version.id:
            return False
        self.conflicts[op.camera] = Conflict(op.camera, local, op.version, time.time())
        log.warning(
            "sync.conflict",
            camera=op.camera,
            local_version=local.version,
            local_origin=local.origin,
            remote_version=op.version.version,
            remote_origin=op.version.origin,
        )
        return True

    def changes_since(self, since: int) -> list[CameraOp] | None:
        """The camera operations committed after revision ``since``; None when the kept
        history does not reach back to it (or ``since`` is ahead of this proxy)."""
        if since > self.revision or since < self.history[0].revision:
            return None
        return [op for r in self.history if r.revision > since for op in r.ops]

    def snapshot(self) -> dict[str, Any]:
        """Every camera with its version (deleted ones with theirs), for a follower that
        cannot be given the changes."""
        cameras = self.document.get("cameras") or {}
        out: dict[str, Any] = {}
        for cam in [*cameras, *(c for c in self.versions if c not in cameras)]:
            op = CameraOp(cam, cameras.get(cam), self.versions.get(cam, START), self.revision)
            item = op.to_json()
            del item["camera"]
            out[cam] = item
        return {"revision": self.revision, "node": self.node, "cameras": out}

    async def wait_for_change(self, after: int, seconds: float) -> None:
        """Until the revision is past ``after`` or ``seconds`` passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.revision <= after and not self._closing:
            left = deadline - loop.time()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def set_peer_revision(self, revision: int) -> None:
        """The peer's revision whose changes are applied (kept for catch-up)."""
        async with self._lock:
            if revision != self.peer_revision:
                self.peer_revision = revision
                await self._save_state()

    def release_waiters(self) -> None:
        """End every long poll now (the proxy stops: its listener must not wait)."""
        self._closing = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _save_state(self) -> None:
        if self.state_path is None:
            return
        data = {
            "node": self.node,
            "peer": self.peer,
            "peer_revision": self.peer_revision,
            "clock": self.clock,
            "cameras": {cam: v.to_json() for cam, v in self.versions.items()},
            "conflicts": [c.to_json() for c in self.conflicts.values()],
        }
        text = json.dumps(data, indent=1) + "\n"
        await asyncio.to_thread(write_atomically, self.state_path, text)

    def _check(self, if_match: str | None) -> None:
        if if_match is None or not if_match.strip():
            raise PreconditionRequired("writes need If-Match with the current ETag")
        tags = [t.strip() for t in if_match.split(",")]
        if "*" in tags:
            return
        wanted = {t.removeprefix("W/").strip('"') for t in tags}
        if str(self.revision) not in wanted:
            raise PreconditionFailed(self.revision)


def _without_revision(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "revision"}


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _dump(doc: dict[str, Any]) -> str:
    header = (
        "# rmfproxy configuration, written by the proxy (admin API change, revision "
        f"{doc.get('revision')}).\n# Secrets are references (password_env / password_file).\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: temporary file in the same directory, fsync,
    rename over (keeping the file's permissions), fsync of the directory."""
    directory = path.parent
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


_REVISION_LINE = re.compile(r"^revision:[^\n]*$", re.MULTILINE)


def _set_revision_line(path: Path, revision: int) -> None:
    """The operator's file with its top-level ``revision:`` set (or added at the end)."""
    text = path.read_text()
    line = f"revision: {revision}"
    if _REVISION_LINE.search(text):
        text = _REVISION_LINE.sub(line, text, count=1)
    else:
        text = text + ("" if text.endswith("\n") or not text else "\n") + line + "\n"
    write_atomically(path, text)
