"""An RTSP client that reads a recorder's history the ONVIF way (Streaming Specification,
chapter 6 "Playback"), frame by frame.

One replay is one TCP connection: ``DESCRIBE``, ``SETUP`` of the video track (RTP
interleaved on the RTSP connection, RFC 2326 §10.12) and one ``PLAY`` with
``Range: clock=START-END`` and ``Rate-Control: no`` (as fast as we read), every request
with ``Require: onvif-replay``. A recorder without replay answers ``551`` with
``Unsupported: onvif-replay`` (RFC 2326 §12.32): :class:`ReplayUnsupported`. One 401 is
answered with Digest (or Basic) credentials, as :class:`~rmfproxy.upstream.source.RtspSource`
does; a second is :class:`ReplayAuthFailed`.

Packets become access units: an AU ends at the RTP marker bit, or when the timestamp
changes (recorders that never set the marker). Its capture time, C/E/D/T flags come
from the 0xABAC header extension (:mod:`rmfproxy.rtp.onvif`) of its packets; its NAL
units from the codec's :class:`~rmfproxy.rtp.nal.Depacketizer`. An AU with a missing
sequence number is dropped and the next one carries D (the stitcher then sees a gap in
this source, never a broken picture). The replay ends after the frame with T, at the
first frame captured at or after the end of the range, at an RTCP BYE, or when the
connection closes; TEARDOWN is sent (best effort).

Reading applies back-pressure: above :data:`HIGH_WATER` frames not yet consumed the
socket is paused, so a slow consumer slows the recorder down (``Rate-Control: no``
replays are paced by TCP alone) instead of filling memory.

Credentials come from ``username``/``password`` or the URL's userinfo; the URL in logs,
errors and ``repr`` never carries them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, cast
from urllib.parse import urljoin

import structlog

from rmfproxy.archive.stitch import ArchiveFrame
from rmfproxy.rtp import h264, h265, onvif, rtcp
from rmfproxy.rtp import packet as rtp
from rmfproxy.rtp.nal import Depacketizer, NalFormat
from rmfproxy.rtsp.auth import Challenge, DigestClient, parse_challenges
from rmfproxy.rtsp.headers import SessionHeader, TransportSpec
from rmfproxy.rtsp.message import Headers, Request, Response, StreamParser
from rmfproxy.rtsp.sdp import MediaDescription, SessionDescription, resolve_control
from rmfproxy.tls import client_context
from rmfproxy.upstream.url import host_port, is_tls, split_credentials

log = structlog.get_logger(__name__)

REPLAY_TAG = "onvif-replay"
"""The option tag of ONVIF replay (Require / Unsupported)."""
HIGH_WATER = 256
"""Frames waiting for the consumer above which the socket stops being read."""
LOW_WATER = 64
"""Frames waiting below which reading resumes."""
TEARDOWN_TIMEOUT = 0.5
"""How long the TEARDOWN reply is waited for at the end."""

Codec = Literal["h264", "h265"]


class ReplayError(Exception):
    """A replay failed; the message names the recorder (URL without credentials)."""


class ReplayUnsupported(ReplayError):
    """The recorder does not do ONVIF replay (551 Option not supported)."""


class ReplayAuthFailed(ReplayError):
    """The recorder refused our credentials (or asked for some we do not have)."""


class ReplayTimeout(ReplayError):
    """The recorder did not answer, or sent no media, in time."""


class ReplayStatusError(ReplayError):
    """The recorder answered a request with an error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ReplayProtocolError(ReplayError):
    """The recorder's answer is not something a replay can be read from."""


def format_clock(t: float) -> str:
    """Unix time as an RTSP clock time ``YYYYMMDDTHHMMSS.fffZ`` (RFC 2326 §3.7), truncated
    to the millisecond so that a start never lies after the instant it names."""
    ms = math.floor(t * 1000 + 1e-6)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


@dataclass
class ReplayStats:
    """Counters of one replay."""

    packets: int = 0
    bytes: int = 0
    frames: int = 0
    lost_packets: int = 0
    """Sequence numbers that never arrived (their AUs were dropped)."""
    dropped_frames: int = 0
    """AUs dropped: a packet missing, or no NAL unit in them."""


class _Conn(asyncio.Protocol):
    """The RTSP connection: responses to waiting futures, interleaved frames to the client."""

    def __init__(self, client: ReplayClient) -> None:
        self.client = client
        self.parser = StreamParser(client._on_frame, max_body_bytes=256 << 10)
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, asyncio.Future[Response]] = {}
        self.closed = asyncio.get_running_loop().create_future()
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        while (ev := self.parser.next_event()) is not None:
            if isinstance(ev, Response):
                fut = self.pending.pop(ev.cseq if ev.cseq is not None else -1, None)
                if fut is not None and not fut.done():
                    fut.set_result(ev)
            elif isinstance(ev, Request):
                # RFC 2326 §10: a server may ask us things (OPTIONS, GET_PARAMETER): 200.
                self.write(
                    Response(
                        200, headers=Headers({"CSeq": ev.headers.get("CSeq") or "0"})
                    ).serialize()
                )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ReplayError(f"{self.client.url}: connection closed"))
        self.pending.clear()
        self.client._on_closed()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class ReplayClient:
    """Reads one recorder's recording of one camera over ``[start, end)``."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        name: str = "",
        connect_timeout: float = 5.0,
        request_timeout: float = 5.0,
        idle_timeout: float = 10.0,
        user_agent: str = "rmfproxy",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        clean, url_user, url_password = split_credentials(url)
        self.url = clean
        """The URL on the wire and in messages: never any userinfo."""
        self.name = name or clean
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        """Seconds without any frame after which the replay is :class:`ReplayTimeout`."""
        self.user_agent = user_agent
        self.stats = ReplayStats()
        self.sdp: SessionDescription | None = None
        """The recorder's DESCRIBE answer (after :meth:`frames` started)."""
        self.codec: Codec | None = None
        self.ended_by: str = ""
        """Why the replay ended: "terminal" (T), "end" (range end reached), "bye", "closed"."""
        self._user = username if username is not None else url_user
        self._password = password if password is not None else (url_password or "")
        self._host, self._port = host_port(clean)
        self._tls = (tls or client_context()) if is_tls(clean) else None
        """The TLS context of an ``rtsps://`` recorder (default: verified against the
        system store); None for ``rtsp://``."""
        self._conn: _Conn | None = None
        self._cseq = 0
        self._session: str | None = None
        self._digest: DigestClient | None = None
        self._challenge: Challenge | None = None
        self._rtp_channel = 0
        self._rtcp_channel = 1
        self._queue: asyncio.Queue[ArchiveFrame | None] = asyncio.Queue()
        self._fmt: NalFormat = h264.FORMAT
        self._depay: Depacketizer | None = None
        self._pt = -1
        # the AU being assembled
        self._ts: int | None = None
        self._nals: list[bytes] = []
        self._ext: onvif.ReplayExtension | None = None
        self._flags = [False, False, False, False]  # C, E, D, T seen on its packets
        self._broken = False
        self._next_seq: int | None = None
        self._pending_d = False
        self._play_cseq = 0
        self._missing_ext = False

    def __repr__(self) -> str:
        return f"ReplayClient(name={self.name!r}, url={self.url!r})"

    # the public API ------------------------------------------------------------------

    async def fetch(self, start: float, end: float) -> list[ArchiveFrame]:
        """Every frame of ``[start, end)`` (from the clean point at or before ``start``)."""
        return [f async for f in self.frames(start, end)]

    async def frames(self, start: float, end: float) -> AsyncIterator[ArchiveFrame]:
        """The recorded frames from the clean point at or before ``start`` up to ``end``
        (exclusive), in capture order; :class:`ReplayError` subclasses on failure."""
        if not end > start:
            raise ValueError("replay end must be later than its start")
        try:
            await self._open(start, end)
            while True:
                try:
                    async with asyncio.timeout(self.idle_timeout):
                        frame = await self._queue.get()
                except TimeoutError:
                    raise ReplayTimeout(
                        f"{self.url}: no media for {self.idle_timeout:g} s during the replay"
                    ) from None
                self._resume_reading()
                if frame is None:
                    break
                if self._missing_ext:
                    raise ReplayProtocolError(
                        f"{self.url}: replay packets carry no ONVIF 0xABAC extension"
                    )
                if frame.capture_time >= end:
                    self.ended_by = "end"
                    break
                self.stats.frames += 1
                yield frame
        finally:
            await self._close()
        log.info(
            "archive.replay_done",
            source=self.name,
            url=self.url,
            frames=self.stats.frames,
            bytes=self.stats.bytes,
            lost=self.stats.lost_packets,
            ended_by=self.ended_by or "consumer",
        )

    def sdp_parameter_sets(self) -> list[bytes]:
        """Parameter sets announced in the SDP (``sprop-parameter-sets``, RFC 6184 §8.1;
        ``sprop-vps/sps/pps``, RFC 7798 §7.1), in decoding order; empty if none or bad."""
        if self.sdp is None:
            return []
        media, codec, pt = _video(self.sdp)
        if media is None:
            return []
        fmtp = media.fmtp(pt)
        try:
            if codec == "h264":
                return h264.parse_sprop_parameter_sets(fmtp.get("sprop-parameter-sets", ""))
            keys = ("sprop-vps", "sprop-sps", "sprop-pps")
            return [base64.b64decode(fmtp[k], validate=True) for k in keys if fmtp.get(k)]
        except ValueError:
            return []

    # session ----------------------------------------------------------------------------

    async def _open(self, start: float, end: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, self._conn = await loop.create_connection(
                    lambda: _Conn(self),
                    self._host,
                    self._port,
                    ssl=self._tls,
                    server_hostname=self._host if self._tls else None,
                )
        except TimeoutError:
            raise ReplayTimeout(f"{self.url}: connect timed out") from None
        except ssl.SSLCertVerificationError as exc:
            why = exc.verify_message or exc.reason or "verification failed"
            raise ReplayError(f"{self.url}: TLS certificate refused ({why})") from None
        except ssl.SSLError as exc:
            raise ReplayError(f"{self.url}: TLS handshake failed ({exc.reason or exc})") from None
        except OSError as exc:
            raise ReplayError(f"{self.url}: cannot connect ({exc.strerror or exc})") from None
        resp = await self._request("DESCRIBE", self.url, {"Accept": "application/sdp"})
        try:
            sdp = SessionDescription.parse(resp.body.decode("utf-8", "replace"))
        except ValueError as exc:
            raise ReplayProtocolError(f"{self.url}: bad SDP in DESCRIBE reply ({exc})") from None
        self.sdp = sdp
        media, codec, pt = _video(sdp)
        if media is None or codec is None:
            raise ReplayProtocolError(f"{self.url}: no H.264/H.265 video track in the replay SDP")
        self.codec = codec
        self._fmt = h264.FORMAT if codec == "h264" else h265.FORMAT
        self._depay = Depacketizer(self._fmt)
        self._pt = pt
        base = resp.headers.get("Content-Base") or resp.headers.get("Content-Location")
        base = urljoin(self.url, base) if base else self.url
        spec = TransportSpec(lower_transport="TCP", interleaved=(0, 1))
        setup = await self._request(
            "SETUP", resolve_control(base, media.control), {"Transport": spec.serialize()}
        )
        session = setup.headers.get("Session")
        if session is None:
            raise ReplayProtocolError(f"{self.url}: SETUP reply without Session")
        self._session = SessionHeader.parse(session).id
        value = setup.headers.get("Transport")
        if value:
            reply = TransportSpec.parse(value.split(",")[0])
            if reply.interleaved is not None:  # the server may pick other channels (§12.39)
                self._rtp_channel, self._rtcp_channel = reply.interleaved
        rng = f"clock={format_clock(start)}-{format_clock(end)}"
        self._play_cseq = self._cseq + 1
        await self._request(
            "PLAY", resolve_control(base, sdp.control), {"Range": rng, "Rate-Control": "no"}
        )
        log.info("archive.replay_started", source=self.name, url=self.url, range=rng)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._session is not None and not conn.closed.done():
            with contextlib.suppress(ReplayError, TimeoutError, OSError):
                async with asyncio.timeout(TEARDOWN_TIMEOUT):
                    await self._send(conn, "TEARDOWN", self.url, None)  # RFC 2326 §10.7
        if conn.transport is not None:
            conn.transport.abort()

    async def _request(
        self, method: str, url: str, extra: dict[str, str] | None = None
    ) -> Response:
        """Send, wait for the reply, answer one 401; typed errors for anything not 2xx."""
        conn = self._conn
        assert conn is not None
        resp = await self._send(conn, method, url, extra)
        if resp.status == 401:
            challenge = _pick_challenge(resp)
            if challenge is None or self._user is None:
                raise ReplayAuthFailed(f"{self.url}: the recorder wants credentials ({method})")
            self._challenge = challenge
            self._digest = DigestClient(self._user, self._password)
            resp = await self._send(conn, method, url, extra)
            if resp.status == 401:
                raise ReplayAuthFailed(f"{self.url}: the recorder refused the credentials")
        if resp.status == 551:
            tags = resp.headers.get("Unsupported") or ""
            raise ReplayUnsupported(
                f"{self.url}: the recorder does not support ONVIF replay "
                f"(551 on {method}, Unsupported: {tags[:60]})"
            )
        if not 200 <= resp.status < 300:
            raise ReplayStatusError(
                f"{self.url}: {method} answered {resp.status} {resp.reason[:60]}", resp.status
            )
        return resp

    async def _send(
        self, conn: _Conn, method: str, url: str, extra: dict[str, str] | None
    ) -> Response:
        if conn.closed.done():
            raise ReplayError(f"{self.url}: connection closed")
        self._cseq += 1
        cseq = self._cseq
        headers = Headers({"CSeq": str(cseq), "User-Agent": self.user_agent, "Require": REPLAY_TAG})
        if self._session is not None:
            headers["Session"] = self._session
        for k, v in (extra or {}).items():
            headers[k] = v
        if self._challenge is not None and self._digest is not None:
            headers["Authorization"] = self._digest.authorization(self._challenge, method, url)
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        conn.pending[cseq] = fut
        try:
            conn.write(Request(method, url, headers).serialize())
            async with asyncio.timeout(self.request_timeout):
                return await fut
        except TimeoutError:
            raise ReplayTimeout(f"{self.url}: no answer to {method} in time") from None
        finally:
            conn.pending.pop(cseq, None)

    # media ---------------------------------------------------------------------------------

    def _on_frame(self, channel: int, data: bytearray) -> None:
        if self.ended_by:
            return
        if channel == self._rtcp_channel:
            if rtcp.is_rtcp_bye(data):
                self._end("bye")
            return
        if channel != self._rtp_channel:
            return
        self.stats.packets += 1
        self.stats.bytes += len(data)
        try:
            h = rtp.parse_header(data)
            ext = onvif.parse_replay_extension(data)
        except ValueError:
            self._broken = True
            return
        if h.payload_type != self._pt:
            return
        if ext is None:
            self._missing_ext = True
            self._end("closed")
            return
        if self._next_seq is not None and h.sequence != self._next_seq:
            self.stats.lost_packets += (h.sequence - self._next_seq) & 0xFFFF
            self._broken = True
            assert self._depay is not None
            self._depay.reset()
        self._next_seq = (h.sequence + 1) & 0xFFFF
        if self._ts is not None and h.timestamp != self._ts:
            self._finish()  # a new timestamp: the previous AU had no marker bit
        if self._ts is None:
            self._ts = h.timestamp
            self._ext = ext
        flags = self._flags
        flags[0] |= ext.clean
        flags[1] |= ext.end
        flags[2] |= ext.discontinuity
        flags[3] |= ext.terminal
        assert self._depay is not None
        self._nals += self._depay.push(memoryview(data)[h.payload_offset : h.payload_end])
        if h.marker or ext.terminal:
            self._finish()
        if ext.terminal:
            self._end("terminal")

    def _finish(self) -> None:
        """Close the AU being assembled: queue it, or drop it if a packet is missing."""
        ext, nals, (clean, end, disc, _) = self._ext, self._nals, self._flags
        broken = self._broken
        self._ts, self._ext, self._nals, self._broken = None, None, [], False
        self._flags = [False, False, False, False]
        if ext is None:
            return
        if broken or not nals:
            self.stats.dropped_frames += 1
            self._pending_d = True  # what follows is not contiguous with what went out
            return
        key = clean or any(self._fmt.nal_type(n) in self._fmt.irap_types for n in nals)
        frame = ArchiveFrame(
            ext.unix_time,
            key,
            tuple(nals),
            discontinuity=disc or self._pending_d,
            end=end,
        )
        self._pending_d = False
        self._queue.put_nowait(frame)
        conn = self._conn
        if (
            self._queue.qsize() > HIGH_WATER
            and conn is not None
            and conn.transport is not None
            and not conn.paused
        ):
            conn.paused = True
            conn.transport.pause_reading()

    def _resume_reading(self) -> None:
        conn = self._conn
        if conn is not None and conn.paused and self._queue.qsize() < LOW_WATER:
            conn.paused = False
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.resume_reading()

    def _end(self, why: str) -> None:
        if not self.ended_by:
            self.ended_by = why
            self._queue.put_nowait(None)

    def _on_closed(self) -> None:
        # An AU cut by the close may be incomplete: it is not queued.
        self._end("closed")


def _video(sdp: SessionDescription) -> tuple[MediaDescription | None, Codec | None, int]:
    """The first H.264/H.265 video media of ``sdp``, its codec and payload type."""
    for media in sdp.media:
        if media.media != "video":
            continue
        for fmt in media.formats:
            if not fmt.isdigit():
                continue
            rtpmap = media.rtpmap(int(fmt))
            enc = rtpmap.encoding.upper() if rtpmap else ""
            if enc == "H264":
                return media, "h264", int(fmt)
            if enc in ("H265", "HEVC"):
                return media, "h265", int(fmt)
    return None, None, -1


def _pick_challenge(resp: Response) -> Challenge | None:
    """Digest (with an algorithm DigestClient speaks) before Basic (RFC 7616 §3.7)."""
    try:
        challenges = parse_challenges(resp.headers.get_all("WWW-Authenticate"))
    except ValueError:
        return None
    for c in challenges:
        if c.scheme == "Digest" and c.nonce and c.algorithm.upper() in _DIGEST_ALGORITHMS:
            return c
    return next((c for c in challenges if c.scheme == "Basic"), None)


_DIGEST_ALGORITHMS = ("MD5", "MD5-SESS", "SHA-256", "SHA-256-SESS")
