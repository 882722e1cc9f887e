"""One camera pulled from one recorder URL: an RTSP client session that reconnects.

All tracks share one RTSP session (RFC 2326 §1.3 aggregate control): DESCRIBE,
SETUP per track with the first reply's Session id, one aggregate PLAY. RTP
comes interleaved on the RTSP connection (default) or over UDP. Keepalives
(GET_PARAMETER when the server lists it, else OPTIONS) run independently of
the reader, within the server's session timeout. Packets go straight from
``data_received`` to the listener: no per-packet objects beyond the packet's
own buffer, no per-packet log line. Cancellation ends :meth:`RtspSource.run`
promptly wherever it is. Credentials never reach a log line or a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, cast

import structlog

from rmfproxy.rtp import rtcp
from rmfproxy.rtsp.auth import Challenge, DigestClient, parse_challenges
from rmfproxy.rtsp.errors import ParseError
from rmfproxy.rtsp.headers import SessionHeader, TransportSpec, parse_public
from rmfproxy.rtsp.message import Headers, Request, Response, StreamParser
from rmfproxy.rtsp.sdp import SessionDescription, resolve_control
from rmfproxy.upstream.backoff import Backoff
from rmfproxy.upstream.url import host_port, redact, split_credentials

log = structlog.get_logger(__name__)

RR_INTERVAL = 5.0
_INTERLEAVED = struct.Struct(">cBH")


class SourceListener(Protocol):
    """What the owner of a source hears."""

    def on_connected(self, sdp: SessionDescription) -> None:
        """PLAY succeeded; tracks are numbered in SDP media order."""

    def on_packet(self, track: int, rtcp: bool, data: bytearray) -> None:
        """One RTP or RTCP packet (the hot path)."""

    def on_lost(self, reason: str) -> None:
        """The session ended; a reconnect follows after a backoff delay."""


class Lost(Exception):
    """The session ended for ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class SourceStats:
    """Counters of one source."""

    packets: int = 0
    bytes: int = 0
    sessions: int = 0
    reconnects: int = 0
    last_packet_time: float = 0.0


class _Conn(asyncio.Protocol):
    """The RTSP TCP connection: responses to futures, frames to the source."""

    def __init__(self, source: RtspSource) -> None:
        self.source = source
        self.parser = StreamParser(source._on_frame, max_body_bytes=256 << 10)
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, asyncio.Future[Response]] = {}
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        while (ev := self.parser.next_event()) is not None:
            if isinstance(ev, Response):
                fut = self.pending.pop(ev.cseq or -1, None)
                if fut is not None and not fut.done():
                    fut.set_result(ev)
            elif isinstance(ev, Request) and self.transport is not None:
                # Server-to-client requests (GET_PARAMETER, ANNOUNCE): acknowledge.
                h = Headers({"CSeq": ev.headers.get("CSeq") or "0"})
                self.transport.write(Response(200, headers=h).serialize())
            elif isinstance(ev, ParseError):
                self.source.protocol_errors += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.lose("tcp-closed" if exc is None else f"tcp-error {type(exc).__name__}")

    def lose(self, reason: str) -> None:
        if not self.closed.done():
            self.closed.set_result(reason)
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(Lost(reason))
        self.pending.clear()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, deliver: Callable[[bytes], None]) -> None:
        self.deliver = deliver

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.deliver(data)


def _same(proto: _Udp) -> _Udp:
    return proto


class RtspSource:
    """Pulls one camera from one RTSP URL, reconnecting until cancelled."""

    def __init__(
        self,
        url: str,
        listener: SourceListener,
        *,
        transport: Literal["tcp", "udp"] = "tcp",
        username: str | None = None,
        password: str | None = None,
        name: str = "",
        connect_timeout: float = 5.0,
        request_timeout: float = 5.0,
        backoff: Backoff | None = None,
        user_agent: str = "rmfproxy",
    ) -> None:
        clean, url_user, url_pw = split_credentials(url)
        self.url = clean
        self.listener = listener
        self.transport = transport
        self._user = username or url_user
        self._password = password if password is not None else url_pw
        self.name = name or redact(url)
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.backoff = backoff or Backoff()
        self.user_agent = user_agent
        self.stats = SourceStats()
        self.protocol_errors = 0
        self._conn: _Conn | None = None
        self._cseq = 0
        self._session: SessionHeader | None = None
        self._digest: DigestClient | None = None
        self._challenge: Challenge | None = None
        self._channels: list[tuple[int, bool] | None] = [None] * 256
        self._udp: list[asyncio.DatagramTransport] = []
        self._udp_targets: dict[int, tuple[str, int]] = {}
        self._ssrc = random.getrandbits(32)

    def __repr__(self) -> str:
        return f"RtspSource({self.name!r}, url={self.url!r})"

    # the loop --------------------------------------------------------------

    async def run(self) -> None:
        """Connect, play and read; on loss report it, back off, retry. Ends only by cancel."""
        while True:
            delivered_before = self.stats.packets
            try:
                reason = await self._one_session()
            except Lost as lost:
                reason = lost.reason
            except TimeoutError:
                reason = "timeout"
            except OSError as exc:
                reason = f"connect-failed: {exc.strerror or type(exc).__name__}"
            except (ValueError, IndexError) as exc:
                reason = f"protocol-error: {type(exc).__name__}"
            finally:
                self._teardown_transport()
            log.warning("upstream.lost", source=self.name, url=self.url, reason=reason)
            self.listener.on_lost(reason)
            if self.stats.packets > delivered_before:
                self.backoff.reset()
            self.stats.reconnects += 1
            await asyncio.sleep(self.backoff.next_delay())

    async def _one_session(self) -> str:
        loop = asyncio.get_running_loop()
        host, port = host_port(self.url)
        async with asyncio.timeout(self.connect_timeout):
            _, conn = await loop.create_connection(lambda: _Conn(self), host, port)
        self._conn = conn
        self._session = None
        self._channels = [None] * 256
        opts = await self._request("OPTIONS", self.url)
        public = parse_public(opts.headers.get("Public") or "")
        resp = await self._request("DESCRIBE", self.url, {"Accept": "application/sdp"})
        if not resp.body:
            raise Lost("protocol-error: DESCRIBE without SDP")
        sdp = SessionDescription.parse(resp.body.decode("utf-8", "replace"))
        base = resp.headers.get("Content-Base") or resp.headers.get("Content-Location") or self.url
        if not sdp.media:
            raise Lost("protocol-error: SDP without media")
        for i, media in enumerate(sdp.media):
            await self._setup(i, resolve_control(base, media.control))
        play_url = resolve_control(base, sdp.control) if sdp.control else base
        await self._request("PLAY", play_url, {"Range": "npt=0.000-"})
        self.stats.sessions += 1
        log.info(
            "upstream.connected",
            source=self.name,
            url=self.url,
            tracks=len(sdp.media),
            transport=self.transport,
        )
        self.listener.on_connected(sdp)
        timeout = self._session.timeout if self._session and self._session.timeout else 60
        keep = asyncio.create_task(self._keepalive(timeout, "GET_PARAMETER" in public, play_url))
        rr = asyncio.create_task(self._receiver_reports(len(sdp.media)))
        try:
            return await conn.closed
        finally:
            for t in (keep, rr):
                t.cancel()
            for t in (keep, rr):
                with contextlib.suppress(asyncio.CancelledError, Lost):
                    await t

    async def _setup(self, track: int, url: str) -> None:
        headers: dict[str, str] = {}
        if self.transport == "tcp":
            spec = TransportSpec(lower_transport="TCP", interleaved=(2 * track, 2 * track + 1))
        else:
            ports = await self._bind_udp(track)
            spec = TransportSpec(lower_transport="UDP", client_port=ports)
        headers["Transport"] = spec.serialize()
        resp = await self._request("SETUP", url, headers)
        session = resp.headers.get("Session")
        if session is None:
            raise Lost("protocol-error: SETUP reply without Session")
        if self._session is None:
            self._session = SessionHeader.parse(session)
        value = resp.headers.get("Transport")
        reply = TransportSpec.parse(value.split(",")[0]) if value else spec
        if self.transport == "tcp":
            a, b = reply.interleaved or (2 * track, 2 * track + 1)
            self._channels[a] = (track, False)
            self._channels[b] = (track, True)
        elif reply.server_port is not None:
            host, _ = host_port(self.url)
            self._udp_targets[track] = (host, reply.server_port[1])

    async def _bind_udp(self, track: int) -> tuple[int, int]:
        """An even/odd local port pair on the address of the RTSP connection."""
        assert self._conn is not None and self._conn.transport is not None
        local = self._conn.transport.get_extra_info("sockname")[0]
        loop = asyncio.get_running_loop()
        for _ in range(32):
            s1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s1.bind((local, 0))
                p = s1.getsockname()[1]
                if p % 2:
                    raise OSError("odd")
                s2.bind((local, p + 1))
            except OSError:
                s1.close()
                s2.close()
                continue
            s1.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            rtp_proto = _Udp(self._udp_deliver(track, False))
            rtcp_proto = _Udp(self._udp_deliver(track, True))
            t1, _ = await loop.create_datagram_endpoint(
                functools.partial(_same, rtp_proto), sock=s1
            )
            t2, _ = await loop.create_datagram_endpoint(
                functools.partial(_same, rtcp_proto), sock=s2
            )
            self._udp += [t1, t2]
            return p, p + 1
        raise Lost("udp-bind-failed")

    def _udp_deliver(self, track: int, is_rtcp: bool) -> Callable[[bytes], None]:
        def deliver(data: bytes) -> None:
            self._deliver(track, is_rtcp, bytearray(data))

        return deliver

    # requests ----------------------------------------------------------------

    async def _request(
        self, method: str, url: str, extra: dict[str, str] | None = None, retry_auth: bool = True
    ) -> Response:
        conn = self._conn
        if conn is None or conn.transport is None or conn.closed.done():
            raise Lost("tcp-closed")
        self._cseq += 1
        headers = Headers({"CSeq": str(self._cseq), "User-Agent": self.user_agent})
        if self._session is not None:
            headers["Session"] = self._session.id
        for k, v in (extra or {}).items():
            headers[k] = v
        if self._challenge is not None and self._digest is not None:
            headers["Authorization"] = self._digest.authorization(self._challenge, method, url)
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        conn.pending[self._cseq] = fut
        conn.transport.write(Request(method, url, headers).serialize())
        async with asyncio.timeout(self.request_timeout):
            resp = await fut
        if resp.status == 401 and retry_auth and self._user is not None:
            challenges = parse_challenges(resp.headers.get_all("WWW-Authenticate"))
            pick = next((c for c in challenges if c.scheme == "Digest"), None) or next(
                (c for c in challenges if c.scheme == "Basic"), None
            )
            if pick is None:
                raise Lost("auth-failed: no supported scheme")
            self._challenge = pick
            self._digest = DigestClient(self._user, self._password or "")
            return await self._request(method, url, extra, retry_auth=False)
        if resp.status == 401:
            raise Lost("auth-failed")
        if not 200 <= resp.status < 300:
            raise Lost(f"rtsp-error {resp.status} on {method}")
        return resp

    async def _keepalive(self, session_timeout: int, get_parameter: bool, url: str) -> None:
        interval = max(1.0, min(session_timeout / 2, 30.0))
        method = "GET_PARAMETER" if get_parameter else "OPTIONS"
        while True:
            await asyncio.sleep(interval)
            try:
                await self._request(method, url)
            except (TimeoutError, Lost):
                if self._conn is not None:
                    self._conn.lose("keepalive-failed")
                return

    async def _receiver_reports(self, tracks: int) -> None:
        """Minimal RTCP RRs upstream so recorders that expect them keep the session."""
        while True:
            await asyncio.sleep(RR_INTERVAL)
            rr = rtcp.build_receiver_report(self._ssrc, cname="rmfproxy")
            conn = self._conn
            for track in range(tracks):
                if self.transport == "tcp":
                    ch = next((c for c, v in enumerate(self._channels) if v == (track, True)), None)
                    if ch is not None and conn is not None and conn.transport is not None:
                        conn.transport.write(_INTERLEAVED.pack(b"$", ch, len(rr)) + rr)
                elif track in self._udp_targets and len(self._udp) > 2 * track + 1:
                    self._udp[2 * track + 1].sendto(rr, self._udp_targets[track])

    # packets -----------------------------------------------------------------

    def _on_frame(self, channel: int, payload: bytearray) -> None:
        entry = self._channels[channel]
        if entry is not None:
            self._deliver(entry[0], entry[1], payload)

    def _deliver(self, track: int, is_rtcp: bool, data: bytearray) -> None:
        st = self.stats
        st.packets += 1
        st.bytes += len(data)
        st.last_packet_time = time.monotonic()
        if is_rtcp and rtcp.is_rtcp_bye(data) and self._conn is not None:
            self._conn.lose("rtcp-bye")
            return
        self.listener.on_packet(track, is_rtcp, data)

    def _teardown_transport(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.lose("closed")
            if conn.transport is not None:
                conn.transport.abort()
        for t in self._udp:
            t.close()
        self._udp.clear()
        self._udp_targets.clear()
