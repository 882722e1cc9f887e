"""The RTSP server: listeners, session registry, shared UDP ports and session expiry.

Used twice: by the proxy (paths are cameras, streams are relay feeds) and by
the simulator (paths are simulated cameras on a simulated recorder).

Two listeners may serve the same paths, sessions, users and limits: plain RTSP and
RTSPS (RTSP over TLS, :mod:`rmfproxy.tls`). A connection on the TLS listener gets its
media interleaved on that connection only: a UDP SETUP there is 461, because RTP over
UDP next to an encrypted control connection would send the video in clear (SRTP is
not offered). Either listener may be absent, not both.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any

import structlog

from rmfproxy import localports
from rmfproxy.ratelimit import RateLimitedLog
from rmfproxy.serve.access import AccessControl
from rmfproxy.serve.close_reason import CloseReason
from rmfproxy.serve.connection import RtspConnection
from rmfproxy.serve.limits import AuthBans, ConnectionLimits, ServeLimits
from rmfproxy.serve.replay import ReplayProvider, ReplayStream
from rmfproxy.serve.session import ClientSession, State
from rmfproxy.serve.stream import MediaStream
from rmfproxy.serve.tls_accept import TlsListener
from rmfproxy.tls import ServerTls

log = structlog.get_logger(__name__)

REAP_INTERVAL = 1.0
"""Seconds between checks for expired sessions (and due refusal summaries)."""


class _RtcpReceiver(asyncio.DatagramProtocol):
    """Receives clients' RTCP over UDP: receiver reports keep sessions alive."""

    def __init__(self, server: RtspServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        session = self.server.udp_peers.get(addr[:2])
        if session is not None and not self.server.is_own_udp_port(addr[0], addr[1]):
            # Only the client's RTCP keeps its session alive, never the proxy's own
            # (a client that named the proxy's ports would otherwise never expire).
            session.touch()


class TlsListenError(OSError):
    """The TLS listener could not bind (the plain one was closed again)."""


class RtspServer:
    """Serves the paths that ``resolve`` knows, over RTSP on TCP (and RTSPS with ``tls``),
    with RTP over TCP or UDP (over TCP only on RTSPS)."""

    def __init__(
        self,
        resolve: Callable[[str], MediaStream | None],
        *,
        host: str = "127.0.0.1",
        port: int | None = 0,
        session_timeout: int = 60,
        access: AccessControl | None = None,
        client_buffer_bytes: int = 4 << 20,
        udp_rtp_port: int = 0,
        name: str = "rmfproxy",
        limits: ServeLimits | None = None,
        local_ports: localports.LocalPorts | None = None,
        replay: ReplayProvider | None = None,
        replay_prefix: str = "",
        tls: ServerTls | None = None,
        tls_host: str = "127.0.0.1",
        tls_port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resolve = resolve
        self.clock = clock
        """Seconds, monotonic: session expiry, slow clients, refusal summaries and bans
        (connection deadlines are loop timers, on the loop's clock)."""
        self.replay = replay
        """Recorded video (``Require: onvif-replay``); None: such requests get 551."""
        self.replay_prefix = replay_prefix
        """With a replay provider: paths ``<prefix><camera>`` replay without Require
        (for clients that cannot send it, e.g. GStreamer's rtspsrc); "" for none."""
        self.local_ports = local_ports or localports.LocalPorts()
        """UDP ports of this proxy no client may name (this server's pair included)."""
        self.host = host
        self.requested_port = port
        """The plain listener's port (0: any free one; None: no plain listener)."""
        self.tls = tls
        """The RTSPS listener's certificate (None: no TLS listener)."""
        self.tls_host = tls_host
        self.tls_requested_port = tls_port
        self.session_timeout = session_timeout
        self.access = access
        self.client_buffer_bytes = client_buffer_bytes
        self.udp_rtp_port = udp_rtp_port
        self.name = name
        self.sessions: dict[str, ClientSession] = {}
        self.connections: set[RtspConnection] = set()
        self.udp_peers: dict[tuple[str, int], ClientSession] = {}
        self.udp_rtp: asyncio.DatagramTransport | None = None
        self.udp_rtcp: asyncio.DatagramTransport | None = None
        self.udp_ports: tuple[int, int] | None = None
        self.limits = limits or ServeLimits()
        self.connection_limits = ConnectionLimits(
            self.limits.max_connections, self.limits.max_connections_per_ip
        )
        self.auth_bans = AuthBans(self.limits.auth_ban_after, self.limits.auth_ban_seconds)
        self.refusals: RateLimitedLog[tuple[str, str, str, str]] = RateLimitedLog(
            self.limits.log_interval, max_keys=4096
        )
        """Refusals per (client address, event, detail, level): one line per interval."""
        self.fault_stall_rtsp = False
        """Simulator fault: read requests and never answer them."""
        self.fault_pause = ""
        """Simulator quirk of live sessions: ``refuse`` PAUSE (501) or ``ignore`` it (200,
        media goes on), as recorders without live PAUSE do; empty: PAUSE stops the media."""
        self._registered_ports: tuple[int, ...] = ()
        self._server: asyncio.Server | None = None
        self._tls_server: TlsListener | None = None
        self.tls_handshake_failures = 0
        """Handshakes on the RTSPS listener that failed or timed out, since start."""
        self._reaper: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The plain listener's bound TCP port (useful when constructed with port 0)."""
        assert self._server is not None, "server not started (or without a plain listener)"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def tls_port(self) -> int:
        """The RTSPS listener's bound TCP port."""
        assert self._tls_server is not None, "server not started (or without TLS)"
        return int(self._tls_server.sockets[0].getsockname()[1])

    def url(self, path: str) -> str:
        """The client URL of ``path`` on this server (the RTSPS one without a plain listener)."""
        if self._server is None and self._tls_server is not None:
            return self.tls_url(path)
        return f"rtsp://{_url_host(self.host)}:{self.port}/{path}"

    def tls_url(self, path: str) -> str:
        """The ``rtsps://`` client URL of ``path``."""
        return f"rtsps://{_url_host(self.tls_host)}:{self.tls_port}/{path}"

    async def start(self) -> None:
        """Bind the listeners and the UDP port pair; start expiring sessions.

        ``OSError`` when the plain listener cannot bind, :class:`TlsListenError` when the
        TLS one cannot (nothing is left bound then).
        """
        loop = asyncio.get_running_loop()
        if self.requested_port is not None:
            self._server = await loop.create_server(
                lambda: RtspConnection(self), self.host, self.requested_port, reuse_address=True
            )
            await self._bind_udp()  # UDP media only for plain RTSP clients
        if self.tls is not None:
            try:
                # The handshakes run per connection, so a failed one is seen
                # (:mod:`rmfproxy.serve.tls_accept`).
                listener = TlsListener(
                    self.tls.context,
                    self.limits.request_timeout,
                    self._tls_connection,
                    self.tls_handshake_failed,
                )
                self._tls_server = listener
                await listener.start(self.tls_host, self.tls_requested_port)
            except OSError as exc:
                await self.close()
                raise TlsListenError(exc.errno, exc.strerror) from exc
        self._reaper = asyncio.create_task(self._expire_sessions(), name="rtsp-session-reaper")
        log.info(
            "rtsp.listening",
            server=self.name,
            host=self.host if self._server is not None else None,
            port=self.port if self._server is not None else None,
            udp_ports=self.udp_ports,
            tls_host=self.tls_host if self._tls_server is not None else None,
            tls_port=self.tls_port if self._tls_server is not None else None,
            tls_fingerprint=self.tls.fingerprint if self.tls is not None else None,
        )

    async def _bind_udp(self) -> None:
        """Bind an even RTP port and the next odd one for RTCP (RFC 3550 §11)."""
        loop = asyncio.get_running_loop()
        for _ in range(64):
            rtp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtcp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtp_sock.bind((self.host, self.udp_rtp_port))
                port = rtp_sock.getsockname()[1]
                if port % 2:
                    raise OSError("odd port")
                rtcp_sock.bind((self.host, port + 1))
            except OSError:
                rtp_sock.close()
                rtcp_sock.close()
                if self.udp_rtp_port:
                    log.warning("rtsp.udp_unavailable", port=self.udp_rtp_port)
                    return
                continue
            rtp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            self.udp_rtp, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, sock=rtp_sock
            )
            self.udp_rtcp, _ = await loop.create_datagram_endpoint(
                lambda: _RtcpReceiver(self), sock=rtcp_sock
            )
            self.udp_ports = (port, port + 1)
            self._registered_ports = self.udp_ports
            for p in self._registered_ports:
                self.local_ports.register(p)
            return

    def is_own_udp_port(self, host: str, port: int) -> bool:
        """True if ``host``:``port`` is a UDP port of this proxy (see :mod:`localports`)."""
        if not localports.is_local_address(host):
            return False
        if self.udp_ports is not None and port in self.udp_ports:
            return True
        return self.local_ports.is_own_port(port)

    def _tls_connection(self) -> RtspConnection:
        return RtspConnection(self, tls=True)

    def tls_handshake_failed(self, ip: str, reason: str) -> None:
        """A client's TLS handshake on the RTSPS listener failed: counted and logged (once
        per client address and reason per interval)."""
        self.tls_handshake_failures += 1
        self.log_refusal("rtsp.tls_handshake_failed", ip, reason, level="warning", reason=reason)

    def log_refusal(
        self,
        event: str,
        ip: str,
        detail: str,
        *,
        level: str = "info",
        exc_info: BaseException | None = None,
        **fields: Any,
    ) -> None:
        """Log a refusal once per client address, event and detail per interval, with
        ``count``: the events since the last line (a summary follows from the reaper)."""
        count = self.refusals.hit((ip, event, detail, level), self.clock())
        if count is None:
            return
        fields.setdefault("client", ip)
        if exc_info is not None:
            fields["exc_info"] = exc_info
        getattr(log, level)(event, count=count, **fields)

    def _log_suppressed(self, now: float) -> None:
        for (ip, event, detail, level), count in self.refusals.flush(now):
            getattr(log, level)(event, client=ip, detail=detail, count=count, summary=True)

    async def _expire_sessions(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            self.reap()

    def reap(self) -> None:
        """End the sessions their clients stopped keeping alive, and log the refusal
        summaries that are due (every :data:`REAP_INTERVAL` seconds)."""
        now = self.clock()
        for session in list(self.sessions.values()):
            if session.expired(now):
                self.close_session(session, CloseReason.SESSION_TIMEOUT)
        self._log_suppressed(now)

    def close_session(self, session: ClientSession, reason: CloseReason) -> None:
        """End a session: detach its sink and forget it (idempotent)."""
        if session.state is State.CLOSED:
            return
        session.state = State.CLOSED
        if session.sink is not None:
            session.stream.detach(session.sink)
            session.sink.closed = True
        if isinstance(session.stream, ReplayStream):
            session.stream.close()
        self.sessions.pop(session.id, None)
        for addr, s in list(self.udp_peers.items()):
            if s is session:
                del self.udp_peers[addr]
        for conn in self.connections:
            if conn.id == session.connection_id and conn.transport is not None:
                if reason.drops_connection:
                    conn.transport.abort()
                else:
                    conn.rearm()  # without a session, the idle timeout applies again
        log.info("rtsp.session_closed", camera=session.path, session=session.id[:6], reason=reason)

    def close_camera_sessions(self, camera: str, reason: CloseReason) -> int:
        """End every session on ``camera`` (live and replay, also under the replay
        prefix) and drop their connections; how many there were."""
        paths = {camera, f"{self.replay_prefix}{camera}"} if self.replay_prefix else {camera}
        ended = [s for s in self.sessions.values() if s.path in paths]
        for session in ended:
            self.close_session(session, reason)
        return len(ended)

    def close_connections(self) -> None:
        """Abort every client connection (simulator fault, shutdown)."""
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()

    async def close(self) -> None:
        """Stop listening, end every session and connection."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        servers = [s for s in (self._server,) if s is not None]
        for server in servers:
            server.close()
        if self._tls_server is not None:
            await self._tls_server.close()
        for session in list(self.sessions.values()):
            self.close_session(session, CloseReason.SERVER_SHUTDOWN)
        self.close_connections()
        for server in servers:
            await server.wait_closed()
        for t in (self.udp_rtp, self.udp_rtcp):
            if t is not None:
                t.close()
        for p in self._registered_ports:
            self.local_ports.unregister(p)
        self._registered_ports = ()
        self.udp_rtp = self.udp_rtcp = None
        await asyncio.sleep(0)


def _url_host(host: str) -> str:
    """A listen host as written in a URL (IPv6 in brackets, RFC 3986 §3.2.2)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
