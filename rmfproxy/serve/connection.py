"""One client's RTSP connection: parses requests and answers them (RFC 2326 §10).

Every request is answered synchronously: nothing here awaits, so a request is
handled completely before the next byte is read, and a PLAY reply is written
before the first media packet of that session.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

import structlog

from rmfproxy.rtsp.errors import ParseError
from rmfproxy.rtsp.headers import (
    RtpInfo,
    SessionHeader,
    TransportSpec,
    format_rtp_info,
    parse_transports,
)
from rmfproxy.rtsp.message import Headers, Request, Response, StreamParser
from rmfproxy.serve.session import ALLOWED, ClientSession, State, new_session_id
from rmfproxy.serve.sink import ClientSink, TcpTrack, UdpTrack

if TYPE_CHECKING:
    from rmfproxy.serve.server import RtspServer

log = structlog.get_logger(__name__)

PUBLIC = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER"
_ids = itertools.count(1)


class RequestError(Exception):
    """A request that gets an error status instead of being served."""

    def __init__(self, status: int, why: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(why)
        self.status = status
        self.why = why
        self.headers = headers or {}


def split_uri(uri: str) -> tuple[str, int | None]:
    """``rtsp://h/cam/trackID=1`` -> ("cam", 1); ``rtsp://h/cam`` -> ("cam", None)."""
    path = urlsplit(uri).path if "://" in uri else uri
    parts = [p for p in path.split("/") if p]
    track: int | None = None
    if parts and parts[-1].startswith("trackID="):
        digits = parts.pop()[len("trackID=") :]
        if not digits.isdigit() or len(digits) > 3:
            raise RequestError(404, "bad track id")
        track = int(digits)
    return "/".join(parts), track


class RtspConnection(asyncio.Protocol):
    """Serves RTSP requests on one TCP connection."""

    def __init__(self, server: RtspServer) -> None:
        self.server = server
        self.id = next(_ids)
        self.transport: asyncio.Transport | None = None
        self.parser = StreamParser(self._on_frame)
        self.peer = "?"
        self.sessions: dict[str, ClientSession] = {}
        self._after_reply: Callable[[], None] | None = None
        self._user: str | None = None

    # asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Bound what the kernel queues for this client too, or a stalled client
            # could hide megabytes in an autotuned send buffer before the proxy notices.
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, self.server.client_buffer_bytes // 2
            )
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        for session in list(self.sessions.values()):
            if session.uses_tcp:
                self.server.close_session(session, "connection-closed")
        self.sessions.clear()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        while (event := self.parser.next_event()) is not None:
            if isinstance(event, ParseError):
                log.info(
                    "rtsp.bad_request", client=self.peer, status=event.status, reason=str(event)
                )
                self._send(Response(event.status, headers=Headers()))
            elif isinstance(event, Request):
                if self.server.fault_stall_rtsp:
                    continue  # simulated unresponsive server: read and ignore
                self._handle(event)
            # Responses from a client (to nothing we sent) are ignored.

    def _on_frame(self, channel: int, payload: bytearray) -> None:
        # Clients send RTCP receiver reports on the odd channels: a keepalive.
        for session in self.sessions.values():
            session.touch()

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
            if req.method != "OPTIONS":
                # Every method but OPTIONS needs credentials (RFC 2326 §10.1 allows
                # OPTIONS at any time; clients probe with it before authenticating).
                self._user = self._authorize(req, None if req.uri == "*" else split_uri(req.uri)[0])
            response: Response = handler(req, headers)
        except RequestError as err:
            for k, v in err.headers.items():
                headers[k] = v
            log.info(
                "rtsp.request_refused",
                client=self.peer,
                method=req.method,
                status=err.status,
                reason=err.why,
            )
            response = Response(err.status, headers=headers)
        self._send(response)
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
        decision = access.check(req, path, time.time())
        if decision.status == 401:
            assert decision.challenge is not None
            raise RequestError(
                401, "authentication required", {"WWW-Authenticate": decision.challenge}
            )
        if decision.status != 200:
            raise RequestError(decision.status, "camera not permitted for user")
        return decision.user

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
        stream = self.server.resolve(path)
        if stream is None or track is not None:
            raise RequestError(404, "no such camera")
        sdp = stream.sdp()
        if sdp is None:
            raise RequestError(503, "camera has no source yet", {"Retry-After": "1"})
        base = req.uri.rstrip("/") + "/"
        headers["Content-Base"] = base
        headers["Content-Type"] = "application/sdp"
        return Response(200, headers=headers, body=sdp.serialize().encode())

    def _on_setup(self, req: Request, headers: Headers) -> Response:
        path, track = split_uri(req.uri)
        user = self._user
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
            )
            self.server.sessions[session.id] = session
            log.info(
                "rtsp.session_created",
                client=self.peer,
                camera=path,
                session=session.id[:6],
                user=user,
            )
        self.sessions[session.id] = session
        dest, reply = chosen
        session.tracks[track] = dest
        reply.ssrc = stream.ssrc(track)
        if isinstance(dest, UdpTrack):
            self.server.udp_peers[dest.rtcp_addr] = session
        headers["Transport"] = reply.serialize()
        headers["Session"] = SessionHeader(session.id, session.timeout).serialize()
        return Response(200, headers=headers)

    def _choose_transport(
        self, offers: list[TransportSpec], session: ClientSession | None, track: int
    ) -> tuple[TcpTrack | UdpTrack, TransportSpec]:
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
            if offer.client_port is not None and self.server.udp_ports is not None:
                host = self.peer.rpartition(":")[0]
                if offer.destination not in (None, host):
                    continue  # never send media to a third party
                cp = offer.client_port
                reply = TransportSpec(
                    profile="RTP/AVP",
                    lower_transport="UDP",
                    unicast=True,
                    client_port=cp,
                    server_port=self.server.udp_ports,
                )
                return UdpTrack((host, cp[0]), (host, cp[1])), reply
        raise RequestError(
            461,
            "no supported transport offered (RTP/AVP unicast over "
            "TCP interleaved or UDP with client_port)",
        )

    def _on_play(self, req: Request, headers: Headers) -> Response:
        session = self._session_for(req)
        if session is None:
            raise RequestError(454, "PLAY needs a session")
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
        )
        base = req.uri.rstrip("/")
        if split_uri(req.uri)[1] is not None:
            base = base.rpartition("/")[0]
        starts = session.stream.start_points()
        infos = [
            RtpInfo(f"{base}/trackID={t}", starts[t].sequence, starts[t].rtptime)
            for t in sorted(session.tracks)
            if t in starts
        ]
        headers["Session"] = SessionHeader(session.id, session.timeout).serialize()
        headers["Range"] = "npt=now-"
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
        )
        return Response(200, headers=headers)

    def _on_pause(self, req: Request, headers: Headers) -> Response:
        session = self._session_for(req)
        if session is None:
            raise RequestError(454, "PAUSE needs a session")
        if session.sink is not None:
            session.stream.detach(session.sink)
            session.sink = None
        session.state = State.READY
        headers["Session"] = SessionHeader(session.id, session.timeout).serialize()
        return Response(200, headers=headers)

    def _on_teardown(self, req: Request, headers: Headers) -> Response:
        session = self._session_for(req)
        if session is not None:
            self.server.close_session(session, "teardown")
            self.sessions.pop(session.id, None)
        return Response(200, headers=headers)
