"""RTSP over UDP through the WAN relay: SETUP rewriting and the media's UDP bridges.

Theory of operation. Over UDP (RFC 2326 §12.39) the media does not cross the RTSP
connection: the server sends RTP to the ``client_port`` the client named in SETUP and
receives RTCP on its ``server_port``. To put the media through the link's impairment,
the relay reads the RTSP messages of both directions with the project's parser
(:class:`RtspTap`; interleaved ``$`` frames pass untouched). For a UDP SETUP it binds a
port pair facing the server and puts it in ``client_port``; when the reply comes, it
binds a pair facing the client and puts it in ``server_port`` (``client_port`` back to
the client's own). A :class:`UdpBridge` then moves datagrams between the pairs through
the link's shapers (loss, delay, jitter, bandwidth), RTP and RTCP each in order. Every
byte it has no reason to change goes on as it came: only a UDP SETUP and its reply are
rewritten.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from rmfproxy.rtsp.errors import ParseError
from rmfproxy.rtsp.headers import TransportSpec, parse_transports
from rmfproxy.rtsp.message import Headers, Request, Response, StreamParser
from rmfproxy.sim.impair import Flow, LinkStats, Shaper
from rmfproxy.upstream.loss import Lost
from rmfproxy.upstream.source import _bind_pair as bind_pair  # the one pair binder

log = structlog.get_logger(__name__)


class UdpSessions:
    """The UDP SETUPs of one relayed RTSP connection and the media bridges they opened.

    ``on_request`` and ``on_response`` see every message of each direction (an
    :class:`RtspTap` handler) and return the rewritten bytes, or None to forward the
    message as it came.
    """

    def __init__(
        self,
        client: asyncio.StreamWriter,
        upstream: asyncio.StreamWriter,
        *,
        down: Shaper,
        up: Shaper,
        stats: LinkStats,
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.down = down
        self.up = up
        self.bridges: list[UdpBridge] = []
        self.pending: dict[int, _PendingSetup] = {}
        self.stats = stats

    def close(self) -> None:
        """Close every bridge and every pair still waiting for its reply."""
        for b in self.bridges:
            b.close()
        for p in self.pending.values():
            p.close()
        self.pending.clear()

    async def on_request(self, msg: Request | Response) -> bytes | None:
        """A client's SETUP asking for UDP gets a server-facing pair in ``client_port``."""
        if not isinstance(msg, Request) or msg.method != "SETUP" or msg.cseq is None:
            return None
        value = msg.headers.get("Transport")
        if value is None:
            return None
        try:
            alts = parse_transports(value)
        except ValueError:
            return None
        if not any(a.lower_transport == "UDP" and a.client_port for a in alts):
            return None
        local = self.upstream.get_extra_info("sockname")[0]
        pending = _PendingSetup()
        for a in alts:
            if a.lower_transport == "UDP" and a.client_port and a.unicast:
                pair = await _UdpPair.bind(local)
                pending.offers.append((a.client_port, pair))
                a.client_port = pair.ports
        if not pending.offers:
            return None
        old = self.pending.pop(msg.cseq, None)
        if old is not None:
            old.close()
        self.pending[msg.cseq] = pending
        headers = _replace(msg.headers, "Transport", ",".join(a.serialize() for a in alts))
        return Request(msg.method, msg.uri, headers, msg.body).serialize()

    async def on_response(self, msg: Request | Response) -> bytes | None:
        """The reply to such a SETUP gets a client-facing pair in ``server_port``."""
        if not isinstance(msg, Response) or msg.cseq is None:
            return None
        pending = self.pending.pop(msg.cseq, None)
        if pending is None:
            return None
        value = msg.headers.get("Transport")
        try:
            reply = TransportSpec.parse(value.split(",")[0]) if value else None
        except ValueError:
            reply = None
        chosen = None
        if msg.status == 200 and reply is not None and reply.lower_transport == "UDP":
            for ports, pair in pending.offers:
                if reply.client_port in (None, pair.ports):
                    chosen = (ports, pair)
                    break
        for _, pair in pending.offers:
            if chosen is None or pair is not chosen[1]:
                pair.close()
        if chosen is None or reply is None:
            return None
        client_ports, server_side = chosen
        server_host = self.upstream.get_extra_info("peername")[0]
        if reply.source:
            server_host = reply.source
        client_writer = self.client
        client_host = reply.destination or client_writer.get_extra_info("peername")[0]
        client_side = await _UdpPair.bind(client_writer.get_extra_info("sockname")[0])
        bridge = UdpBridge(
            client_side,
            server_side,
            client=[(client_host, p) for p in client_ports],
            server=[(server_host, p) for p in reply.server_port]
            if reply.server_port
            else [None, None],
            down=self.down,
            up=self.up,
        )
        self.bridges.append(bridge)
        self.stats.udp_pairs += 1
        reply.client_port = client_ports
        reply.server_port = client_side.ports
        if reply.source:
            reply.source = client_writer.get_extra_info("sockname")[0]
        headers = _replace(msg.headers, "Transport", reply.serialize())
        return Response(msg.status, msg.reason, headers, msg.body).serialize()


def _replace(headers: Headers, name: str, value: str) -> Headers:
    """A copy of ``headers`` with ``name``'s value replaced in place (order kept)."""
    out = Headers()
    for k, v in headers.items():
        out.add(k, value if k.lower() == name.lower() else v)
    return out


@dataclass
class _PendingSetup:
    """A UDP SETUP on its way: the client's ports of each offer and the pair put instead."""

    offers: list[tuple[tuple[int, int], _UdpPair]] = field(default_factory=list)

    def close(self) -> None:
        for _, pair in self.offers:
            pair.close()


class RtspTap:
    """Splits one direction's bytes with the project's parser; gives what to forward.

    With one pending event at most, the parser stops right after each message, so its
    end in the stream is known (bytes fed minus ``buffered``); a message the handler
    rewrites is replaced by the new bytes, every other byte goes on as it came.
    """

    def __init__(self, handler: Callable[[Request | Response], Awaitable[bytes | None]]) -> None:
        self._handler = handler
        self._parser = StreamParser(_ignore_frame, max_pending_events=1)
        self._raw = bytearray()
        """Bytes received and not yet forwarded; ``_raw[0]`` is stream offset ``_sent``."""
        self._sent = 0
        self._fed = 0

    async def feed(self, data: bytes) -> list[bytes]:
        self._raw += data
        self._fed += len(data)
        self._parser.feed(data)
        out: list[bytes] = []
        while (ev := self._parser.next_event()) is not None:
            if isinstance(ev, ParseError):
                continue
            new = await self._handler(ev)
            if new is None:
                continue
            end = self._fed - self._parser.buffered - self._sent
            start = _message_start(self._raw, end, ev)
            if start is None:
                log.warning("wan.rewrite_skipped", reason="message start not found")
                continue
            out.append(bytes(self._raw[:start]))
            out.append(new)
            del self._raw[:end]
            self._sent += end
        upto = self._fed - self._parser.buffered - self._sent
        if upto:
            out.append(bytes(self._raw[:upto]))
            del self._raw[:upto]
            self._sent += upto
        return out

    def rest(self) -> bytes:
        """What is left unparsed (a message cut by the close): forwarded as it came."""
        out = bytes(self._raw)
        self._raw.clear()
        return out


def _ignore_frame(channel: int, payload: bytearray) -> None:
    """Interleaved frames go on untouched (as part of the raw bytes)."""


def _message_start(raw: bytearray, end: int, msg: Request | Response) -> int | None:
    """Where ``msg``, which ends at ``end`` of ``raw``, starts (None if not found).

    Back over the body, the empty line and one line per header field (a head with folded
    lines is not found: it is then forwarded unchanged), to the start line.
    """
    pos = end - len(msg.body)
    for term in (b"\r\n\r\n", b"\n\r\n", b"\n\n"):
        if raw.endswith(term, 0, pos):
            pos -= len(term)
            break
    else:
        return None
    for _ in range(len(msg.headers)):
        pos = raw.rfind(b"\n", 0, pos)
        if pos < 0:
            return None
    prefix = b"RTSP/1.0 " if isinstance(msg, Response) else msg.method.encode() + b" "
    line = raw.rfind(b"\n", 0, pos) + 1
    start = raw.find(prefix, line, pos)
    return None if start < 0 else start


class _UdpPort(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable from a peer that went away: media is best effort


class _UdpPair:
    """An RTP/RTCP pair of UDP ports (even, odd: RFC 3550 §11)."""

    def __init__(self, socks: tuple[socket.socket, socket.socket]) -> None:
        self.socks = socks
        self.ports = (socks[0].getsockname()[1], socks[1].getsockname()[1])
        self.ports_proto = (_UdpPort(_drop), _UdpPort(_drop))
        self.closed = False

    @classmethod
    async def bind(cls, host: str) -> _UdpPair:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            socks = bind_pair(family, host)
        except Lost as exc:
            raise OSError(f"no UDP port pair free on {host}") from exc
        pair = cls(socks)
        loop = asyncio.get_running_loop()
        try:
            for s, proto in zip(socks, pair.ports_proto, strict=True):
                await loop.create_datagram_endpoint(lambda p=proto: p, sock=s)  # type: ignore[misc]
        except BaseException:
            pair.close()
            raise
        return pair

    def send(self, k: int, data: bytes, addr: tuple[str, int]) -> None:
        t = self.ports_proto[k].transport
        if t is not None and not t.is_closing():
            t.sendto(data, addr)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for s, proto in zip(self.socks, self.ports_proto, strict=True):
            if proto.transport is not None:
                proto.transport.close()
            else:
                s.close()


def _drop(data: bytes, addr: tuple[str, int]) -> None:
    pass


class UdpBridge:
    """One UDP SETUP's media: RTP/RTCP between the client's ports and the server's.

    Datagrams from the server at the server-facing pair go, shaped by ``down``, to the
    client from the client-facing pair (the ports the client was told are the server's);
    datagrams from the client go the other way, shaped by ``up``. A server that announced
    no ``server_port`` has its ports learned from what it sends.
    """

    def __init__(
        self,
        client_side: _UdpPair,
        server_side: _UdpPair,
        *,
        client: list[tuple[str, int] | None],
        server: list[tuple[str, int] | None],
        down: Shaper,
        up: Shaper,
    ) -> None:
        self.client_side = client_side
        self.server_side = server_side
        self.client = client
        self.server = server
        self._down = _Delivery(down, client_side, client)
        self._up = _Delivery(up, server_side, server)
        for k in (0, 1):
            server_side.ports_proto[k].on_datagram = self._from_server(k)
            client_side.ports_proto[k].on_datagram = self._from_client(k)

    def _from_server(self, k: int) -> Callable[[bytes, tuple[str, int]], None]:
        def on(data: bytes, addr: tuple[str, int]) -> None:
            if self.server[k] is None:
                self.server[k] = addr[:2]
            self._down.push(k, data)

        return on

    def _from_client(self, k: int) -> Callable[[bytes, tuple[str, int]], None]:
        def on(data: bytes, addr: tuple[str, int]) -> None:
            self._up.push(k, data)

        return on

    def close(self) -> None:
        self._down.cancel()
        self._up.cancel()
        self.client_side.close()
        self.server_side.close()


class _Delivery:
    """Datagrams of one bridge direction, each sent from ``pair`` port k when due."""

    def __init__(self, shaper: Shaper, pair: _UdpPair, dest: list[tuple[str, int] | None]):
        self.shaper = shaper
        self.pair = pair
        self.dest = dest
        self.flows = (Flow(), Flow())
        self.queue: deque[tuple[float, int, bytes]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def push(self, k: int, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        t = self.shaper.schedule(self.flows[k], loop.time(), len(data), datagram=True)
        if t is None:
            return
        # Two flows (RTP, RTCP) share the queue: keep it sorted by delivery time.
        if self.queue and t < self.queue[-1][0]:
            items = sorted([*self.queue, (t, k, data)], key=lambda x: x[0])
            self.queue = deque(items)
        else:
            self.queue.append((t, k, data))
        self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.queue:
            self._timer = loop.call_at(self.queue[0][0], self._fire)

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._timer = None
        while self.queue and self.queue[0][0] <= now:
            _, k, data = self.queue.popleft()
            addr = self.dest[k]
            if addr is not None:
                self.pair.send(k, data, addr)
                self.shaper.stats.bytes += len(data)
                self.shaper.stats.datagrams += 1
        self._arm(loop)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.queue.clear()
