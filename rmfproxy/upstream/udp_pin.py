"""Which sender a track's UDP port pair accepts media and BYE from (no I/O).

Theory of operation. Over UDP (RFC 2326 §12.39) nothing but the sender's address ties a
datagram to the RTSP session: anyone who can reach the client ports can inject RTP into
the stream or end the session with an RTCP BYE (RFC 3550 §6.6). So each track keeps a
:class:`UdpPin`:

- The sender must be the recorder's host (the RTSP peer, or the Transport ``source=``) and
  the port it announced in its SETUP reply: ``server_port=rtp-rtcp``, RTP from the first
  and RTCP from the second.
- A recorder that announces no ``server_port`` gets its ports learned from the first
  well-formed RTP (and RTCP) datagram from its host *after PLAY was sent* (:meth:`arm`);
  from then on they are pinned like announced ones.
- A BYE is believed only when it names the track's SSRC: the one announced in Transport
  ``ssrc=``, or the one seen in the track's accepted RTP. With neither known, no BYE is
  believed (the session still ends on TCP close, keepalive failure or freeze detection).

:meth:`UdpPin.check` returns a :class:`Verdict`; the caller counts and drops whatever is
not :attr:`Verdict.ACCEPT`. Over TCP the interleaved channel is already bound to the
session's connection, so none of this applies there.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from rmfproxy.rtp import rtcp

Buffer = bytes | bytearray | memoryview

_SSRC = struct.Struct(">I")


class Verdict(enum.Enum):
    """What to do with one datagram."""

    ACCEPT = "accept"
    """From the pinned sender: deliver it."""
    FOREIGN_SENDER = "foreign-sender"
    """Another address or port than the recorder's (or no pin yet): drop it."""
    FOREIGN_BYE = "foreign-bye"
    """An RTCP BYE from the pinned sender that does not name the track's SSRC: drop it."""


@dataclass(slots=True)
class UdpPin:
    """The sender of one track's RTP/RTCP over UDP, and the SSRC its BYE must name."""

    host: str
    """The recorder's address as the UDP socket reports senders."""
    rtp_port: int | None = None
    """Source port of RTP: announced ``server_port``, else learned after PLAY."""
    rtcp_port: int | None = None
    """Source port of RTCP: likewise."""
    announced_ssrc: int | None = None
    """Transport ``ssrc=`` of the SETUP reply."""
    rtp_ssrc: int | None = None
    """SSRC of the last accepted RTP packet."""
    armed: bool = False
    """PLAY has been sent: unannounced ports may be learned from now on."""

    def arm(self) -> None:
        """PLAY is on its way: the first datagrams from the host may set missing ports."""
        self.armed = True

    def check(self, host: str, port: int, is_rtcp: bool, data: Buffer) -> Verdict:
        """The verdict on a datagram from ``host:port`` (updates the pin and the SSRC)."""
        if host != self.host:
            return Verdict.FOREIGN_SENDER
        want = self.rtcp_port if is_rtcp else self.rtp_port
        if want is None:
            # RFC 3550 §5.1/§6.4: both RTP and RTCP start with version 2; learn only from
            # something that looks like media, never from a stray probe.
            if not self.armed or len(data) < (8 if is_rtcp else 12) or data[0] >> 6 != 2:
                return Verdict.FOREIGN_SENDER
            if is_rtcp:
                self.rtcp_port = port
            else:
                self.rtp_port = port
        elif port != want:
            return Verdict.FOREIGN_SENDER
        if is_rtcp:
            if rtcp.is_rtcp_bye(data) and not self.bye_is_ours(data):
                return Verdict.FOREIGN_BYE
        elif len(data) >= 12:
            self.rtp_ssrc = _SSRC.unpack_from(data, 8)[0]
        return Verdict.ACCEPT

    def bye_is_ours(self, data: Buffer) -> bool:
        """Does this compound RTCP packet hold a BYE naming the track's SSRC?"""
        known = {s for s in (self.announced_ssrc, self.rtp_ssrc) if s is not None}
        if not known:
            return False
        try:
            packets = rtcp.parse_compound(data)
        except ValueError:
            return False
        return any(isinstance(p, rtcp.Bye) and known.intersection(p.ssrcs) for p in packets)
