"""The proxy application: one feed per configured camera behind one RTSP server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator

import structlog

from rmfproxy.archive.fetch import RecorderSource, recorder_sources
from rmfproxy.archive.playback import StitchedPlayback
from rmfproxy.archive.runner import CoverageJournal
from rmfproxy.archive.store import JournalError
from rmfproxy.config import Config, split_host_port
from rmfproxy.localports import LocalPorts
from rmfproxy.ops.api import AdminApi
from rmfproxy.ops.metrics import ProxyMetrics
from rmfproxy.relay.feed import Feed, _Listener
from rmfproxy.rtsp.sdp import SessionDescription
from rmfproxy.serve.access import AccessControl, User
from rmfproxy.serve.limits import ServeLimits
from rmfproxy.serve.server import RtspServer
from rmfproxy.upstream.source import RtspSource

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

    def __init__(self, config: Config) -> None:
        self.config = config
        self.local_ports = LocalPorts()
        """Every UDP port this proxy binds (server and sources): never a client's port."""
        self.feeds: dict[str, Feed] = {}
        for cam_id, cam in config.cameras.items():

            def make(
                index: int, listener: _Listener, cam_id: str = cam_id, cam: object = cam
            ) -> tuple[str, RtspSource]:
                cfg = config.cameras[cam_id]
                src = cfg.sources[index]
                name = cfg.source_name(index)
                secret = src.resolve_password()
                return name, RtspSource(
                    src.url,
                    listener,
                    transport=src.transport,
                    username=src.username,
                    password=secret.value if secret else None,
                    name=f"{cam_id}/{name}",
                    local_ports=self.local_ports,
                )

            self.feeds[cam_id] = Feed(
                cam_id,
                make,
                len(cam.sources),
                stall_floor=cam.stall_timeout,
                stall_ceiling=cam.stall_timeout_max,
                failback_hold=cam.failback_hold,
                hitless=cam.hitless,
                outage_limit=cam.outage_limit,
            )
        access = None
        if config.rtsp.users:
            users = []
            for u in config.rtsp.users:
                secret = u.resolve_password()
                assert secret is not None  # validated by parse_config
                paths = None if u.cameras == "*" else frozenset(u.cameras)
                users.append(User(u.name, secret.value, paths))
            access = AccessControl(users, config.rtsp.realm)
        host, port = split_host_port(config.rtsp.listen)
        self.server = RtspServer(
            self.feeds.get,
            host=host,
            port=port,
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
        self.metrics = ProxyMetrics(self)
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

    async def start(self) -> None:
        """Bind the listeners, open the coverage journal, then start pulling every source.

        Raises :class:`ListenError` naming the configuration field when a listener cannot
        bind (port in use, address not local...), :class:`JournalError` when the journal
        file cannot be used; nothing is left running then.
        """
        rtsp = self.config.rtsp
        try:
            await self.server.start()
        except OSError as exc:
            raise ListenError("rtsp.listen", rtsp.listen, _why(exc)) from None
        if rtsp.udp_rtp_port and self.server.udp_ports is None:
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
        log.info(
            "proxy.started",
            cameras=len(self.feeds),
            rtsp_port=self.server.port,
            api_port=self.api.port if self.api else None,
        )

    async def stop(self) -> None:
        """Close the journal's open intervals, stop serving, then stop every feed."""
        if self.journal is not None:
            # First: the intervals end at the last sample taken while the sources ran.
            await self.journal.stop()
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
        if self.api is not None:
            await self.api.stop()
        await self.server.close()
        for feed in self.feeds.values():
            await feed.stop()
        log.info("proxy.stopped")

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
