"""One client's RTSP connection: parses requests and answers them (RFC 2326 §10).

Every request is answered synchronously: nothing here awaits, so a request is
handled completely before the next byte is read, and a PLAY reply is written
before the first media packet of that session.

What a client cannot do to the proxy from here:

- *Flood it with pipelined requests*: replies are flow-controlled. Once the
  transport's unsent bytes pass a high-water mark (``ServeLimits.write_high_water``,
  or the client buffer while an interleaved session plays) the connection stops
  handling requests and stops reading (``pause_writing``); it goes on when the
  client has read (``resume_writing``). The parser holds a bounded number of parsed
  requests; the rest waits in the kernel, and the client's own sends block.
- *Hold a connection forever*: a started request must arrive whole within
  ``request_timeout``; a connection without a live session is closed after
  ``idle_timeout`` (:mod:`rmfproxy.serve.deadlines`). Connections are counted per
  address and in total (:mod:`rmfproxy.serve.limits`); past a limit the first
  request gets 503 with Retry-After and the connection is closed.
- *Flood the log*: refusals are logged once per client address per interval with a
  count (``RtspServer.log_refusal``); failed logins may ban the address for a while.
- *Crash the handler*: malformed input becomes a 4xx (a last-resort catch answers
  400/500 and logs one line), never a traceback or a dropped connection.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

import structlog

from rmfproxy.rtsp.auth import AuthFailure, NonceCounts
from rmfproxy.rtsp.errors import ParseError
from rmfproxy.rtsp.headers import (
    RtpInfo,
    SessionHeader,
    TransportSpec,
    format_rtp_info,
    parse_transports,
)
from rmfproxy.rtsp.message import Headers, Request, Response, StreamParser
from rmfproxy.serve.close_reason import CloseReason
from rmfproxy.serve.deadlines import ConnectionDeadlines
from rmfproxy.serve.replay import (
    REPLAY_TAG,
    ReplayBusy,
    ReplayRangeError,
    ReplayRequest,
    ReplayStream,
    ReplayUnsupported,
    requires,
)
from rmfproxy.serve.session import ALLOWED, ClientSession, State, new_session_id
from rmfproxy.serve.sink import ClientSink, TcpTrack, UdpTrack
from rmfproxy.serve.stream import MediaStream

if TYPE_CHECKING:
    from rmfproxy.serve.server import RtspServer

log = structlog.get_logger(__name__)

PUBLIC = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER"
_ids = itertools.count(1)
_BATCH = 64
"""Requests handled per loop iteration and connection (fairness; see _process)."""


class RequestError(Exception):
    """A request that gets an error status instead of being served."""

    def __init__(self, status: int, why: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(why)
        self.status = status
        self.why = why
        self.headers = headers or {}


_SESSIONLESS_PATH_OK = frozenset({"OPTIONS", "GET_PARAMETER", "SET_PARAMETER"})
"""Methods that may name the server root instead of the session's camera (keepalives)."""


def split_uri(uri: str) -> tuple[str, int | None]:
    """``rtsp://h/cam/trackID=1`` -> ("cam", 1); ``rtsp://h/cam`` -> ("cam", None).

    A URI that does not parse (``rtsp://[::1/cam``) is a 400; one with a query or a
    fragment names nothing this server serves (404): ``cam/trackID=0?x`` must not
    set up track 0.
    """
    if "://" in uri:
        try:
            parts_ = urlsplit(uri)
        except ValueError:
            raise RequestError(400, "malformed request URI") from None
        if parts_.query or parts_.fragment or "?" in uri or "#" in uri:
            raise RequestError(404, "no such path (query or fragment)")
        path = parts_.path
    else:
        if "?" in uri or "#" in uri:
            raise RequestError(404, "no such path (query or fragment)")
        path = uri
    parts = [p for p in path.split("/") if p]
    track: int | None = None
    if parts and parts[-1].startswith("trackID="):
        digits = parts.pop()[len("trackID=") :]
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 3:
            raise RequestError(404, "bad track id")
        track = int(digits)
    return "/".join(parts), track


def _digest_uri_matcher(request_uri: str) -> Callable[[str], bool]:
    """Which Digest ``uri`` values may stand for a request to ``request_uri``.

    The request URI itself (FFmpeg sends the full URL of every request), or any URL
    of the same camera's aggregate (live555 and VLC send the base URL, with or
    without the trailing slash, for every request): never another camera or track.
    """
    try:
        want: tuple[str, int | None] | None = split_uri(request_uri)
    except RequestError:
        want = None

    def ok(uri: str) -> bool:
        if uri == request_uri:
            return True
        if want is None or request_uri == "*":
            return False
        try:
            path, track = split_uri(uri)
        except RequestError:
            return False
        return path == want[0] and track in (None, want[1])

    return ok


class RtspConnection(asyncio.Protocol):
    """Serves RTSP requests on one TCP connection (``tls``: on the RTSPS listener, where
    the TLS handshake is over before ``connection_made``)."""

    def __init__(self, server: RtspServer, *, tls: bool = False) -> None:
        self.server = server
        self.tls = tls
        self.listener = "rtsps" if tls else "rtsp"
        """Which listener the connection came in on (for logs)."""
        self.id = next(_ids)
        self.transport: asyncio.Transport | None = None
        limits = server.limits
        self.parser = StreamParser(self._on_frame, max_body_bytes=limits.max_body_bytes)
        self.peer = "?"
        self.ip = "?"
        self.sessions: dict[str, ClientSession] = {}
        self._after_reply: Callable[[], None] | None = None
        self._user: str | None = None
        self._loop = asyncio.get_running_loop()
        self.deadlines = ConnectionDeadlines(
            limits.request_timeout, limits.idle_timeout, self._loop.time()
        )
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._admitted = False
        self.refused: str | None = None
        """Why the connection limits refused this connection (it answers 503, closes)."""
        self.write_paused = False
        """The transport's unsent bytes are over the high-water mark: requests wait."""
        self.writable = asyncio.Event()
        """Set while not write_paused: replay sessions wait on it (TCP back-pressure)."""
        self.writable.set()
        self._high_water = limits.write_high_water
        self._frames = 0
        self._yielded = False
        self._nonce_counts: NonceCounts | None = None

    # asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Bound what the kernel queues for this client too, or a stalled client
            # could hide megabytes in an autotuned send buffer before the proxy notices.
            # Until an interleaved session plays, replies are all there is: a small
            # buffer, so a client that sends without reading is paused after kilobytes
            # of replies, not megabytes (raised in _update_write_limits).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._high_water)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.ip = str(peer[0]) if peer else "?"
        self.transport.set_write_buffer_limits(high=self._high_water)
        self.server.connections.add(self)
        self.refused = self.server.connection_limits.admit(self.ip)
        self._admitted = self.refused is None
        if self.refused is not None:
            self.server.log_refusal(
                "rtsp.connection_refused", self.ip, self.refused, reason=self.refused
            )
        self._arm_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self._admitted:
            self._admitted = False
            self.server.connection_limits.release(self.ip)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for session in list(self.sessions.values()):
            if session.uses_tcp:
                self.server.close_session(session, CloseReason.CONNECTION_CLOSED)
        self.sessions.clear()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed(data)
        except Exception as exc:  # last resort: the parser must not raise
            self._internal_error("parse", exc)
            if self.transport is not None:
                self.transport.abort()
            return
        self._process()

    def pause_writing(self) -> None:
        # The client does not read what we write: stop reading what it sends.
        self.write_paused = True
        self.writable.clear()
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.writable.set()
        self._process()

    def _process(self) -> None:
        """Handle queued requests until none is left or the client must read first.

        At most ``_BATCH`` requests per call: a client that pipelines thousands (and
        reads the replies) then waits for the next loop iteration, so other clients and
        the media path are never held up for more than a batch.
        """
        self._yielded = False
        frames_before = self._frames
        handled = 0
        while not self.write_paused and self.transport is not None:
            if handled >= _BATCH:
                self._yielded = True
                self.transport.pause_reading()
                self._loop.call_soon(self._process)
                break
            try:
                event = self.parser.next_event()
            except Exception as exc:  # last resort
                self._internal_error("parse", exc)
                self.transport.abort()
                return
            if event is None:
                break
            handled += 1
            if self.refused is not None:
                self._refuse_connection(event)
                return
            if isinstance(event, ParseError):
                self.server.log_refusal(
                    "rtsp.bad_request",
                    self.ip,
                    str(event.status),
                    client=self.peer,
                    status=event.status,
                    reason=str(event),
                )
                self._send(Response(event.status, headers=Headers()))
            elif isinstance(event, Request):
                if self.server.fault_stall_rtsp:
                    continue  # simulated unresponsive server: read and ignore
                self._handle(event)
            # Responses from a client (to nothing we sent) are ignored.
        if self.transport is None:
            return
        held = self.write_paused or self._yielded
        if not held and not self.transport.is_closing():
            self.transport.resume_reading()
        self.deadlines.on_input(
            self._loop.time(),
            completed=handled + self._frames - frames_before,
            partial=self.parser.buffered > 0 and not held,
        )
        self._arm_timer()

    def _on_frame(self, channel: int, payload: bytearray) -> None:
        # Clients send RTCP receiver reports on the odd channels: a keepalive.
        self._frames += 1
        for session in self.sessions.values():
            session.touch()

    # limits ----------------------------------------------------------------

    def has_session(self) -> bool:
        """True while a session set up on this connection is open."""
        for sid in [s.id for s in self.sessions.values() if s.state is State.CLOSED]:
            del self.sessions[sid]
        return bool(self.sessions)

    def _arm_timer(self) -> None:
        """Arm the one timer at the next deadline (after aioquic's get_timer)."""
        if self.transport is None:
            return
        if self.refused is not None:
            # A refused connection gets a short grace to send its first request.
            at: float | None = self._loop.time() + min(self.server.limits.request_timeout, 2.0)
            if self._timer is not None:
                return
        else:
            at = self.deadlines.deadline(has_session=self.has_session())
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None:
            self._timer = self._loop.call_at(at, self._on_timer)

    def rearm(self) -> None:
        """Sessions changed elsewhere (expired, closed): the idle deadline may apply now."""
        self._arm_timer()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        transport = self.transport
        if transport is None:
            return
        if self.refused is not None:
            transport.abort()
            return
        reason = self.deadlines.expired(self._loop.time(), has_session=self.has_session())
        if reason is None:
            self._arm_timer()
            return
        self.server.log_refusal(
            "rtsp.connection_timeout", self.ip, reason.value, client=self.peer, reason=reason.value
        )
        if transport.get_write_buffer_size():
            transport.abort()  # it does not read either: nothing to flush to
        else:
            transport.close()

    def _refuse_connection(self, event: Request | Response | ParseError) -> None:
        """The server is full: answer the first request 503 (with its CSeq) and close."""
        assert self.transport is not None
        headers = Headers()
        if isinstance(event, Request) and (cseq := event.headers.get("CSeq")) is not None:
            headers["CSeq"] = cseq
        headers["Server"] = self.server.name
        headers["Retry-After"] = str(self.server.limits.retry_after)
        self._send(Response(503, headers=headers))
        self.transport.close()

    def _update_write_limits(self) -> None:
        """While an interleaved session plays, replies share the client's media buffer."""
        if self.transport is None:
            return
        playing = any(s.uses_tcp and s.state is State.PLAYING for s in self.sessions.values())
        high = self.server.client_buffer_bytes if playing else self.server.limits.write_high_water
        if high != self._high_water:
            self._high_water = high
            self.transport.set_write_buffer_limits(high=high, low=high // 2)
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sndbuf = self.server.client_buffer_bytes // 2 if playing else high
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)

    def _internal_error(self, where: str, exc: BaseException) -> None:
        """One log line, no traceback for input errors; a bug keeps its traceback."""
        input_error = isinstance(exc, (ValueError, UnicodeError))
        self.server.log_refusal(
            "rtsp.handler_error",
            self.ip,
            f"{where}:{type(exc).__name__}",
            client=self.peer,
            where=where,
            error=type(exc).__name__,
            reason=str(exc)[:120],
            exc_info=None if input_error else exc,
        )

    # requests --------------------------------------------------------------

    def _send(self, response: Response) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response.serialize())

    def _handle(self, req: Request) -> None:
        headers = Headers()
        cseq = req.headers.get("CSeq")
        if cseq is not None:
            headers["CSeq"] = cseq
        headers["Server"] = self.server.name
        try:
            if cseq is None or not cseq.strip().isdigit():
                raise RequestError(400, "missing or bad CSeq")
            handler = getattr(self, "_on_" + req.method.lower(), None)
            if handler is None or req.method not in PUBLIC.split(", "):
                raise RequestError(501, f"method {req.method} not implemented", {"Allow": PUBLIC})
            self._check_require(req)
            if req.method != "OPTIONS":
                # Every method but OPTIONS needs credentials (RFC 2326 §10.1 allows
                # OPTIONS at any time; clients probe with it before authenticating).
                self._user = self._authorize(req, None if req.uri == "*" else self._camera_of(req))
            response: Response = handler(req, headers)
        except RequestError as err:
            self._after_reply = None
            for k, v in err.headers.items():
                headers[k] = v
            if err.status != 401:  # 401s are logged by _authorize
                self.server.log_refusal(
                    "rtsp.request_refused",
                    self.ip,
                    str(err.status),
                    client=self.peer,
                    method=req.method[:20],
                    status=err.status,
                    reason=err.why,
                )
            response = Response(err.status, headers=headers)
        except Exception as exc:  # last resort: answer, never drop the client
            self._after_reply = None
            self._internal_error(req.method[:20], exc)
            status = 400 if isinstance(exc, (ValueError, UnicodeError)) else 500
            response = Response(status, headers=headers)
        self._send(response)
        self._update_write_limits()
        after, self._after_reply = self._after_reply, None
        if after is not None:
            after()

    def _session_for(self, req: Request) -> ClientSession | None:
        value = req.headers.get("Session")
        if value is None:
            return None
        try:
            sid = SessionHeader.parse(value).id
        except ValueError:
            raise RequestError(454, "unparseable Session header") from None
        session = self.server.sessions.get(sid)
        if session is None:
            raise RequestError(454, "unknown session")
        if req.uri != "*":
            # A session is valid for its own camera's URIs only: PLAY on camera B with
            # camera A's session is "Session Not Found" (RFC 2326 §11.3.8: the id is
            # not valid for this resource), not a way to play A under B's rights. A
            # keepalive may name the server root.
            path = split_uri(req.uri)[0]
            if path != session.path and (path or req.method not in _SESSIONLESS_PATH_OK):
                raise RequestError(454, "session not found for this URI")
        if req.method not in ALLOWED or session.state not in ALLOWED[req.method]:
            allowed = sorted(s.value for s in ALLOWED.get(req.method, ()))
            raise RequestError(
                455,
                f"{req.method} not valid in state {session.state.value}, allowed in {allowed}",
                {"Allow": PUBLIC},
            )
        if session.user != self._user:
            raise RequestError(454, "session belongs to another user")
        session.touch()
        return session

    def _authorize(self, req: Request, path: str | None) -> str | None:
        access = self.server.access
        if access is None:
            return None
        banned = self.server.auth_bans.banned_for(self.ip, self.server.clock())
        if banned > 0:
            raise RequestError(
                503,
                "address banned after failed authentications",
                {"Retry-After": str(math.ceil(banned))},
            )
        if self._nonce_counts is None:
            self._nonce_counts = access.new_counts()
        decision = access.check(
            req,
            path,
            time.time(),
            binding=f"conn-{self.id}",
            counts=self._nonce_counts,
            uri_ok=_digest_uri_matcher(req.uri),
        )
        if decision.status == 401:
            assert decision.challenge is not None
            self._auth_refused(req, decision.failure)
            raise RequestError(
                401, "authentication required", {"WWW-Authenticate": decision.challenge}
            )
        self.server.auth_bans.succeeded(self.ip)
        if decision.status != 200:
            raise RequestError(decision.status, "camera not permitted for user")
        return decision.user

    def _auth_refused(self, req: Request, failure: AuthFailure | None) -> None:
        if failure is None:
            # No credentials: the first step of every Digest login, not a failure.
            self.server.log_refusal(
                "rtsp.auth_challenge", self.ip, "challenge", level="debug", client=self.peer
            )
            return
        self.server.log_refusal(
            "rtsp.auth_failed",
            self.ip,
            "auth",
            client=self.peer,
            method=req.method[:20],
            reason=failure.value,
        )
        if failure is not AuthFailure.STALE and self.server.auth_bans.failed(
            self.ip, self.server.clock()
        ):
            log.warning(
                "rtsp.auth_banned",
                client=self.ip,
                seconds=self.server.auth_bans.seconds,
                failures=self.server.auth_bans.after,
            )

    def _check_require(self, req: Request) -> None:
        """551 + Unsupported for any Require option tag this server lacks (RFC 2326
        §12.32); ``onvif-replay`` is known only with a replay provider."""
        tags = requires(req.headers)
        missing = [t for t in tags if t != REPLAY_TAG or self.server.replay is None]
        if missing:
            raise RequestError(551, "option not supported", {"Unsupported": ", ".join(missing)})

    def _camera_of(self, req: Request) -> str:
        """The camera a request's URI names (rights are per camera, live or replay)."""
        path = split_uri(req.uri)[0]
        return self._replay_camera(req, path) or path

    def _replay_camera(self, req: Request, path: str) -> str | None:
        """The camera a replay request is for; None for a live request."""
        if REPLAY_TAG in requires(req.headers):
            return path
        prefix = self.server.replay_prefix
        if prefix and self.server.replay is not None and path.startswith(prefix):
            # GStreamer 1.22 rtspsrc with onvif-mode=true sends no "Require: onvif-replay"
            # (only Range: clock= and Rate-Control on PLAY): it can replay only from a
            # URL that says "replay" itself, as NVRs' own playback URLs do.
            return path[len(prefix) :]
        return None

    def _replay_stream(self, path: str) -> ReplayStream:
        """A replay session's own media source (Require: onvif-replay)."""
        assert self.server.replay is not None  # _check_require answered 551 otherwise
        try:
            source = self.server.replay.open(path)
        except ReplayBusy as exc:
            raise RequestError(503, str(exc), {"Retry-After": "1"}) from None
        if source is None:
            raise RequestError(404, "no such camera")
        return ReplayStream(source, self.writable, path=path)

    def _on_options(self, req: Request, headers: Headers) -> Response:
        self._session_for(req)
        headers["Public"] = PUBLIC
        return Response(200, headers=headers)

    def _on_get_parameter(self, req: Request, headers: Headers) -> Response:
        self._session_for(req)  # a keepalive (RFC 2326 §10.8)
        return Response(200, headers=headers)

    def _on_set_parameter(self, req: Request, headers: Headers) -> Response:
        self._session_for(req)
        if req.body:
            raise RequestError(451, "no settable parameters")
        return Response(200, headers=headers)

    def _on_describe(self, req: Request, headers: Headers) -> Response:
        path, track = split_uri(req.uri)
        camera = self._replay_camera(req, path)
        if camera is not None:
            assert self.server.replay is not None
            try:
                sdp = self.server.replay.describe(camera)
            except ReplayBusy as exc:
                raise RequestError(503, str(exc), {"Retry-After": "1"}) from None
            if sdp is None or track is not None:
                raise RequestError(404, "no such camera")
        else:
            stream = self.server.resolve(path)
            if stream is None or track is not None:
                raise RequestError(404, "no such camera")
            sdp = stream.sdp()
        if sdp is None:
            raise RequestError(503, "camera has no source yet", {"Retry-After": "1"})
        base = self._own_scheme(req.uri).rstrip("/") + "/"
        headers["Content-Base"] = base
        headers["Content-Type"] = "application/sdp"
        return Response(200, headers=headers, body=sdp.serialize().encode())

    def _on_setup(self, req: Request, headers: Headers) -> Response:
        path, track = split_uri(req.uri)
        user = self._user
        camera = self._replay_camera(req, path)
        replay = camera is not None
        stream: MediaStream | None = None if camera is None else self._replay_stream(camera)
        if stream is None:
            stream = self.server.resolve(path)
        if stream is None:
            raise RequestError(404, "no such camera")
        sdp = stream.sdp()
        if sdp is None:
            raise RequestError(503, "camera has no source yet", {"Retry-After": "1"})
        if track is None:
            if len(sdp.media) != 1:
                raise RequestError(459, "aggregate SETUP needs a track URL")
            track = 0
        if track >= len(sdp.media):
            raise RequestError(404, "no such track")
        session = self._session_for(req)
        if session is not None and session.path != path:
            raise RequestError(459, "session belongs to another camera")
        if session is not None and replay != isinstance(session.stream, ReplayStream):
            raise RequestError(459, "a session is either live or replay")
        value = req.headers.get("Transport")
        if value is None:
            raise RequestError(461, "missing Transport header")
        try:
            offers = parse_transports(value)
        except ValueError as exc:
            raise RequestError(400, f"bad Transport: {exc}") from None
        chosen = self._choose_transport(offers, session, track)
        if session is None:
            session = ClientSession(
                id=new_session_id(),
                path=path,
                stream=stream,
                user=user,
                timeout=self.server.session_timeout,
                connection_id=self.id,
                clock=self.server.clock,
            )
            self.server.sessions[session.id] = session
            log.info(
                "rtsp.session_created",
                client=self.peer,
                camera=path,
                session=session.id[:6],
                user=user,
                listener=self.listener,
            )
        self.sessions[session.id] = session
        dest, reply = chosen
        session.tracks[track] = dest
        reply.ssrc = session.stream.ssrc(track)
        if isinstance(dest, UdpTrack):
            self.server.udp_peers[dest.rtcp_addr] = session
        headers["Transport"] = reply.serialize()
        headers["Session"] = SessionHeader(session.id, session.timeout).serialize()
        return Response(200, headers=headers)

    def _choose_transport(
        self, offers: list[TransportSpec], session: ClientSession | None, track: int
    ) -> tuple[TcpTrack | UdpTrack, TransportSpec]:
        refused: list[str] = []
        for offer in offers:
            if offer.profile != "RTP/AVP" or not offer.unicast:
                continue
            if offer.lower_transport == "TCP":
                used = {
                    c
                    for t in (session.tracks.values() if session else ())
                    if isinstance(t, TcpTrack)
                    for c in (t.rtp_channel, t.rtcp_channel)
                }
                a, b = offer.interleaved or (2 * track, 2 * track + 1)
                if a in used or b in used or not (0 <= a <= 255 and 0 <= b <= 255):
                    a = next(c for c in range(0, 254, 2) if c not in used)
                    b = a + 1
                reply = TransportSpec(
                    profile="RTP/AVP", lower_transport="TCP", unicast=True, interleaved=(a, b)
                )
                return TcpTrack(a, b), reply
            if self.tls:
                # RFC 7826 §19.2 (RTSPS): media over UDP would leave the encrypted
                # connection and travel in clear; without SRTP, interleaved TCP only.
                refused.append("over RTSPS media is sent interleaved only (RTP/AVP/TCP)")
                continue
            if offer.client_port is not None and self.server.udp_ports is not None:
                host = self.peer.rpartition(":")[0]
                if offer.destination not in (None, host):
                    continue  # never send media to a third party
                cp = offer.client_port
                why = self._refuse_client_ports(host, cp)
                if why is not None:
                    refused.append(why)
                    continue
                reply = TransportSpec(
                    profile="RTP/AVP",
                    lower_transport="UDP",
                    unicast=True,
                    client_port=cp,
                    server_port=self.server.udp_ports,
                )
                return UdpTrack((host, cp[0]), (host, cp[1])), reply
        if refused:
            raise RequestError(461, "; ".join(refused))
        raise RequestError(
            461,
            "no supported transport offered (RTP/AVP unicast over "
            "TCP interleaved or UDP with client_port)",
        )

    def _refuse_client_ports(self, host: str, ports: tuple[int, int]) -> str | None:
        """Why media must not go to ``host``'s ``ports`` (None: they are fine).

        Port 0 and the privileged ports are no RTP receiver's; on this very host, the
        proxy's own ports (its client-facing pair, an upstream source's pair) would
        loop media back into it, and its own RTCP would keep the session alive.
        """
        if min(ports) < 1024:
            return f"client_port {ports[0]}-{ports[1]} below 1024"
        if any(self.server.is_own_udp_port(host, p) for p in ports):
            return f"client_port {ports[0]}-{ports[1]} is the proxy's own"
        return None

    def _on_play(self, req: Request, headers: Headers) -> Response:
        session = self._session_for(req)
        if session is None:
            raise RequestError(454, "PLAY needs a session")
        replay = session.stream if isinstance(session.stream, ReplayStream) else None
        if replay is not None:
            if session.state is State.PLAYING and session.sink is not None:
                session.stream.detach(session.sink)  # PLAY while playing: a seek
                session.sink = None
                session.state = State.READY
            range_value = self._seek(replay, req, session.uses_tcp)
        if session.state is State.PLAYING:
            headers["Session"] = SessionHeader(session.id, session.timeout).serialize()
            headers["Range"] = "npt=now-"
            return Response(200, headers=headers)
        sink = ClientSink(
            tcp=self.transport if session.uses_tcp else None,
            udp_rtp=self.server.udp_rtp,
            udp_rtcp=self.server.udp_rtcp,
            tracks=session.tracks,
            limit=self.server.client_buffer_bytes,
            on_close=lambda reason: self.server.close_session(session, reason),
            clock=self.server.clock,
        )
        base = self._own_scheme(req.uri).rstrip("/")
        if split_uri(req.uri)[1] is not None:
            base = base.rpartition("/")[0]
        starts = session.stream.start_points()
        infos = [
            RtpInfo(f"{base}/trackID={t}", starts[t].sequence, starts[t].rtptime)
            for t in sorted(session.tracks)
            if t in starts
        ]
        headers["Session"] = SessionHeader(session.id, session.timeout).serialize()
        headers["Range"] = "npt=now-" if replay is None else range_value
        if replay is not None:
            # A replay starts on a clean point and waits for the client to read:
            # nothing to skip, even with old data still in the buffer after a seek.
            sink.skipping = False
        if infos:
            headers["RTP-Info"] = format_rtp_info(infos)
        session.sink = sink
        session.state = State.PLAYING

        def start() -> None:
            # After the reply is written: attaching may send the buffered GOP at once,
            # and nothing awaits in between, so RTP-Info stays exact.
            if session.state is State.PLAYING and session.sink is sink:
                session.stream.attach(sink)

        self._after_reply = start
        log.info(
            "rtsp.play",
            client=self.peer,
            camera=session.path,
            session=session.id[:6],
            transport="tcp" if session.uses_tcp else "udp",
            listener=self.listener,
        )
        return Response(200, headers=headers)

    def _own_scheme(self, uri: str) -> str:
        """``uri`` as this listener's URL: a client that names ``rtsp://`` on the TLS
        listener gets ``rtsps://`` back in Content-Base and RTP-Info (RFC 7826 §19.2), so
        the URLs it follows stay on TLS."""
        if self.tls and uri[:7].lower() == "rtsp://":
            return "rtsps://" + uri[7:]
        return uri

    def _seek(self, replay: ReplayStream, req: Request, over_tcp: bool) -> str:
        """Position a replay session for this PLAY; the reply's Range value."""
        try:
            request = ReplayRequest.from_headers(req.headers)
            start = replay.seek(request, over_tcp=over_tcp)
        except ReplayUnsupported as exc:
            raise RequestError(551, str(exc)) from None
        except ReplayBusy as exc:
            retry = {"Retry-After": str(self.server.limits.retry_after)}
            raise RequestError(503, str(exc), retry) from None
        except ReplayRangeError as exc:
            raise RequestError(457, str(exc)) from None
        except ValueError as exc:
            raise RequestError(400, str(exc)) from None
        return start.range_header()

    def _on_pause(self, req: Request, headers: Headers) -> Response:
        session = self._session_for(req)
        if session is None:
            raise RequestError(454, "PAUSE needs a session")
        quirk = self.server.fault_pause if not isinstance(session.stream, ReplayStream) else ""
        if quirk == "refuse":
            raise RequestError(501, "PAUSE is not supported on live streams")
        if quirk == "ignore":
            headers["Session"] = SessionHeader(session.id, session.timeout).serialize()
            return Response(200, headers=headers)  # and the media goes on
        # A live session stops getting media (its sink is detached) and keeps its tracks;
        # PLAY attaches a new sink, which starts at the buffered GOP (RFC 2326 §10.6).
        if session.sink is not None:
            session.stream.detach(session.sink)
            session.sink = None
        session.state = State.READY
        headers["Session"] = SessionHeader(session.id, session.timeout).serialize()
        return Response(200, headers=headers)

    def _on_teardown(self, req: Request, headers: Headers) -> Response:
        session = self._session_for(req)
        if session is not None:
            self.server.close_session(session, CloseReason.TEARDOWN)
            self.sessions.pop(session.id, None)
        return Response(200, headers=headers)
