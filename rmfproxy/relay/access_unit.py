"""Access units of one source, assembled from its RTP packets, without I/O.

An access unit (AU) is one coded picture with the NAL units around it. Two
recorders relaying one camera agree on the coded slices and on little else:
their RTP timestamps, packetization (MTU, STAP-A/AP or single NAL units, FU
sizes), parameter-set placement, SEI and AUD all differ. So the *identity* of
an AU is a fingerprint of its VCL NAL units only (H.264 types 1-5, H.265
types 0-31; RFC 6184 §5.2, RFC 7798 §4.4): each NAL's type and the bytes
after its NAL header, whatever RTP structure carried them. Parameter sets,
SEI, AUD and filler are not part of it; the parameter sets an AU carries are
collected so a keyframe can be made decodable on its own later.

An AU ends at the RTP marker bit (RFC 6184 §5.1, RFC 7798 §4.1) or, for
sources that never set it (some cameras and re-streamers do not), when a
packet with another timestamp begins the next one. It counts as *complete*
only when every sequence number from the packet after the previous AU's end
to its own end arrived: a source that loses a packet never yields half a
picture. Packets carrying no picture (parameter sets or SEI sent under their
own timestamp) are carried over in front of the next AU.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from rmfproxy.rtp.nal import NalFormat

_SEQ_TS = struct.Struct(">HI")
MAX_AU_PACKETS = 2048
"""An AU with more packets than this is treated as broken."""
MAX_PARAM_SET = 4096
"""Longest parameter set NAL kept (they are tens of bytes)."""
_BYTE = [bytes((i,)) for i in range(256)]
"""One-byte strings, so a NAL type enters the fingerprint without a new object per NAL."""


@dataclass(slots=True)
class AccessUnit:
    """One source's access unit."""

    ts: int
    """RTP timestamp (the source's own)."""
    packets: list[bytearray] = field(default_factory=list)
    """The RTP packets, header included, in order."""
    complete: bool = False
    """Every packet of it arrived (see the module docstring)."""
    fingerprint: int = 0
    """Length (above bit 32) and CRC-32 (the low 32 bits) of its VCL NAL units (type +
    body), independent of packetization. One int, not a pair: the merger keeps one per
    outbound AU of the last ~10 s for every camera."""
    keyframe: bool = False
    """It holds a random-access slice (H.264 IDR, H.265 IRAP)."""
    skip_on_start: bool = False
    """A leading picture that cannot be decoded when the stream starts at its IRAP (RASL)."""
    param_sets: dict[int, bytes] = field(default_factory=dict)
    """Complete parameter-set NAL units it carries, by NAL type."""
    vcl: bool = False
    """It carries at least one slice."""
    payload_bytes: int = 0


class AuAssembler:
    """Turns one source's video RTP packets into :class:`AccessUnit` values."""

    __slots__ = (
        "_after_end",
        "_aggregate",
        "_carry",
        "_carry_params",
        "_crc",
        "_cur",
        "_frag_param",
        "_frag_vcl",
        "_fragment",
        "_fu_type_mask",
        "_hl",
        "_len",
        "_next_seq",
        "_param_types",
        "_seen_any",
        "_type_of",
        "_vcl_types",
        "fmt",
        "malformed",
    )

    def __init__(self, fmt: NalFormat) -> None:
        self.fmt = fmt
        # The format's fields, read once per packet: kept here to spare the lookups.
        self._hl = fmt.header_len
        self._fu_type_mask = 0x1F if fmt.header_len == 1 else 0x3F
        self._type_of = bytes(fmt.nal_type(bytes((b, 0))) for b in range(256))
        """The NAL type by the NAL header's first byte (H.264's and H.265's type is in it):
        an index per NAL instead of a call."""
        self._aggregate = fmt.aggregate
        self._fragment = fmt.fragment
        self._vcl_types = fmt.vcl_types
        self._param_types = frozenset(fmt.param_types)
        self._cur: AccessUnit | None = None
        self._next_seq = 0
        self._after_end = False
        """The previous packet ended an AU (marker bit)."""
        self._seen_any = False
        self._crc = 0
        self._len = 0
        self._frag_vcl = False
        """The fragmented NAL in progress is a slice."""
        self._frag_param: bytearray | None = None
        self._carry: list[bytearray] = []
        self._carry_params: dict[int, bytes] = {}
        self.malformed = 0
        """Payloads that could not be parsed (counted, the AU is marked broken)."""

    def reset(self) -> None:
        """Forget everything (the source reconnected)."""
        self.__init__(self.fmt)  # type: ignore[misc]

    def push(
        self, packet: bytearray, payload_start: int, payload_end: int
    ) -> tuple[AccessUnit, ...]:
        """Feed one packet; returns the AUs it ends (zero, one, or two when a source without
        marker bits starts a new timestamp and ends the last packet's AU with this one)."""
        seq, ts = _SEQ_TS.unpack_from(packet, 2)
        marker = packet[1] > 0x7F
        cur = self._cur
        contiguous = seq == self._next_seq and self._seen_any
        ended_by_ts = False
        ended: AccessUnit | None = None
        if cur is not None and cur.ts != ts:
            # A new timestamp while an AU is open: its marker bit never came. It is whole if
            # no packet went missing before this one.
            if not contiguous:
                cur.complete = False
            ended = self._finish(cur)
            cur = None
            ended_by_ts = True
        if cur is None:
            if not self._seen_any:
                # The very first packet begins a whole AU only if it can begin one: servers
                # start a stream on a keyframe, anything else may be mid-picture.
                whole = self._starts_clean(packet, payload_start, payload_end)
            else:
                whole = contiguous and (self._after_end or ended_by_ts)
            cur = AccessUnit(ts, complete=whole)
            self._cur = cur
            self._crc = 0
            self._len = 0
            self._frag_vcl = False
            self._frag_param = None
        elif not contiguous or len(cur.packets) >= MAX_AU_PACKETS:
            cur.complete = False  # a packet of this AU is missing (or it is absurdly large)
        self._seen_any = True
        self._next_seq = (seq + 1) & 0xFFFF
        cur.packets.append(packet)
        cur.payload_bytes += payload_end - payload_start
        if not self._scan(cur, packet, payload_start, payload_end):
            self.malformed += 1
            cur.complete = False
        self._after_end = marker
        last = self._finish(cur) if marker else None
        if last is None:
            return () if ended is None else (ended,)
        return (last,) if ended is None else (ended, last)

    def _finish(self, au: AccessUnit) -> AccessUnit | None:
        """Close the AU: it is returned, or carried over in front of the next one."""
        self._cur = None
        if self._frag_param is not None:
            au.complete = False  # a fragmented NAL that never ended
        au.fingerprint = self._len << 32 | self._crc
        if not au.vcl and au.complete:
            # Parameter sets or SEI under a timestamp of their own: they go in front of the
            # next picture (bounded: a source that sends only these gets nowhere).
            if len(self._carry) + len(au.packets) <= 64:
                self._carry.extend(au.packets)
                self._carry_params.update(au.param_sets)
            else:
                self._carry, self._carry_params = [], {}
            return None
        if self._carry:
            au.packets[:0] = self._carry
            au.param_sets = {**self._carry_params, **au.param_sets}
            self._carry, self._carry_params = [], {}
        return au

    def _starts_clean(self, packet: bytearray, start: int, end: int) -> bool:
        """True if the packet begins with a NAL unit that can start an AU: a parameter set,
        AUD, SEI or a random-access slice."""
        fmt = self.fmt
        if end - start < fmt.header_len:
            return False
        payload = memoryview(packet)[start:end]
        t = fmt.nal_type(payload)
        if t == fmt.aggregate:
            if end - start < fmt.header_len + 2 + fmt.header_len:
                return False
            t = fmt.nal_type(payload[fmt.header_len + 2 :])
        elif t == fmt.fragment:
            if end - start <= fmt.header_len:
                return False
            fu = payload[fmt.header_len]
            if not fu & 0x80:
                return False
            t = fu & (0x1F if fmt.header_len == 1 else 0x3F)
        return t in fmt.irap_types or t not in fmt.vcl_types

    def _scan(self, au: AccessUnit, packet: bytearray, start: int, end: int) -> bool:
        """Fold the NAL units of ``packet[start:end]`` (its payload) into the AU; False if it
        is malformed. The payload is read through the packet: a view is made only of the
        bytes that are hashed or kept."""
        hl = self._hl
        n = end - start
        if n < hl:
            return False
        t = self._type_of[packet[start]]
        if t == self._fragment:  # most packets of a picture: checked first
            if n <= hl + 1:
                return False
            fu = packet[start + hl]
            if fu & 0x80:  # start of a fragmented NAL
                ftype = fu & self._fu_type_mask
                self._frag_vcl = ftype in self._vcl_types
                self._frag_param = None
                if self._frag_vcl:
                    self._vcl_type(au, ftype)
                    self._crc = zlib.crc32(_BYTE[ftype], self._crc)
                    self._len += 1
                elif ftype in self._param_types:
                    header = bytes(packet[start : start + hl])
                    self._frag_param = bytearray(self.fmt.make_header(header, ftype))
                    self._frag_param += memoryview(packet)[start + hl + 1 : end]
            elif self._frag_param is not None:
                self._frag_param += memoryview(packet)[start + hl + 1 : end]
                if len(self._frag_param) > MAX_PARAM_SET:
                    self._frag_param = None
            if self._frag_vcl:
                self._crc = zlib.crc32(memoryview(packet)[start + hl + 1 : end], self._crc)
                self._len += n - hl - 1
            if fu & 0x40:  # end
                if self._frag_param is not None:
                    frag = self._frag_param
                    au.param_sets[self._type_of[frag[0]]] = bytes(frag)
                self._frag_param = None
                self._frag_vcl = False
            return True
        payload = memoryview(packet)[start:end]
        if t == self._aggregate:
            pos = hl
            ok = pos + 2 <= n
            while pos + 2 <= n:
                size = (payload[pos] << 8) | payload[pos + 1]
                if size < hl or pos + 2 + size > n:
                    return False
                self._nal(au, payload[pos + 2 : pos + 2 + size])
                pos += 2 + size
            return ok
        self._nal(au, payload)
        return True

    def _nal(self, au: AccessUnit, nal: memoryview) -> None:
        hl = self._hl
        t = self._type_of[nal[0]]
        if t in self._vcl_types:
            self._vcl_type(au, t)
            self._crc = zlib.crc32(nal[hl:], zlib.crc32(_BYTE[t], self._crc))
            self._len += 1 + len(nal) - hl
        elif t in self._param_types and len(nal) <= MAX_PARAM_SET:
            au.param_sets[t] = bytes(nal)

    def _vcl_type(self, au: AccessUnit, t: int) -> None:
        au.vcl = True
        if t in self.fmt.irap_types:
            au.keyframe = True
        elif t in self.fmt.leading_skip_types:
            au.skip_on_start = True
