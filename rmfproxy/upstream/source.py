"""One camera pulled from one recorder URL: an RTSP client session that reconnects.

Theory of operation. :meth:`RtspSource.run` loops over sessions. A session is one TCP
(or TLS, for ``rtsps``) connection carrying one RTSP session for *all* tracks (RFC 2326
§1.3 aggregate control): OPTIONS (to learn whether GET_PARAMETER exists), DESCRIBE,
SETUP of every SDP media in order, reusing the Session id of the first reply (§12.37),
then one aggregate PLAY (§C.1.1). RTP/RTCP comes interleaved on the RTSP connection
(§10.12, channels ``2i``/``2i+1`` for track ``i``) or over a UDP port pair per track.

While playing, two small tasks run beside the reader: keepalives (GET_PARAMETER when the
server's Public header lists it, else OPTIONS) at half the session timeout (§12.37), and
minimal RTCP receiver reports every few seconds (RFC 3550 §6.2). Replies are matched to
requests by CSeq, so interleaved frames keep flowing while a request is outstanding.

The hot path: ``data_received`` feeds the RTSP :class:`StreamParser`, which hands each
interleaved frame (a fresh ``bytearray``) straight to the listener; no other per-packet
object, no per-packet log line. Packets that arrive before PLAY has been answered are
held back (a bounded list) and delivered right after ``on_connected``.

Standby (see :mod:`rmfproxy.relay.standby`). With ``autoplay`` off a session stops after
SETUP, in READY (§A.1): no media flows, keepalives keep it alive, the listener hears
``on_ready(sdp)``. :meth:`RtspSource.resume` PLAYs it (§10.5; after a PAUSE this resumes),
:meth:`RtspSource.pause` PAUSEs a playing one (§10.6: back to READY), and
:meth:`RtspSource.park` ends the session with TEARDOWN and sets a new one up without PLAY
(for a recorder that refuses PAUSE). ``stats.wan_received``/``wan_sent`` count every byte
on the session's TCP connection and UDP sockets, signalling and keepalives included.

A session ends at the first of: TCP close or error, RTCP BYE (over UDP only from the
recorder's pinned address and port, naming the track's SSRC: see ``udp_pin``), an RTSP
request that gets no reply within ``request_timeout``, a failed keepalive, an error
status. The listener
then hears ``on_lost(reason)`` exactly once, and the next attempt follows a jittered,
capped exponential backoff. Cancellation ends ``run()`` promptly wherever it is;
:meth:`RtspSource.aclose` sends a best-effort TEARDOWN first.

Credentials come from the URL's userinfo or from ``username``/``password``; the URL on the
wire, in logs, in reasons and in ``repr`` never carries them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast
from urllib.parse import urljoin

import structlog

from rmfproxy import localports
from rmfproxy.ratelimit import RateLimitedLog
from rmfproxy.rtp import rtcp
from rmfproxy.rtsp.auth import Challenge, DigestClient, parse_challenges
from rmfproxy.rtsp.headers import SessionHeader, TransportSpec, parse_public
from rmfproxy.rtsp.message import Headers, Request, Response, StreamParser
from rmfproxy.rtsp.sdp import SessionDescription, resolve_control
from rmfproxy.tls import client_context
from rmfproxy.upstream.backoff import Backoff
from rmfproxy.upstream.loss import Loss, LossReason, Lost
from rmfproxy.upstream.udp_pin import UdpPin, Verdict
from rmfproxy.upstream.url import host_port, is_tls, split_credentials

log = structlog.get_logger(__name__)

RR_INTERVAL = 5.0
"""Seconds between RTCP receiver reports sent upstream (RFC 3550 §6.2 minimum is 5 s)."""
TEARDOWN_TIMEOUT = 0.5
"""How long :meth:`RtspSource.aclose` waits for the TEARDOWN reply."""
DEFAULT_SESSION_TIMEOUT = 60
"""Session timeout when the server does not announce one (RFC 2326 §12.37)."""
MAX_KEEPALIVE_INTERVAL = 30.0
"""Keepalives also probe a half-open TCP connection, so never wait longer than this."""
EARLY_PACKETS = 512
"""Packets held back between the PLAY reply on the wire and ``on_connected``."""
STANDBY_KEEPALIVE = 10.0
"""Longest keepalive interval of a session without media (paused or set up only): a dead
recorder is noticed within this plus ``request_timeout`` (about 100 bytes each way)."""
PAUSE_GRACE = 1.0
"""Seconds after a PAUSE reply within which media still in flight is expected; RTP later
than that means the server ignored the PAUSE (``pause_ignored``)."""
REJECT_LOG_INTERVAL = 10.0
"""At most one log line per source per this many seconds about rejected datagrams."""
RTT_SAMPLES = 8
"""Request round trips kept (the fastest is the path's round trip)."""

_INTERLEAVED = struct.Struct(">cBH")
_DIGEST_ALGORITHMS = ("MD5", "MD5-SESS", "SHA-256", "SHA-256-SESS")


class SourceListener(Protocol):
    """What the owner of a source hears."""

    def on_connected(self, sdp: SessionDescription) -> None:
        """PLAY succeeded; tracks are numbered in SDP media order."""

    def on_packet(self, track: int, rtcp: bool, data: bytearray) -> None:
        """One RTP or RTCP packet (the hot path); ``data`` is the receiver's to keep."""

    def on_lost(self, reason: LossReason) -> None:
        """The session ended (or never started); a reconnect follows after a backoff delay.
        The loss's detail is logged here, never passed on (it is no label value)."""


class StandbyListener(SourceListener, Protocol):
    """A listener of a source that may be set up without playing (``autoplay`` off)."""

    def on_ready(self, sdp: SessionDescription) -> None:
        """SETUP succeeded and the session waits in READY without media (no PLAY sent)."""


@dataclass
class SourceStats:
    """Counters of one source."""

    packets: int = 0
    """RTP and RTCP packets delivered to the listener."""
    bytes: int = 0
    """Their total size."""
    reconnects: int = 0
    """Attempts made after a lost (or failed) session."""
    last_packet_time: float = 0.0
    """``time.monotonic()`` of the last RTP packet (RTCP does not count: it flows on
    when the camera has frozen), 0.0 before the first."""
    sessions: int = 0
    """Sessions that reached PLAY."""
    protocol_errors: int = 0
    """Malformed messages from the server (skipped)."""
    rejected_packets: int = 0
    """UDP datagrams dropped: from another address or port than the recorder's pinned
    pair, before SETUP was answered, or an RTCP BYE not naming the track's SSRC."""
    round_trips: deque[float] = field(default_factory=lambda: deque(maxlen=RTT_SAMPLES))
    """Seconds from the last requests to their replies (server time included)."""

    @property
    def rtt(self) -> float | None:
        """The path's round trip as the fastest recent request saw it (None before one)."""
        return min(self.round_trips) if self.round_trips else None

    wan_received: int = 0
    """Bytes received on the session's TCP connection and UDP sockets (RTSP, RTP, RTCP;
    after TLS decryption; IP/TCP/UDP headers not counted), over every session."""
    wan_sent: int = 0
    """Bytes sent on them (requests, keepalives, receiver reports)."""
    muted_packets: int = 0
    """RTP packets received while the session was paused or parked (dropped)."""


class _Conn(asyncio.Protocol):
    """The RTSP connection: responses to waiting futures, frames to the source."""

    def __init__(self, source: RtspSource) -> None:
        self.source = source
        self.parser = StreamParser(source._on_frame, max_body_bytes=256 << 10)
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, asyncio.Future[Response]] = {}
        self.closed: asyncio.Future[Loss] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.source.stats.wan_received += len(data)
        self.parser.feed(data)  # interleaved frames are delivered from in here
        while (ev := self.parser.next_event()) is not None:
            if isinstance(ev, Response):
                fut = self.pending.pop(ev.cseq if ev.cseq is not None else -1, None)
                if fut is not None and not fut.done():
                    fut.set_result(ev)
            elif isinstance(ev, Request):
                self.source._server_request(self, ev)
            else:
                self.source.stats.protocol_errors += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self.lose(LossReason.TCP_CLOSED)
        else:
            self.lose(LossReason.TCP_ERROR, type(exc).__name__)

    def lose(self, reason: LossReason, detail: str = "") -> None:
        """End the session with ``reason`` (the first reason wins)."""
        if self.closed.done():
            return
        self.closed.set_result(Loss(reason, detail))
        self.source._early = []  # stop delivering at once: the session is over
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(Lost(reason, detail))
        self.pending.clear()

    def write(self, data: bytes) -> None:
        """Send bytes unless the connection is already gone."""
        if self.transport is not None and not self.transport.is_closing():
            self.source.stats.wan_sent += len(data)
            self.transport.write(data)


class _Udp(asyncio.DatagramProtocol):
    """One UDP port of a track: datagrams from the pinned recorder go to the source."""

    def __init__(self, source: RtspSource, track: int, is_rtcp: bool) -> None:
        self.source = source
        self.track = track
        self.is_rtcp = is_rtcp
        self.pin: UdpPin | None = None
        """The track's accepted sender, shared by its RTP and RTCP ports (set from the
        SETUP reply; until then every datagram is rejected)."""

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.source.stats.wan_received += len(data)
        pin = self.pin
        if pin is None:
            verdict = Verdict.FOREIGN_SENDER
        else:
            verdict = pin.check(addr[0], addr[1], self.is_rtcp, data)
        if verdict is Verdict.ACCEPT:
            self.source._deliver(self.track, self.is_rtcp, bytearray(data))
        else:
            self.source._reject(verdict, addr[0], addr[1])

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (e.g. port unreachable for a receiver report) are not a session loss;
        # the RTSP connection and the owner's freeze detection decide that.
        pass


class RtspSource:
    """Pulls one camera from one RTSP URL, reconnecting until cancelled or closed."""

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
        local_ports: localports.LocalPorts | None = None,
        tls: ssl.SSLContext | None = None,
        autoplay: bool = True,
    ) -> None:
        """``tls``: the client context of an ``rtsps://`` URL (default: verify against
        the system's CAs, :func:`rmfproxy.tls.client_context`)."""
        clean, url_user, url_password = split_credentials(url)
        self.local_ports = local_ports or localports.LocalPorts()
        """Where the UDP ports it binds are registered (the proxy's, shared with its server)."""
        if transport not in ("tcp", "udp"):
            raise ValueError("transport must be 'tcp' or 'udp'")
        self.url = clean
        """The URL used on the wire and in logs: never any userinfo."""
        self.listener = listener
        self.transport = transport
        self.name = name or clean
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.backoff = backoff if backoff is not None else Backoff()
        self.user_agent = user_agent
        self.stats = SourceStats()
        self.autoplay = autoplay
        """PLAY every session it sets up (False: leave it in READY, a warm standby; set by
        :meth:`resume`, :meth:`pause` and :meth:`park` for the sessions that follow)."""
        self.playing = False
        """The current session is playing (PLAY answered, no PAUSE since)."""
        self.pause_ignored = False
        """The server kept sending media more than ``PAUSE_GRACE`` after a PAUSE reply."""
        self._user = username if username is not None else url_user
        self._password = password if password is not None else (url_password or "")
        self._host, self._port = host_port(clean)
        self._tls: ssl.SSLContext | None = None
        if is_tls(clean):
            self._tls = tls if tls is not None else client_context()
        # Per-session state, reset by _close_connection.
        self._conn: _Conn | None = None
        self._cseq = 0
        self._session: SessionHeader | None = None
        self._play_url: str | None = None
        self._sdp: SessionDescription | None = None
        self._muted = False
        self._paused_at = 0.0
        self._channels: list[tuple[int, bool] | None] = [None] * 256
        self._udp: list[asyncio.DatagramTransport] = []
        self._udp_ports: list[int] = []
        self._pins: list[UdpPin] = []
        self._rr_sinks: list[Callable[[bytes], None]] = []
        self._early: list[tuple[int, bool, bytearray]] | None = []
        # Survives reconnects: the last challenge answered (RFC 7616 §3.4: reuse it, new nc).
        self._digest: DigestClient | None = None
        self._challenge: Challenge | None = None
        self._ssrc = random.getrandbits(32)
        self._task: asyncio.Task[Any] | None = None
        self._closing = False
        self._reject_log: RateLimitedLog[str] = RateLimitedLog(REJECT_LOG_INTERVAL)

    @property
    def udp_ports(self) -> tuple[int, ...]:
        """The local UDP ports the current session receives on (empty over TCP)."""
        return tuple(self._udp_ports)

    def __repr__(self) -> str:
        return f"RtspSource(name={self.name!r}, url={self.url!r}, transport={self.transport!r})"

    # the loop --------------------------------------------------------------

    async def run(self) -> None:
        """Connect, play and read; on loss report it, back off, retry.

        Ends only when cancelled (``CancelledError`` propagates, sockets are closed) or
        after :meth:`aclose`.
        """
        if self._task is not None:
            raise RuntimeError("RtspSource.run() is already running")
        self._task = asyncio.current_task()
        if self._tls is not None and self._tls.verify_mode == ssl.CERT_NONE:
            log.warning(
                "upstream.tls_unverified",
                source=self.name,
                url=self.url,
                reason="tls_verify is false: any certificate is accepted",
            )
        self._closing = False  # run again after aclose(): a cold standby started on demand
        try:
            while not self._closing:
                delivered_before = self.stats.packets
                loss = await self._session_end()
                if self._closing:
                    return
                if loss.reason is LossReason.PARKED:
                    continue  # park(): set a new session up at once (not a loss)
                if self.stats.packets > delivered_before:
                    self.backoff.reset()  # that session worked: retry quickly
                delay = self.backoff.next_delay()
                log.warning(
                    "upstream.lost",
                    source=self.name,
                    url=self.url,
                    reason=loss.reason,
                    detail=loss.detail or None,
                    retry_in=round(delay, 3),
                )
                self.listener.on_lost(loss.reason)
                await asyncio.sleep(delay)
                self.stats.reconnects += 1
        finally:
            self._close_connection()
            self._task = None

    async def _session_end(self) -> Loss:
        """Run one session to its end; how it ended. Only cancellation escapes."""
        try:
            return await self._one_session()
        except Lost as lost:
            return lost.loss
        except TimeoutError:
            return Loss(LossReason.TIMEOUT)
        except OSError as exc:
            return Loss(LossReason.IO_ERROR, exc.strerror or type(exc).__name__)
        except (ValueError, IndexError, UnicodeError) as exc:
            # Malformed SDP, Transport, Session...: the parsers' messages carry no secret,
            # but keep the reason short and stable.
            log.info("upstream.protocol_error", source=self.name, error=str(exc)[:200])
            return Loss(LossReason.PROTOCOL_ERROR, type(exc).__name__)
        except Exception as exc:
            # A bug must not stop this camera for good: log it with context and retry.
            log.exception("upstream.internal_error", source=self.name, url=self.url)
            return Loss(LossReason.INTERNAL_ERROR, type(exc).__name__)
        finally:
            self._close_connection()

    async def _one_session(self) -> Loss:
        conn = await self._connect()
        options = await self._request("OPTIONS", self.url, check=False)
        public = parse_public(options.headers.get("Public") or "") if options.status < 300 else []
        resp = await self._request("DESCRIBE", self.url, {"Accept": "application/sdp"})
        if not resp.body:
            raise Lost(LossReason.PROTOCOL_ERROR, "DESCRIBE without SDP")
        sdp = SessionDescription.parse(resp.body.decode("utf-8", "replace"))
        if not sdp.media:
            raise Lost(LossReason.PROTOCOL_ERROR, "SDP without media")
        # RFC 2326 §C.1.1: controls are relative to Content-Base, else Content-Location,
        # else the request URL.
        base = resp.headers.get("Content-Base") or resp.headers.get("Content-Location")
        base = urljoin(self.url, base) if base else self.url
        for i, media in enumerate(sdp.media):
            await self._setup(conn, i, resolve_control(base, media.control))
        play_url = resolve_control(base, sdp.control)  # aggregate control (§C.1.1)
        self._sdp = sdp
        if self.autoplay:
            for pin in self._pins:
                pin.arm()  # media may follow PLAY before its reply: learn unannounced ports now
            await self._request("PLAY", play_url, {"Range": "npt=0.000-"})
            self._play_url = play_url
            self._playing(sdp)
        else:
            # A warm standby: the session stays in READY (RFC 2326 §A.1), no media flows.
            self._play_url = play_url  # aclose() tears it down
            self._muted = True
            self._early = None
            log.info("upstream.ready", source=self.name, url=self.url, tracks=len(sdp.media))
            on_ready = getattr(self.listener, "on_ready", None)
            if on_ready is not None:
                on_ready(sdp)
        assert self._session is not None
        timeout = self._session.timeout or DEFAULT_SESSION_TIMEOUT
        interval = min(MAX_KEEPALIVE_INTERVAL, max(1.0, timeout / 2))
        method = "GET_PARAMETER" if "GET_PARAMETER" in public else "OPTIONS"
        tasks = [
            asyncio.create_task(self._keepalive(conn, interval, method, play_url)),
            asyncio.create_task(self._receiver_reports()),
        ]
        try:
            return await conn.closed
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks)

    def _playing(self, sdp: SessionDescription) -> None:
        """PLAY was answered: tell the listener, then deliver what arrived before the reply."""
        self.playing = True
        self.stats.sessions += 1
        log.info(
            "upstream.connected",
            source=self.name,
            url=self.url,
            tracks=len(sdp.media),
            transport=self.transport,
        )
        self.listener.on_connected(sdp)
        early, self._early = self._early or [], None
        for track, is_rtcp, data in early:
            self._deliver(track, is_rtcp, data)

    # standby -----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """A session is set up (playing, paused or parked)."""
        conn = self._conn
        return conn is not None and not conn.closed.done() and self._play_url is not None

    async def resume(self) -> bool:
        """PLAY the set-up session (RFC 2326 §10.5: after a PAUSE, media resumes); the
        listener hears ``on_connected`` as for a new session. From now on every session
        plays. False if no session is set up or the PLAY failed (the session then ends and
        the listener hears ``on_lost``)."""
        self.autoplay = True
        conn, url, sdp = self._conn, self._play_url, self._sdp
        if self.playing:
            return True
        if conn is None or conn.closed.done() or url is None or sdp is None:
            return False
        self._early = []  # media may come before the reply: held, delivered after it
        self._muted = False
        self._paused_at = 0.0
        for pin in self._pins:
            pin.arm()
        try:
            await self._request("PLAY", url)
        except (Lost, TimeoutError) as exc:
            loss = _loss_of(exc)
            conn.lose(loss.reason, loss.detail)
            return False
        if conn.closed.done():
            return False
        self._playing(sdp)
        return True

    async def pause(self) -> Literal["paused", "refused", "lost"]:
        """PAUSE the playing session (RFC 2326 §10.6): media stops, the session and its
        keepalives stay. ``refused``: the server answered PAUSE with an error (405, 455,
        501...) and the session plays on; ``lost``: no session, or no reply (it ends)."""
        self.autoplay = False
        conn, url = self._conn, self._play_url
        if conn is None or conn.closed.done() or url is None:
            return "lost"
        if not self.playing:
            return "paused"
        self._muted = True  # what is still in flight is not wanted any more
        self._paused_at = 0.0  # media in flight until the reply is not "after the PAUSE"
        try:
            resp = await self._request("PAUSE", url, check=False)
        except (Lost, TimeoutError) as exc:
            loss = _loss_of(exc)
            conn.lose(loss.reason, loss.detail)
            return "lost"
        if not 200 <= resp.status < 300:
            log.info("upstream.pause_refused", source=self.name, status=resp.status)
            self._muted = False  # it plays on
            return "refused"
        self.playing = False
        self._paused_at = time.monotonic()
        return "paused"

    async def park(self) -> None:
        """End the session with TEARDOWN and set a new one up without PLAY (READY, no
        media): a warm standby on a recorder that refuses or ignores PAUSE. The ending is
        not reported as a loss; the listener hears ``on_ready`` for the new session."""
        self.autoplay = False
        conn, url = self._conn, self._play_url
        if conn is None or conn.closed.done():
            return
        self._muted = True
        if url is not None:
            with contextlib.suppress(Lost, TimeoutError, OSError, ValueError):
                async with asyncio.timeout(TEARDOWN_TIMEOUT):
                    await self._send("TEARDOWN", url, None)  # RFC 2326 §10.7
        conn.lose(LossReason.PARKED)

    @property
    def running(self) -> bool:
        """``run()`` is running (a cold standby is not)."""
        return self._task is not None

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        self._early = []
        self._session = None
        self._channels = [None] * 256
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self._tls is not None:
                    _, conn = await loop.create_connection(
                        lambda: _Conn(self),
                        self._host,
                        self._port,
                        ssl=self._tls,
                        server_hostname=self._host,
                    )
                else:
                    _, conn = await loop.create_connection(
                        lambda: _Conn(self), self._host, self._port
                    )
        except TimeoutError:
            raise Lost(LossReason.CONNECT_FAILED, "timeout") from None
        except ssl.SSLError as exc:
            raise self._tls_refused(exc) from None
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise Lost(LossReason.CONNECT_FAILED, why) from None
        self._conn = conn
        return conn

    def _tls_refused(self, exc: ssl.SSLError) -> Lost:
        """The TLS handshake failed: one error line saying why, and the lost reason
        (``tls-verify-failed`` for a certificate we do not trust, else ``tls-failed``)."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            lost = LossReason.TLS_VERIFY_FAILED
            why = f"certificate verify failed: {exc.verify_message}"
        else:
            lost = LossReason.TLS_FAILED
            why = str(exc.reason or type(exc).__name__).lower().replace("_", " ")
        log.error("upstream.tls_refused", source=self.name, url=self.url, reason=why[:200])
        return Lost(lost, why[:200])

    async def _setup(self, conn: _Conn, track: int, url: str) -> None:
        """SETUP one track in the session (RFC 2326 §10.4)."""
        udp: tuple[_Udp, _Udp] | None = None
        if self.transport == "tcp":
            spec = TransportSpec(lower_transport="TCP", interleaved=(2 * track, 2 * track + 1))
        else:
            udp, ports = await self._bind_udp(conn, track)
            spec = TransportSpec(lower_transport="UDP", client_port=ports)
        resp = await self._request("SETUP", url, {"Transport": spec.serialize()})
        session = resp.headers.get("Session")
        if session is None:
            raise Lost(LossReason.PROTOCOL_ERROR, "SETUP reply without Session")
        if self._session is None:
            self._session = SessionHeader.parse(session)
        value = resp.headers.get("Transport")
        reply = TransportSpec.parse(value.split(",")[0]) if value else spec
        if udp is None:
            # The server may pick other channels (§12.39): map what it chose.
            rtp_ch, rtcp_ch = reply.interleaved or (2 * track, 2 * track + 1)
            self._channels[rtp_ch] = (track, False)
            self._channels[rtcp_ch] = (track, True)

            def send_tcp(rr: bytes, ch: int = rtcp_ch) -> None:
                conn.write(_INTERLEAVED.pack(b"$", ch, len(rr)) + rr)

            self._rr_sinks.append(send_tcp)
        else:
            peer = conn.transport.get_extra_info("peername") if conn.transport else None
            # Accept media only from the server (or the source it names, §12.39), from the
            # ports it announced (or, without server_port, the first seen after PLAY), and
            # a BYE only when it names the track's SSRC: see udp_pin.
            host = peer[0] if peer else self._host
            if reply.source and _is_ip(reply.source):
                host = reply.source
            rtp_port, rtcp_port = reply.server_port or (None, None)
            pin = UdpPin(host, rtp_port, rtcp_port, announced_ssrc=reply.ssrc)
            self._pins.append(pin)
            for proto in udp:
                proto.pin = pin
            if reply.server_port is not None:
                rtcp_transport = self._udp[-1]
                target = (host, reply.server_port[1])

                def send_udp(rr: bytes) -> None:
                    if not rtcp_transport.is_closing():
                        self.stats.wan_sent += len(rr)
                        rtcp_transport.sendto(rr, target)

                self._rr_sinks.append(send_udp)

    async def _bind_udp(self, conn: _Conn, track: int) -> tuple[tuple[_Udp, _Udp], tuple[int, int]]:
        """An even/odd port pair (RFC 3550 §11) on the RTSP connection's local address."""
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        family = sock.family if sock is not None else socket.AF_INET
        s1, s2 = _bind_pair(family, conn.transport.get_extra_info("sockname")[0])
        port = s1.getsockname()[1]
        loop = asyncio.get_running_loop()
        rtp_proto = _Udp(self, track, False)
        rtcp_proto = _Udp(self, track, True)
        try:
            t1, _ = await loop.create_datagram_endpoint(lambda: rtp_proto, sock=s1)
        except BaseException:
            s1.close()
            s2.close()
            raise
        self._udp.append(t1)
        try:
            t2, _ = await loop.create_datagram_endpoint(lambda: rtcp_proto, sock=s2)
        except BaseException:
            s2.close()
            raise
        self._udp.append(t2)
        # The client-facing server refuses a client_port that is one of these: a client
        # must never make the proxy send media into its own upstream ports.
        self.local_ports.register(port)
        self.local_ports.register(port + 1)
        self._udp_ports += [port, port + 1]
        return (rtp_proto, rtcp_proto), (port, port + 1)

    # requests ----------------------------------------------------------------

    async def _request(
        self, method: str, url: str, extra: dict[str, str] | None = None, *, check: bool = True
    ) -> Response:
        """Send a request and wait for its reply, answering one 401 with credentials.

        A second 401 is ``Lost(AUTH_FAILED)``; with ``check`` any other non-2xx status is
        ``Lost(RTSP_ERROR, "<status>")``. No reply within ``request_timeout``: ``TimeoutError``.
        """
        resp = await self._send(method, url, extra)
        if resp.status == 401:
            # RFC 2326 §D.1 / RFC 7616 §3.3: answer the challenge, retry once. A stored
            # challenge that now fails (e.g. a stale nonce after reconnecting) is replaced.
            challenge = self._pick_challenge(resp)
            if challenge is None or self._user is None:
                raise Lost(LossReason.AUTH_FAILED, "no credentials for the challenge")
            self._challenge = challenge
            self._digest = DigestClient(self._user, self._password)
            resp = await self._send(method, url, extra)
            if resp.status == 401:
                raise Lost(LossReason.AUTH_FAILED, "credentials refused")
        if check and not 200 <= resp.status < 300:
            log.info(
                "upstream.rtsp_error",
                source=self.name,
                method=method,
                status=resp.status,
                reason=resp.reason[:60],
            )
            raise Lost(LossReason.RTSP_ERROR, f"{method} {resp.status}")
        return resp

    async def _send(self, method: str, url: str, extra: dict[str, str] | None) -> Response:
        conn = self._conn
        if conn is None or conn.closed.done():
            loss = conn.closed.result() if conn is not None else Loss(LossReason.TCP_CLOSED)
            raise Lost(loss.reason, loss.detail)
        self._cseq += 1
        cseq = self._cseq
        headers = Headers({"CSeq": str(cseq), "User-Agent": self.user_agent})
        if self._session is not None:
            headers["Session"] = self._session.id
        for k, v in (extra or {}).items():
            headers[k] = v
        if self._challenge is not None and self._digest is not None:
            # Keep answering the last challenge (new nc each time, RFC 7616 §3.4).
            headers["Authorization"] = self._digest.authorization(self._challenge, method, url)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Response] = loop.create_future()
        conn.pending[cseq] = fut
        try:
            conn.write(Request(method, url, headers).serialize())
            sent = loop.time()
            async with asyncio.timeout(self.request_timeout):
                resp = await fut
            self.stats.round_trips.append(loop.time() - sent)
            return resp
        finally:
            conn.pending.pop(cseq, None)

    @staticmethod
    def _pick_challenge(resp: Response) -> Challenge | None:
        """Digest (with an algorithm we speak) before Basic (RFC 7616 §3.7)."""
        try:
            challenges = parse_challenges(resp.headers.get_all("WWW-Authenticate"))
        except ValueError:
            return None
        digest = [
            c
            for c in challenges
            if c.scheme == "Digest" and c.nonce and c.algorithm.upper() in _DIGEST_ALGORITHMS
        ]
        if digest:
            return digest[0]
        return next((c for c in challenges if c.scheme == "Basic"), None)

    def _server_request(self, conn: _Conn, req: Request) -> None:
        """Requests from the server (RFC 2326 §10: OPTIONS, GET_PARAMETER, ANNOUNCE, ...)."""
        headers = Headers({"CSeq": req.headers.get("CSeq") or "0"})
        if self._session is not None:
            headers["Session"] = self._session.id
        conn.write(Response(200, headers=headers).serialize())
        if req.method.upper() == "REDIRECT":
            # §10.10: the server wants us elsewhere; reconnecting is the safe answer.
            conn.lose(LossReason.REDIRECT)

    async def _keepalive(self, conn: _Conn, interval: float, method: str, url: str) -> None:
        """Keep the session alive (RFC 2326 §12.37) and probe the server for replies. A
        session without media (a warm standby) is probed at least every
        ``STANDBY_KEEPALIVE`` seconds: its keepalives are all that tells the recorder is up."""
        while True:
            await asyncio.sleep(interval if self.playing else min(interval, STANDBY_KEEPALIVE))
            try:
                resp = await self._request(method, url, check=False)
            except (TimeoutError, Lost):
                conn.lose(LossReason.KEEPALIVE_FAILED)
                return
            except Exception:
                log.exception("upstream.keepalive_error", source=self.name)
                conn.lose(LossReason.KEEPALIVE_FAILED)
                return
            if resp.status == 454:  # Session Not Found: the server forgot us
                conn.lose(LossReason.KEEPALIVE_FAILED)
                return

    async def _receiver_reports(self) -> None:
        """Minimal RTCP RRs upstream so recorders that expect them keep the session."""
        rr = rtcp.build_receiver_report(self._ssrc, cname="rmfproxy")
        while True:
            if self.playing:  # nothing to report on a paused or parked session
                for send in self._rr_sinks:
                    send(rr)
            # Rejections suppressed by the rate limit are summed up here.
            for _, count in self._reject_log.flush(time.monotonic()):
                self._log_rejected(count, None, None)
            await asyncio.sleep(RR_INTERVAL)

    # packets -----------------------------------------------------------------

    def _on_frame(self, channel: int, payload: bytearray) -> None:
        entry = self._channels[channel]
        if entry is not None:
            self._deliver(entry[0], entry[1], payload)

    def _reject(self, verdict: Verdict, host: str, port: int) -> None:
        """Count a dropped datagram; log it at most once per source per interval."""
        self.stats.rejected_packets += 1
        count = self._reject_log.hit("udp", time.monotonic())  # one key: one line per source
        if count is not None:
            self._log_rejected(count, verdict.value, f"{host}:{port}")

    def _log_rejected(self, count: int, reason: str | None, sender: str | None) -> None:
        """One line for ``count`` rejections (the last with its reason and sender)."""
        log.warning(
            "upstream.udp_rejected",
            source=self.name,
            count=count,
            reason=reason,
            sender=sender,
            total=self.stats.rejected_packets,
        )

    def _deliver(self, track: int, is_rtcp: bool, data: bytearray) -> None:
        if self._muted:
            # Paused or parked: media still in flight is dropped; media long after the
            # PAUSE reply means the server ignores PAUSE (the owner falls back to park()).
            if not is_rtcp:
                self.stats.muted_packets += 1
                if self._paused_at and time.monotonic() - self._paused_at > PAUSE_GRACE:
                    self.pause_ignored = True
            return
        early = self._early
        if early is not None:
            # Before on_connected (or after the loss): hold a bounded number back.
            if len(early) < EARLY_PACKETS:
                early.append((track, is_rtcp, data))
            return
        st = self.stats
        st.packets += 1
        st.bytes += len(data)
        if is_rtcp:
            # RFC 3550 §6.6: BYE means this source is leaving.
            if rtcp.is_rtcp_bye(data) and self._conn is not None:
                self._conn.lose(LossReason.RTCP_BYE)
                return
        else:
            st.last_packet_time = time.monotonic()
        self.listener.on_packet(track, is_rtcp, data)

    # shutdown ----------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop for good: TEARDOWN the session (best effort, at most 0.5 s), end ``run()``.

        ``run()`` then returns (or raises ``CancelledError`` if it was between sessions);
        ``on_lost`` is not called for this ending.
        """
        self._closing = True
        if self._play_url is not None and self._conn is not None:
            with contextlib.suppress(Lost, TimeoutError, OSError, ValueError):
                async with asyncio.timeout(TEARDOWN_TIMEOUT):
                    await self._send("TEARDOWN", self._play_url, None)  # RFC 2326 §10.7
        task = self._task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            await asyncio.wait([task])
        self._close_connection()

    stop = aclose

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._early = []
        self._play_url = None
        self._sdp = None
        self.playing = False
        self._muted = False
        self._paused_at = 0.0
        self._rr_sinks = []
        if conn is not None:
            conn.lose(LossReason.CLOSED)
            if conn.transport is not None:
                conn.transport.abort()
        for t in self._udp:
            t.abort()
        self._udp = []
        for p in self._udp_ports:
            self.local_ports.unregister(p)
        self._udp_ports = []
        self._pins = []


def _loss_of(exc: Lost | TimeoutError) -> Loss:
    """What a request that failed with ``exc`` means for its session."""
    return exc.loss if isinstance(exc, Lost) else Loss(LossReason.TIMEOUT)


def _bind_pair(family: int, local: str) -> tuple[socket.socket, socket.socket]:
    """Two UDP sockets on ``local``: an even port and the odd one above it (RFC 3550 §11)."""
    for _ in range(64):
        s1 = socket.socket(family, socket.SOCK_DGRAM)
        s2 = socket.socket(family, socket.SOCK_DGRAM)
        try:
            s1.bind((local, 0))
            port = s1.getsockname()[1]
            if port % 2 or port == 65535:
                raise OSError("odd port")
            s2.bind((local, port + 1))
        except OSError:
            s1.close()
            s2.close()
            continue
        with contextlib.suppress(OSError):
            # Room for a keyframe burst while the loop is busy elsewhere.
            s1.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        return s1, s2
    raise Lost(LossReason.UDP_BIND_FAILED)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
