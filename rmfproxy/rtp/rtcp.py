"""RTCP (RFC 3550 §6): sender/receiver reports, BYE, SDES CNAME; NTP time conversion."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

Buffer = bytes | bytearray | memoryview

SR = 200
RR = 201
SDES = 202
BYE = 203

NTP_EPOCH_OFFSET = 2208988800
"""Seconds from 1900-01-01 (NTP epoch) to 1970-01-01 (Unix epoch)."""

_REPORT_BLOCK = struct.Struct(">IB3sIIII")


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report block (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_seq: int
    jitter: int
    lsr: int
    dlsr: int


@dataclass(frozen=True, slots=True)
class SenderReport:
    """RTCP SR: the sender's NTP <-> RTP time mapping and counts."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RTCP RR."""

    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Bye:
    """RTCP BYE: the sources are leaving."""

    ssrcs: list[int]
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RtcpOther:
    """Any other RTCP packet, kept whole."""

    packet_type: int
    data: bytes


RtcpPacket = SenderReport | ReceiverReport | Bye | RtcpOther


def ntp_from_unix(t: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point since 1900) of Unix time ``t``."""
    return int((t + NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def unix_from_ntp(n: int) -> float:
    """Unix time of a 64-bit NTP timestamp."""
    return n / (1 << 32) - NTP_EPOCH_OFFSET


def _blocks(buf: Buffer, pos: int, count: int, end: int) -> list[ReportBlock]:
    if pos + 24 * count > end:
        raise ValueError("RTCP report blocks truncated")
    out = []
    for i in range(count):
        ssrc, frac, lost, hi, jit, lsr, dlsr = _REPORT_BLOCK.unpack_from(buf, pos + 24 * i)
        cum = int.from_bytes(lost, "big", signed=True)
        out.append(ReportBlock(ssrc, frac, cum, hi, jit, lsr, dlsr))
    return out


MAX_COMPOUND = 64
"""Packets read from one compound (a real one has two or three; 16,384 empty ones in a
64 KB interleaved frame are an attack)."""


def parse_compound(buf: Buffer) -> list[RtcpPacket]:
    """The packets of a compound RTCP packet (the first ``MAX_COMPOUND``); ``ValueError``
    on malformed input."""
    out: list[RtcpPacket] = []
    pos = 0
    n = len(buf)
    if n < 4:
        raise ValueError("RTCP packet too short")
    while pos < n and len(out) < MAX_COMPOUND:
        if n - pos < 4:
            raise ValueError("RTCP packet too short")
        b0, pt, words = struct.unpack_from(">BBH", buf, pos)
        if b0 >> 6 != 2:
            raise ValueError("RTCP version must be 2")
        end = pos + 4 * (words + 1)
        if end > n:
            raise ValueError("RTCP length exceeds packet")
        count = b0 & 0x1F
        body = pos + 4
        if pt == SR:
            if end - body < 24:
                raise ValueError("RTCP SR truncated")
            ssrc, ntp_hi, ntp_lo, rtp_ts, pc, oc = struct.unpack_from(">IIIIII", buf, body)
            out.append(
                SenderReport(
                    ssrc,
                    (ntp_hi << 32) | ntp_lo,
                    rtp_ts,
                    pc,
                    oc,
                    _blocks(buf, body + 24, count, end),
                )
            )
        elif pt == RR:
            if end - body < 4:
                raise ValueError("RTCP RR truncated")
            ssrc = struct.unpack_from(">I", buf, body)[0]
            out.append(ReceiverReport(ssrc, _blocks(buf, body + 4, count, end)))
        elif pt == BYE:
            if end - body < 4 * count:
                raise ValueError("RTCP BYE truncated")
            ssrcs = list(struct.unpack_from(f">{count}I", buf, body))
            reason = ""
            rpos = body + 4 * count
            if rpos < end:
                rlen = buf[rpos]
                reason = bytes(buf[rpos + 1 : min(end, rpos + 1 + rlen)]).decode("utf-8", "replace")
            out.append(Bye(ssrcs, reason))
        else:
            out.append(RtcpOther(pt, bytes(buf[pos:end])))
        pos = end
    return out


def is_rtcp_bye(buf: Buffer) -> bool:
    """Cheap check: does this compound packet contain a BYE (among its first
    ``MAX_COMPOUND`` packets, as :func:`parse_compound` reads them)? Malformed input is
    False."""
    pos, n = 0, len(buf)
    for _ in range(MAX_COMPOUND):
        if pos + 4 > n:
            break
        if buf[pos + 1] == BYE:
            return True
        pos += 4 * (((buf[pos + 2] << 8) | buf[pos + 3]) + 1)
    return False


def _sdes_cname(ssrc: int, cname: str) -> bytes:
    text = cname.encode()[:255]
    item = struct.pack(">IBB", ssrc, 1, len(text)) + text + b"\x00"
    item += b"\x00" * (-len(item) % 4)
    return struct.pack(">BBH", 0x81, SDES, len(item) // 4) + item


def build_sender_report(
    ssrc: int,
    ntp_timestamp: int,
    rtp_timestamp: int,
    packet_count: int,
    octet_count: int,
    cname: str | None = None,
) -> bytes:
    """An SR without report blocks, followed by an SDES CNAME when given (RFC 3550 §6.1)."""
    sr = struct.pack(
        ">BBHIIIIII",
        0x80,
        SR,
        6,
        ssrc,
        (ntp_timestamp >> 32) & 0xFFFFFFFF,
        ntp_timestamp & 0xFFFFFFFF,
        rtp_timestamp & 0xFFFFFFFF,
        packet_count & 0xFFFFFFFF,
        octet_count & 0xFFFFFFFF,
    )
    return sr + (_sdes_cname(ssrc, cname) if cname else b"")


def build_receiver_report(
    ssrc: int, reports: tuple[ReportBlock, ...] | list[ReportBlock] = (), cname: str | None = None
) -> bytes:
    """An RR with the given report blocks (and an SDES CNAME when given)."""
    body = b"".join(
        _REPORT_BLOCK.pack(
            r.ssrc,
            r.fraction_lost,
            (r.cumulative_lost & 0xFFFFFF).to_bytes(3, "big"),
            r.highest_seq,
            r.jitter,
            r.lsr,
            r.dlsr,
        )
        for r in reports[:31]
    )
    rr = struct.pack(">BBHI", 0x80 | len(reports[:31]), RR, 1 + 6 * len(reports[:31]), ssrc) + body
    return rr + (_sdes_cname(ssrc, cname) if cname else b"")


def build_bye(ssrcs: list[int]) -> bytes:
    """A BYE for the given sources."""
    ssrcs = ssrcs[:31]
    return struct.pack(f">BBH{len(ssrcs)}I", 0x80 | len(ssrcs), BYE, len(ssrcs), *ssrcs)
