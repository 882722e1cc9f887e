"""RTSP messages and the parser of one TCP byte stream (RFC 2326 §4, §6, §7, §10.12).

One connection carries requests, responses and interleaved binary frames
(``$``, channel, 16-bit length, payload). :class:`StreamParser` splits them
without I/O: ``feed()`` bytes in, frames go straight to a callback (the hot
path: no event object per packet), messages come out of ``next_event()``.
Every length is capped; garbage is skipped until the stream realigns.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from rmfproxy.rtsp.errors import ParseError

REASONS = {
    100: "Continue",
    200: "OK",
    201: "Created",
    250: "Low on Storage Space",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    414: "Request-URI Too Large",
    415: "Unsupported Media Type",
    451: "Parameter Not Understood",
    453: "Not Enough Bandwidth",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    457: "Invalid Range",
    459: "Aggregate Operation Not Allowed",
    460: "Only Aggregate Operation Allowed",
    461: "Unsupported Transport",
    462: "Destination Unreachable",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "RTSP Version Not Supported",
    551: "Option not supported",
}

_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_TOKEN = re.compile(rb"^" + _TCHAR + rb"+$")
_VERSION = b"RTSP/1.0"

# Where a request or response could start (StreamParser): a method token, or a version
# ("RTSP/" and anything up to the space), of at most 31 bytes before its first space, or
# running to the end of what has arrived (the rest of the line may still come). A start
# line has its first space before any line end, so the answer does not depend on how much
# of the line has arrived. Possessive: a failed attempt reads at most 32 bytes, no backtrack.
_FIRST_WORD = rb"(?:RTSP/[^ \r\n]{0,26}+|" + _TCHAR + rb"{1,31}+)"
_START = re.compile(_FIRST_WORD + rb"(?: |\Z)")
"""A plausible message start at the match position (only its first 32 bytes are read)."""
_WORD_BYTE = bytes(re.fullmatch(_TCHAR, bytes([b])) is not None for b in range(256))
"""Non-zero for the bytes a first word can start with: a cheaper "no" than a regex call
for garbage (an LF before each interleaved frame, say)."""
_LINE_START_OR_END = re.compile(rb"\n(?:" + _FIRST_WORD + rb"(?: |\Z)|\Z)")
"""The first LF followed by a plausible message start (``_START``) or by the end of the
buffer. It begins with a literal LF, so ``re`` skips the bytes between line ends in C and
tries the rest only at each LF."""


class Headers:
    """Ordered, case-insensitive multi-map of header fields."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] = []
        if items is not None:
            pairs = items.items() if isinstance(items, Mapping) else items
            for k, v in pairs:
                self.add(k, v)

    @staticmethod
    def _check(name: str, value: str) -> None:
        if not name or any(c in name for c in "\r\n:") or "\r" in value or "\n" in value:
            raise ValueError("header names and values must not contain CR, LF (or ':' in names)")

    def add(self, name: str, value: str) -> None:
        """Append a field (keeps earlier ones with the same name)."""
        value = str(value)
        self._check(name, value)
        self._items.append((name, value))

    def __setitem__(self, name: str, value: str) -> None:
        value = str(value)
        self._check(name, value)
        low = name.lower()
        self._items = [(k, v) for k, v in self._items if k.lower() != low]
        self._items.append((name, value))

    def __getitem__(self, name: str) -> str:
        v = self.get(name)
        if v is None:
            raise KeyError(name)
        return v

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        low = name.lower()
        for k, v in self._items:
            if k.lower() == low:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order."""
        low = name.lower()
        return [v for k, v in self._items if k.lower() == low]

    def __delitem__(self, name: str) -> None:
        low = name.lower()
        self._items = [(k, v) for k, v in self._items if k.lower() != low]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def items(self) -> list[tuple[str, str]]:
        """All fields in order."""
        return list(self._items)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        # Never print credentials.
        shown = [
            (k, "<redacted>" if k.lower() in ("authorization", "proxy-authorization") else v)
            for k, v in self._items
        ]
        return f"Headers({shown!r})"


def _serialize_head(start: str, headers: Headers, body: bytes) -> bytes:
    lines = [start]
    has_length = False
    for k, v in headers.items():
        if k.lower() == "content-length":
            has_length = True
            v = str(len(body))
        lines.append(f"{k}: {v}")
    if body and not has_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def _cseq(headers: Headers) -> int | None:
    v = headers.get("CSeq")
    if v is None:
        return None
    v = v.strip()
    return int(v) if v.isascii() and v.isdigit() and len(v) <= 10 else None


@dataclass
class Request:
    """An RTSP request."""

    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def serialize(self) -> bytes:
        """The request on the wire (Content-Length added for a body)."""
        if not _TOKEN.match(self.method.encode()) or any(c in self.uri for c in " \r\n"):
            raise ValueError("bad method or URI")
        return _serialize_head(f"{self.method} {self.uri} RTSP/1.0", self.headers, self.body)

    @property
    def cseq(self) -> int | None:
        """The CSeq header as a number, if valid."""
        return _cseq(self.headers)


@dataclass
class Response:
    """An RTSP response."""

    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def __post_init__(self) -> None:
        if not self.reason:
            self.reason = REASONS.get(self.status, "Unknown")

    def serialize(self) -> bytes:
        """The response on the wire (Content-Length added for a body)."""
        return _serialize_head(f"RTSP/1.0 {self.status} {self.reason}", self.headers, self.body)

    @property
    def cseq(self) -> int | None:
        """The CSeq header as a number, if valid."""
        return _cseq(self.headers)


Event = Request | Response | ParseError


class StreamParser:
    """Splits one RTSP connection's byte stream into messages and interleaved frames."""

    def __init__(
        self,
        on_frame: Callable[[int, bytearray], None],
        *,
        max_header_bytes: int = 16384,
        max_body_bytes: int = 1 << 20,
        max_pending_events: int = 64,
    ) -> None:
        self._on_frame = on_frame
        self._max_header = max_header_bytes
        self._max_body = max_body_bytes
        self._max_events = max_pending_events
        self._buf = bytearray()
        self._pos = 0
        self._events: deque[Event] = deque()
        self._skip_body = 0
        self._discarding_head = False
        self._in_garbage = False
        """Inside a garbage line that the previous read cut: skip on to its end."""
        self._scan_at = (-1, 0)
        """(message start, offset) where the search for the end of its head resumes."""
        self._head: tuple[int, Request | Response, int, int] | None = None
        """A parsed head waiting for its body: (message start, message, body start, length)."""
        self._held = False
        """Parsing stopped at the bound of pending messages (not for want of bytes): taking
        a message resumes it. Otherwise what is left is incomplete, and parsing it again
        before more bytes come would find nothing (once per read, on the hot path)."""
        self.garbage_bytes = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes; frames are delivered now, messages queue for ``next_event``.

        Parsing stops while ``max_pending_events`` messages wait to be taken, so a
        peer that pipelines requests faster than they are answered leaves its bytes
        here (bounded by what the caller reads before it stops reading), not as an
        unbounded queue of parsed requests; ``next_event`` resumes parsing.
        """
        self._buf += data
        self._process()

    def next_event(self) -> Event | None:
        """The next complete message (or a ``ParseError`` for a malformed one), or None."""
        if not self._events and self._held:
            self._process()
        if self._events:
            return self._events.popleft()
        return None

    @property
    def buffered(self) -> int:
        """Received bytes not yet parsed into a frame or message (a partial one, or
        bytes held back while ``max_pending_events`` messages wait)."""
        return len(self._buf) - self._pos

    def _process(self) -> None:
        buf = self._buf
        pos = self._pos
        n = len(buf)
        self._held = False
        while pos < n:
            if len(self._events) >= self._max_events:
                self._held = True
                break
            if self._skip_body:
                take = min(self._skip_body, n - pos)
                self._skip_body -= take
                pos += take
                continue
            if self._discarding_head:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    pos = max(pos, n - 3)
                    break
                pos = end + 4
                self._discarding_head = False
                continue
            c = buf[pos]
            if c == 0x24:  # '$': interleaved frame (RFC 2326 §10.12)
                # The hot path: every frame that follows in this read, in one tight loop
                # (a frame queues no message, so the pending-message bound cannot change).
                start = pos
                pos = self._frames(buf, pos, n)
                if pos == start:
                    break  # a frame cut by the end of the read
                # A frame ends any garbage line: what follows it is parsed afresh, however
                # the reads were cut (in one read, the resync stops at this '$' too).
                self._in_garbage = False
                continue
            if self._in_garbage or not _WORD_BYTE[c] or _START.match(buf, pos) is None:
                # Garbage: skip to the next '$' or line start that could begin a message.
                # A garbage line cut by the end of a read stays garbage in the next one:
                # where TCP splits the stream must not change what is parsed.
                # From ``pos`` itself: an empty line's own LF ends it (skipping past it would
                # swallow the line after it, but only when a read ended just before it).
                nxt = self._resync(buf, pos, n)
                self._in_garbage = nxt < 0
                if nxt < 0:
                    nxt = n
                self.garbage_bytes += nxt - pos
                pos = nxt
                continue
            consumed = self._message(buf, pos, n)
            if consumed == 0:
                break
            # The resumable state belongs to the message just consumed.
            self._scan_at = (-1, 0)
            self._head = None
            pos += consumed
        # Compact once the consumed prefix is large.
        if pos >= n:
            buf.clear()
            self._scan_at = (-1, 0)
            self._head = None
            pos = 0
        elif pos > 65536:
            del buf[:pos]
            self._scan_at = (self._scan_at[0] - pos, self._scan_at[1] - pos)
            if self._head is not None:
                start, msg, body_start, length = self._head
                self._head = (start - pos, msg, body_start - pos, length)
            pos = 0
        self._pos = pos

    def _frames(self, buf: bytearray, pos: int, n: int) -> int:
        """Deliver the complete interleaved frames from ``pos`` (a '$') on; returns where
        the first byte that is not the start of a complete frame is."""
        on_frame = self._on_frame
        while n - pos >= 4:
            end = pos + 4 + ((buf[pos + 2] << 8) | buf[pos + 3])
            if end > n:
                break
            on_frame(buf[pos + 1], buf[pos + 4 : end])
            pos = end
            if pos >= n or buf[pos] != 0x24:
                break
        return pos

    @staticmethod
    def _resync(buf: bytearray, start: int, n: int) -> int:
        """Where the garbage from ``start`` ends: the first '$', or the first line start
        (just after an LF) where ``_START`` matches or the buffer ends; -1 if neither is
        in ``buf[start:n]``.

        Two ``find`` and one regex search, all in C, however many short lines the garbage
        has: a Python-level check per line cost ~1 µs each (16 KB of ``x\\n`` lines
        took 8.7 ms, fuzz/corpus/rtsp_stream/regress-garbage-short-lines-16k).
        """
        dollar = buf.find(b"$", start, n)
        end = n if dollar < 0 else dollar
        lf = buf.find(b"\n", start, end)
        if lf < 0:
            # No LF before the '$' (or the end), so no line start either: a long garbage
            # line is skipped by memchr alone.
            return dollar
        if lf == end - 1:
            # The only line start is the '$' (or the end) itself, as in garbage cut short by
            # frames: no search.
            return end
        # Only the lines that start before the '$' are searched, so garbage cut into many
        # pieces by '$' is still read once. With ``end`` at the '$', ``\Z`` there takes a
        # first word cut by it for complete; that can only be the last line before the '$'
        # (a word has no LF), and ``_START`` checks it against the whole buffer.
        m = _LINE_START_OR_END.search(buf, lf, end)
        if m is None:
            return dollar
        line = m.start() + 1
        if m.end() == end < n and line < end and _START.match(buf, line) is None:
            return dollar
        return line

    def _message(self, buf: bytearray, pos: int, n: int) -> int:
        """Parse one message at ``pos``; returns bytes consumed (0 = need more)."""
        if self._head is not None and self._head[0] == pos:
            # The head was parsed already; only the body was missing.
            _, msg, body_start, length = self._head
            return self._body(buf, pos, n, msg, body_start, length)
        self._head = None
        limit = min(n, pos + self._max_header + 4)
        # Resume the search where the previous feed stopped: a head trickled in byte
        # by byte is scanned once, not once per byte.
        scan = self._scan_at[1] if self._scan_at[0] == pos else pos
        end = buf.find(b"\n\r\n", scan, limit)
        end2 = buf.find(b"\n\n", scan, limit)
        if end < 0 and end2 < 0:
            self._scan_at = (pos, max(pos, limit - 2))
            if n - pos > self._max_header:
                self._events.append(ParseError("header block too large", 413))
                self._discarding_head = True
                return n - pos if buf.find(b"\r\n\r\n", pos) < 0 else 1
            return 0
        if end < 0 or (0 <= end2 < end):
            head_end, body_start = end2, end2 + 2
        else:
            head_end, body_start = end, end + 3
        head = bytes(buf[pos:head_end]).decode("utf-8", "replace")
        lines = [ln.removesuffix("\r") for ln in head.split("\n")]
        try:
            msg = self._start_line(lines[0])
            # Each field collects its value pieces first and is joined once, so that
            # obsolete line folding (RFC 2616 §2.2 LWS, used by RFC 2326 §4) costs time
            # linear in the head: appending to the previous value line by line was
            # quadratic (a 16 KB head of folded lines cost seconds of CPU).
            fields: list[tuple[str, list[str]]] = []
            for line in lines[1:]:
                if not line:
                    continue
                if line[0] in " \t":
                    if not fields:
                        raise ParseError("continuation line before any header field")
                    piece = line.strip()
                    if piece:
                        fields[-1][1].append(piece)
                    continue
                name, sep, value = line.partition(":")
                if not sep or not name or name != name.strip() or not _TOKEN.match(name.encode()):
                    raise ParseError(f"malformed header line {line[:40]!r}")
                fields.append((name, [value.strip()]))
            for name, pieces in fields:
                try:
                    msg.headers.add(name, " ".join(p for p in pieces if p))
                except ValueError:
                    raise ParseError("control character in a header line") from None
            length_s = msg.headers.get("Content-Length")
            length = 0
            if length_s is not None:
                # isdigit() alone accepts non-ASCII digits that int() then refuses.
                if not (length_s.isascii() and length_s.isdigit()) or len(length_s) > 9:
                    raise ParseError("bad Content-Length")
                length = int(length_s)
        except ParseError as err:
            self._events.append(err)
            return body_start - pos
        if length > self._max_body:
            self._events.append(ParseError("body too large", 413))
            self._skip_body = length
            return body_start - pos
        return self._body(buf, pos, n, msg, body_start, length)

    def _body(
        self,
        buf: bytearray,
        pos: int,
        n: int,
        msg: Request | Response,
        body_start: int,
        length: int,
    ) -> int:
        if n - body_start < length:
            self._head = (pos, msg, body_start, length)
            return 0
        self._head = None
        msg.body = bytes(buf[body_start : body_start + length])
        self._events.append(msg)
        return body_start + length - pos

    @staticmethod
    def _start_line(line: str) -> Request | Response:
        parts = line.split(" ", 2)
        if line.startswith("RTSP/"):
            code = parts[1] if len(parts) > 1 else ""
            # isdigit() alone accepts non-ASCII digits ('²') that int() refuses.
            if not (code.isascii() and code.isdigit()) or len(code) != 3:
                raise ParseError(f"malformed status line {line[:40]!r}")
            if parts[0] != "RTSP/1.0":
                raise ParseError(f"unsupported version {parts[0][:12]!r}", 505)
            return Response(int(parts[1]), parts[2] if len(parts) > 2 else "", Headers())
        if len(parts) != 3 or not parts[1]:
            raise ParseError(f"malformed request line {line[:40]!r}")
        method, uri, version = parts
        if not _TOKEN.match(method.encode()):
            raise ParseError(f"malformed method {method[:20]!r}")
        if not version.startswith("RTSP/") or " " in version:
            raise ParseError(f"malformed request line {line[:40]!r}")
        if version != "RTSP/1.0":
            raise ParseError(f"unsupported version {version[:12]!r}", 505)
        if len(uri) > 4096:
            raise ParseError("request URI too long", 414)
        return Request(method, uri, Headers())
