"""The composition root: one feed per configured camera behind one RTSP server, with
the admin API, metrics, coverage journal and pair sync wired around them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

from rmfproxy.archive.fetch import RecorderSource, recorder_sources
from rmfproxy.archive.playback import StitchedPlayback
from rmfproxy.archive.runner import CoverageJournal
from rmfproxy.archive.store import JournalError
from rmfproxy.config import CameraConfig, Config, ConfigError, SourceConfig, split_host_port
from rmfproxy.heap import trim_heap
from rmfproxy.localports import LocalPorts
from rmfproxy.manage.revisions import (
    ConfigChange,
    ConfigKeeper,
    document_of,
    restart_only_changes,
)
from rmfproxy.manage.sync import PeerFollower, SyncCollector
from rmfproxy.ops.api import AdminApi
from rmfproxy.ops.metrics import ProxyMetrics
from rmfproxy.relay.feed import Feed, StandbySpec, _Listener, _SubListener
from rmfproxy.relay.feed_core import FeedTuning
from rmfproxy.relay.standby import Mode
from rmfproxy.rtsp.sdp import SessionDescription
from rmfproxy.serve.access import AccessControl, User
from rmfproxy.serve.close_reason import CloseReason
from rmfproxy.serve.limits import ServeLimits
from rmfproxy.serve.server import RtspServer, TlsListenError
from rmfproxy.tls import ServerTls, client_context
from rmfproxy.upstream.source import RtspSource
from rmfproxy.upstream.url import is_tls

REPLAY_PREFIX = "replay/"
"""``rtsp://proxy/replay/<camera>`` plays history without ``Require: onvif-replay``
(GStreamer's rtspsrc onvif-mode sends none)."""

log = structlog.get_logger(__name__)


class ListenError(Exception):
    """A configured listener cannot bind; the message names the configuration field."""

    def __init__(self, field: str, address: str, why: str) -> None:
        super().__init__(f"cannot listen on {address} ({field}): {why}")
        self.field = field
        self.address = address
        self.why = why


class Proxy:
    """Builds feeds and the client-facing server from a validated :class:`Config`."""

    def __init__(
        self,
        config: Config,
        *,
        document: dict[str, Any] | None = None,
        path: Path | None = None,
    ) -> None:
        """``document``: the YAML data ``config`` was validated from (default: made from
        ``config``); ``path``: its file, where accepted changes are written."""
        self.config = config
        self.local_ports = LocalPorts()
        """Every UDP port this proxy binds (server and sources): never a client's port."""
        self._client_tls: dict[tuple[Path | None, bool], ssl.SSLContext] = {}
        """TLS client contexts of rtsps sources, shared by every source with the same CA
        file and verification (loading the system's CAs takes ~40 ms and ~1 MB each)."""
        self.feeds: dict[str, Feed] = {
            cam_id: self._make_feed(cam_id, cam) for cam_id, cam in config.cameras.items()
        }
        access = _access_control(config)
        host, port = _listen_address(config.rtsp.listen)
        tls_conf = config.rtsp.tls
        self.tls: ServerTls | None = None
        """The RTSPS listener's certificate (re-read by :meth:`reload_tls`), or None."""
        tls_host, tls_port = "127.0.0.1", 0
        if tls_conf is not None:
            self.tls = ServerTls(tls_conf.cert_file, tls_conf.key_file)
            tls_host, tls_port = split_host_port(tls_conf.listen)
        self.server = RtspServer(
            self.feeds.get,
            host=host,
            port=port,
            tls=self.tls,
            tls_host=tls_host,
            tls_port=tls_port,
            session_timeout=config.rtsp.session_timeout,
            access=access,
            client_buffer_bytes=config.rtsp.client_buffer_bytes,
            udp_rtp_port=config.rtsp.udp_rtp_port,
            limits=ServeLimits(
                request_timeout=config.rtsp.request_timeout,
                idle_timeout=config.rtsp.idle_timeout,
                max_connections=config.rtsp.max_connections,
                max_connections_per_ip=config.rtsp.max_connections_per_ip,
                auth_ban_after=config.rtsp.auth_ban_after,
                auth_ban_seconds=config.rtsp.auth_ban_seconds,
            ),
            local_ports=self.local_ports,
        )
        self.playback: StitchedPlayback | None = None
        """Stitched playback over RTSP (with the journal), or None."""
        self.journal: CoverageJournal | None = None
        """The coverage journal (``archive.journal``), or None when not configured."""
        if config.archive.journal is not None:
            self.journal = CoverageJournal(
                config.archive.journal,
                cameras={cam: [s.name for s in feed.slots] for cam, feed in self.feeds.items()},
                sample=self._health_samples,
                retention=config.archive.retention,
                heartbeat=config.archive.heartbeat,
            )
            # Playback of history, stitched from the recorders the journal says have it.
            self.playback = StitchedPlayback(
                journal=self.journal,
                sources=self._recorders,
                live_sdp=self._live_sdp,
                max_sessions=config.archive.max_playbacks,
            )
            self.server.replay = self.playback
            self.server.replay_prefix = REPLAY_PREFIX
        self.keeper = ConfigKeeper(self, document or document_of(config), path)
        """The running document and its revision: live changes go through it."""
        self.sync: PeerFollower | None = None
        """The follower of the pair's other proxy (``sync:``), or None."""
        if config.sync is not None:
            node = config.sync.node or socket.gethostname()
            token = config.sync.resolve_token().value
            self.keeper.enable_sync(node, config.sync.peer, token)
            self.sync = PeerFollower(self.keeper, config.sync.peer, token)
        self.metrics = ProxyMetrics(self)
        for cam_id, feed in self.feeds.items():
            self._measure(cam_id, feed)
        self.metrics.registry.register(SyncCollector(lambda: self.keeper, lambda: self.sync))
        self.api: AdminApi | None = None
        if config.api.enabled:
            self.api = AdminApi(
                self,
                self.metrics,
                token=config.api.resolve_token(),
                ready_grace=config.api.ready_grace,
                thumbnail_interval=config.api.thumbnail_interval,
            )
        self._lag_task: asyncio.Task[None] | None = None
        self._trim_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind the listeners, open the coverage journal, then start pulling every source.

        Raises :class:`ListenError` naming the configuration field when a listener cannot
        bind (port in use, address not local...), :class:`JournalError` when the journal
        file cannot be used; nothing is left running then.
        """
        rtsp = self.config.rtsp
        try:
            await self.server.start()
        except TlsListenError as exc:
            assert rtsp.tls is not None
            raise ListenError("rtsp.tls.listen", rtsp.tls.listen, _why(exc)) from None
        except OSError as exc:
            raise ListenError("rtsp.listen", str(rtsp.listen), _why(exc)) from None
        if rtsp.listen is not None and rtsp.udp_rtp_port and self.server.udp_ports is None:
            # The server falls back to TCP-only; a fixed pair was asked for (a firewall
            # rule, a NAT mapping), so serving without it would fail the clients quietly.
            await self.server.close()
            host, _ = split_host_port(rtsp.listen)
            pair = f"{host}:{rtsp.udp_rtp_port}-{rtsp.udp_rtp_port + 1}/udp"
            raise ListenError("rtsp.udp_rtp_port", pair, "port pair in use or not available")
        if self.api is not None:
            host, port = split_host_port(self.config.api.listen)
            try:
                await self.api.start(host, port)
            except OSError as exc:
                await self.api.stop()
                await self.server.close()
                raise ListenError("api.listen", self.config.api.listen, _why(exc)) from None
        if self.journal is not None:
            try:
                await self.journal.start()
            except JournalError:
                if self.api is not None:
                    await self.api.stop()
                await self.server.close()
                raise
        for feed in self.feeds.values():
            feed.start()
        self._lag_task = asyncio.create_task(self.metrics.watch_loop_lag(), name="loop-lag")
        self._trim_task = asyncio.create_task(trim_heap(), name="heap-trim")
        if self.sync is not None:
            self.sync.start()
        log.info(
            "proxy.started",
            cameras=len(self.feeds),
            rtsp_port=self.server.port if rtsp.listen is not None else None,
            rtsps_port=self.server.tls_port if rtsp.tls is not None else None,
            api_port=self.api.port if self.api else None,
        )

    async def stop(self) -> None:
        """Stop following the pair's other proxy, close the journal's open intervals,
        stop serving, then stop every feed."""
        if self.sync is not None:
            # Before anything: a peer change being applied is finished, not cut.
            await self.sync.stop()
        if self.journal is not None:
            # First: the intervals end at the last sample taken while the sources ran.
            await self.journal.stop()
        self.keeper.release_waiters()
        for task in (self._lag_task, self._trim_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.api is not None:
            await self.api.stop()
        await self.server.close()
        # All at once: each feed's TEARDOWNs are bounded, but one after another a site of
        # dead recorders would take that bound times the cameras to shut down.
        await asyncio.gather(*(feed.stop() for feed in self.feeds.values()))
        log.info("proxy.stopped")

    def _make_feed(self, cam_id: str, cam: CameraConfig) -> Feed:
        def make(index: int, listener: _Listener) -> tuple[str, RtspSource]:
            src = cam.sources[index]
            name = cam.source_name(index)
            secret = src.resolve_password()
            return name, RtspSource(
                src.url,
                listener,
                transport=src.transport,
                username=src.username,
                password=secret.value if secret else None,
                name=f"{cam_id}/{name}",
                local_ports=self.local_ports,
                tls=self._source_tls(src),
            )

        def standby(index: int) -> StandbySpec:
            src = cam.sources[index]
            sub_url = src.standby_url
            if sub_url is None:
                return StandbySpec(Mode(src.standby))
            name = f"{cam_id}/{cam.source_name(index)}/standby"

            def make_sub(listener: _SubListener) -> RtspSource:
                secret = src.resolve_password()
                return RtspSource(
                    sub_url,
                    listener,
                    transport=src.transport,
                    username=src.username,
                    password=secret.value if secret else None,
                    name=name,
                    local_ports=self.local_ports,
                )

            return StandbySpec(Mode(src.standby), make_sub)

        return Feed(
            cam_id,
            make,
            len(cam.sources),
            FeedTuning(
                stall_floor=cam.stall_timeout,
                stall_ceiling=cam.stall_timeout_max,
                stall_overrides=tuple(s.stall_timeout for s in cam.sources),
                failback_hold=cam.failback_hold,
                hitless=cam.hitless,
                outage_limit=cam.outage_limit,
            ),
            standby=[standby(i) for i in range(len(cam.sources))],
        )

    def _measure(self, cam_id: str, feed: Feed) -> None:
        """Count ``feed``'s switches in the metrics (every feed made, at start or by
        :meth:`apply`)."""
        self.metrics.add_camera(cam_id)
        feed.on_switch.append(lambda _, rec: self.metrics.count_switch(cam_id, rec))

    async def apply(self, new: Config) -> ConfigChange:
        """Apply ``new`` while running: cameras added, removed or changed take effect,
        the others are not touched (their clients keep streaming); users and their
        rights are replaced. A changed camera is rebuilt: its clients are disconnected
        (they reconnect to the new one). :class:`ConfigError` naming the fields that
        only a restart can change (listeners, journal, log format...); nothing is
        applied then."""
        fixed = restart_only_changes(self.config, new)
        if fixed:
            raise ConfigError([(f, "changing it needs a restart of rmfproxy") for f in fixed])
        old = self.config
        change = ConfigChange(
            added=[c for c in new.cameras if c not in old.cameras],
            removed=[c for c in old.cameras if c not in new.cameras],
            changed=[c for c in new.cameras if c in old.cameras and _relayed(old, new, c)],
        )
        self.config = new
        self.server.access = _access_control(new)
        if _tls_files(old) != _tls_files(new):
            self.reload_tls()  # the certificate's paths changed: in use from now on
        stopping = []
        for cam in [*change.removed, *change.changed]:
            feed = self.feeds.pop(cam)
            removed = cam in change.removed
            why = CloseReason.CAMERA_REMOVED if removed else CloseReason.CAMERA_CHANGED
            self.server.close_camera_sessions(cam, why)
            stopping.append(feed.stop())
        await asyncio.gather(*stopping)  # all at once, like stop()
        for cam in change.removed:
            self.metrics.remove_camera(cam)  # after the stop: its last switch counted first
        for cam in [*change.changed, *change.added]:
            feed = self._make_feed(cam, new.cameras[cam])
            self._measure(cam, feed)
            self.feeds[cam] = feed
            feed.start()
        ordered = [(cam, self.feeds[cam]) for cam in new.cameras]
        self.feeds.clear()  # in place: the server resolves paths through this dict
        self.feeds.update(ordered)
        if self.journal is not None:
            self.journal.set_cameras({c: [s.name for s in f.slots] for c, f in self.feeds.items()})
        log.info(
            "proxy.reconfigured",
            revision=new.revision,
            added=change.added,
            removed=change.removed,
            changed=change.changed,
        )
        return change

    async def reload(self) -> None:
        """SIGHUP: re-read the configuration file (:meth:`ConfigKeeper.reload`), then the
        RTSPS certificate and key, even when the file did not change (certificates are
        renewed in place)."""
        self._client_tls.clear()  # sources built from now on read their CA files again
        await self.keeper.reload()
        self.reload_tls()

    def reload_tls(self) -> bool:
        """Re-read the RTSPS certificate and key from the configured files: new
        handshakes use them, established sessions go on. A bad pair is logged and the
        certificate in use stays (False). True without a TLS listener."""
        tls_conf = self.config.rtsp.tls
        if self.tls is None or tls_conf is None:
            return True
        return self.tls.reload(tls_conf.cert_file, tls_conf.key_file)

    def _source_tls(self, src: SourceConfig) -> ssl.SSLContext | None:
        """The TLS client context of an ``rtsps://`` source (None for ``rtsp://``)."""
        if not is_tls(src.url):
            return None
        key = (src.tls_ca_file, src.tls_verify)
        ctx = self._client_tls.get(key)
        if ctx is None:
            ctx = self._client_tls[key] = client_context(src.tls_ca_file, verify=src.tls_verify)
        return ctx

    def _recorders(self, camera: str) -> list[RecorderSource] | None:
        """Where ``camera``'s sources replay from, in priority order (None: no camera)."""
        if camera not in self.config.cameras:
            return None
        return recorder_sources(self.config, camera)

    def _live_sdp(self, camera: str) -> SessionDescription | None:
        feed = self.feeds.get(camera)
        return None if feed is None else feed.sdp()

    def _health_samples(self) -> Iterator[tuple[str, str, bool]]:
        """``(camera, source, healthy)`` of every source now (the journal samples this)."""
        for cam, feed in self.feeds.items():
            now = feed.clock()
            for slot in feed.slots:
                yield cam, slot.name, slot.healthy(now)

    def url(self, camera: str) -> str:
        """The client URL of a camera."""
        return self.server.url(camera)

    def tls_url(self, camera: str) -> str:
        """The ``rtsps://`` client URL of a camera (with ``rtsp.tls`` configured)."""
        return self.server.tls_url(camera)

    def api_url(self, path: str = "/") -> str:
        """A URL on the admin listener."""
        assert self.api is not None, "the admin API is disabled"
        host, _ = split_host_port(self.config.api.listen)
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.api.port}{path}"


def _why(exc: OSError) -> str:
    """A short reason for a failed bind, e.g. 'Address already in use'."""
    if isinstance(exc, socket.gaierror):  # its errno is an EAI_* code, not an errno
        return exc.strerror or "cannot resolve the host"
    if exc.errno:
        # asyncio wraps the message ("error while attempting to bind on address ..."):
        # the errno says the same in the words the operator knows.
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


PLANNING_FIELDS = frozenset({"id", "bitrate_mbps", "pending"})
"""Camera fields only planning and consolidation read: changing them rebuilds nothing."""


def _relayed(old: Config, new: Config, camera: str) -> bool:
    """Whether what the relay does with ``camera`` differs between ``old`` and ``new``."""
    a = old.cameras[camera].model_dump(exclude=set(PLANNING_FIELDS))
    b = new.cameras[camera].model_dump(exclude=set(PLANNING_FIELDS))
    return a != b


def _listen_address(listen: str | None) -> tuple[str, int | None]:
    """Host and port of the plain RTSP listener (port None: no plain listener)."""
    if listen is None:
        return "127.0.0.1", None
    return split_host_port(listen)


def _tls_files(config: Config) -> tuple[Path, Path] | None:
    tls_conf = config.rtsp.tls
    return None if tls_conf is None else (tls_conf.cert_file, tls_conf.key_file)


def _access_control(config: Config) -> AccessControl | None:
    if not config.rtsp.users:
        return None
    users = []
    for u in config.rtsp.users:
        secret = u.resolve_password()
        assert secret is not None  # validated by parse_config
        paths = None if u.cameras == "*" else frozenset(u.cameras)
        users.append(User(u.name, secret.value, paths))
    return AccessControl(users, config.rtsp.realm)
