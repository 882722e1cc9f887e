"""A client's receiving end: RTP/RTCP over the RTSP TCP connection or over UDP.

The bounded queue of a TCP client is its transport's write buffer (a TCP
client's packets are written once per loop turn, or sooner past ``_flush_at``
bytes, in one piece, not one system call per packet): when it holds more than
``limit`` bytes the client has fallen behind; it then skips
everything until the next keyframe (and until its buffer has drained below
half the limit), so it resumes on a decodable picture. The backlog is what the
transport has not written yet: this turn's queue is not counted (it is bounded by
``_flush_at``, and the connection's back-pressure, the transport's high-water mark that
replay waits on, sees only what was written). A client that stays
over the limit for ``stall_drop_seconds`` is disconnected. Other clients never
wait for it: nothing here blocks.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rmfproxy.serve.close_reason import CloseReason

_INTERLEAVED = struct.Struct(">cBH")


@dataclass(slots=True)
class TcpTrack:
    """A track sent interleaved on the RTSP connection (RFC 2326 §10.12)."""

    rtp_channel: int
    rtcp_channel: int


@dataclass(slots=True)
class UdpTrack:
    """A track sent over UDP unicast to the client's ports."""

    rtp_addr: tuple[str, int]
    rtcp_addr: tuple[str, int]


class ClientSink:
    """Delivers one client session's packets; implements ``MediaSink``."""

    def __init__(
        self,
        *,
        tcp: asyncio.Transport | None,
        udp_rtp: asyncio.DatagramTransport | None,
        udp_rtcp: asyncio.DatagramTransport | None,
        tracks: dict[int, TcpTrack | UdpTrack],
        limit: int,
        on_close: Callable[[CloseReason], None],
        stall_drop_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tcp = tcp
        self._udp_rtp = udp_rtp
        self._udp_rtcp = udp_rtcp
        self.tracks = tracks
        self.limit = limit
        self.stall_drop_seconds = stall_drop_seconds
        self._on_close = on_close
        self._clock = clock
        self.skipping = True  # a new client starts on a keyframe
        self._over_since: float | None = None
        self.packets_sent = 0
        self.bytes_sent = 0
        self.packets_dropped = 0
        self.skips = 0
        self.closed = False
        self._pending: list[bytes | bytearray] = []
        """Interleaved frames queued this loop turn, each as its 4-byte header and the packet
        itself (written together by ``_flush``: the packet is copied once, by the join)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        """Bound at the first write: ``get_running_loop`` costs a system call (``getpid``)."""
        self._pending_bytes = 0
        self._flush_at = max(1500, min(64 << 10, limit // 4))
        """Queued bytes that are written at once, without waiting for the turn's end."""

    def _queue(self, channel: int, packet: bytes | bytearray) -> None:
        pending = self._pending
        if not pending:
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self._flush)
        size = len(packet)
        pending.append(_INTERLEAVED.pack(b"$", channel, size))
        pending.append(packet)
        self._pending_bytes += 4 + size
        if self._pending_bytes >= self._flush_at:
            # A big batch (a keyframe, a GOP burst, a replay running ahead) goes to the
            # transport now, where the connection's back-pressure sees it.
            self._flush()

    def _flush(self) -> None:
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        if pending and not self.closed and self._tcp is not None and not self._tcp.is_closing():
            self._tcp.write(b"".join(pending))

    def deliver_many(self, track: int, packets: Iterable[tuple[bytes | bytearray, bool]]) -> None:
        """Send RTP packets ``(packet, keyframe_start)`` of one track in order, each unless
        the client is behind then (see the module docstring): one call for an access unit
        (or for one packet: replay)."""
        dest = self.tracks.get(track)
        if dest is None or self.closed:
            return
        tcp = self._tcp
        if isinstance(dest, TcpTrack):
            assert tcp is not None
            channel = dest.rtp_channel
            limit = self.limit
            for packet, keyframe_start in packets:
                if self.skipping:
                    if not keyframe_start or tcp.get_write_buffer_size() > limit // 2:
                        if not self._dropped(tcp):
                            return
                        continue
                    self.skipping = False
                    self._over_since = None
                if tcp.get_write_buffer_size() > limit:
                    self.skipping = True
                    self.skips += 1
                    if not self._dropped(tcp):
                        return
                    continue
                self._queue(channel, packet)
                self.packets_sent += 1
                self.bytes_sent += len(packet)
            return
        assert self._udp_rtp is not None
        for packet, keyframe_start in packets:
            if self.skipping:
                if not keyframe_start:
                    self.packets_dropped += 1
                    continue
                self.skipping = False
                self._over_since = None
            self._udp_rtp.sendto(packet, dest.rtp_addr)
            self.packets_sent += 1
            self.bytes_sent += len(packet)

    def _dropped(self, tcp: asyncio.Transport) -> bool:
        """Count a packet not sent to a client that is behind; False if that closed it."""
        self.packets_dropped += 1
        self._check_stalled(tcp)
        return not self.closed

    def _check_stalled(self, tcp: asyncio.Transport | None) -> None:
        if tcp is None or tcp.get_write_buffer_size() <= self.limit:
            self._over_since = None
            return
        now = self._clock()
        if self._over_since is None:
            self._over_since = now
        elif now - self._over_since > self.stall_drop_seconds:
            self.close(CloseReason.CLIENT_STALLED)

    def deliver_rtcp(self, track: int, packet: bytes) -> None:
        """Send an RTCP packet (skipped while the client is behind)."""
        dest = self.tracks.get(track)
        if dest is None or self.closed or self.skipping:
            return
        if isinstance(dest, TcpTrack):
            assert self._tcp is not None
            if self._tcp.get_write_buffer_size() <= self.limit:
                self._queue(dest.rtcp_channel, packet)
        elif self._udp_rtcp is not None:
            self._udp_rtcp.sendto(packet, dest.rtcp_addr)

    def close(self, reason: CloseReason) -> None:
        """Stop delivering; the owning session decides what else to tear down."""
        if not self.closed:
            self.closed = True
            self._on_close(reason)
