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
  (:meth:`rmfproxy.relay.proxy.Proxy.apply`): only added, removed and changed cameras
  are touched; the others keep their clients.
- **SIGHUP** re-reads the file the operator edited. A broken file changes nothing:
  the error (with its fields) is logged and the running configuration serves on. The
  file is the operator's: it is not rewritten (comments stay), only its top-level
  ``revision:`` line is set to the new revision (added if missing), so the revision
  survives a restart. A change through the API rewrites the whole file from the
  document (comments are lost: keep the file under version control, or manage it
  through the API only).
- **History.** The last :data:`HISTORY` changes are kept (revision, when, what,
  through which path) for the API and, later, the peer sync's change feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import re
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog
import yaml

from rmfproxy.config import Config, ConfigError, load_document, parse_config

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
    """"api", "sighup" or "start"."""
    change: ConfigChange = field(default_factory=lambda: ConfigChange([], [], []))


class PreconditionRequired(Exception):
    """A write without If-Match (HTTP 428)."""


class PreconditionFailed(Exception):
    """A write based on another revision than the current one (HTTP 412)."""

    def __init__(self, current: int) -> None:
        super().__init__(f"the configuration is at revision {current}: re-read it and retry")
        self.current = current


LIVE_RTSP_FIELDS = frozenset({"users", "realm"})
"""The ``rtsp`` fields a running proxy takes over (every ``cameras`` field too)."""


def restart_only_changes(old: Config, new: Config) -> list[str]:
    """The fields that differ between ``old`` and ``new`` but only apply at start."""
    # recorders: planning data only (rmfproxy plan), nothing running depends on it
    a = old.model_dump(exclude={"cameras", "revision", "recorders"})
    b = new.model_dump(exclude={"cameras", "revision", "recorders"})
    for key in LIVE_RTSP_FIELDS:
        a["rtsp"].pop(key, None)
        b["rtsp"].pop(key, None)
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
    """What the keeper changes: a running proxy (:class:`rmfproxy.relay.proxy.Proxy`)."""

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

        return await self._commit(edit, if_match, "api")

    async def delete_camera(self, camera: str, if_match: str | None) -> ConfigChange:
        """One camera removed (``DELETE /api/v1/cameras/{id}``); KeyError if unknown."""

        def edit(doc: dict[str, Any]) -> dict[str, Any]:
            cameras = doc.get("cameras") or {}
            if camera not in cameras:
                raise KeyError(camera)
            del cameras[camera]
            return doc

        return await self._commit(edit, if_match, "api")

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

    async def _commit(self, edit: Any, if_match: str | None, origin: str) -> ConfigChange:
        async with self._lock:
            if origin == "api":
                self._check(if_match)
            doc = edit(copy.deepcopy(self.document))
            unchanged = _without_revision(doc) == _without_revision(self.document)
            if origin == "sighup" and unchanged:
                log.info("config.reload_unchanged", revision=self.revision)
                return ConfigChange([], [], [])
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
            self.document = doc
            self.revision = revision
            self.history.append(Revision(revision, time.time(), origin, change))
            log.info(
                "config.applied",
                revision=revision,
                origin=origin,
                added=change.added,
                removed=change.removed,
                changed=change.changed,
            )
            return change

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
