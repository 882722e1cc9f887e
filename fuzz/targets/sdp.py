"""Session descriptions (rmfproxy/rtsp/sdp.py) as a DESCRIBE body reaches the proxy.

Contract: ``SessionDescription.parse`` rejects with ``ValueError`` only; the
accessors ``control``, ``rtpmap(pt)`` (an ``RtpMap`` or None) and ``fmtp(pt)``
and ``resolve_control`` never raise. A parsed SDP serializes to text that
parses again with the same media sections.
"""

from __future__ import annotations

from fuzz.targets import check
from rmfproxy.rtsp.sdp import MAX_LINES, RtpMap, SessionDescription, resolve_control

MAX_LEN = 16384

BASE = "rtsp://10.0.0.5:554/Streaming/Channels/101/"

DICTIONARY = (
    b"v=0\r\n",
    b"o=- 0 0 IN IP4 127.0.0.1\r\n",
    b"s=Session\r\n",
    b"c=IN IP4 0.0.0.0\r\n",
    b"t=0 0\r\n",
    b"m=video 0 RTP/AVP 96\r\n",
    b"m=audio 0 RTP/AVP 0\r\n",
    b"a=rtpmap:96 H264/90000\r\n",
    b"a=rtpmap:96 H265/90000\r\n",
    b"a=rtpmap:97 MPEG4-GENERIC/16000/2\r\n",
    b"a=fmtp:96 packetization-mode=1;profile-level-id=42e01f;sprop-parameter-sets=",
    b"a=control:",
    b"a=control:*\r\n",
    b"a=range:npt=0-\r\n",
    b"b=AS:5000\r\n",
    b"i=",
    b"rtsp://",
    b"trackID=",
    "\u00b2".encode(),  # a digit to str.isdigit(), not to int()
    "\u0663".encode(),  # ARABIC-INDIC THREE: a digit to both
)


def timed(data: bytes) -> None:
    """What the proxy does with a camera's SDP: parse, then each media section's control
    and first format's rtpmap/fmtp (rmfproxy/relay/formats.py, upstream/source.py)."""
    try:
        sd = SessionDescription.parse(data.decode("utf-8", "replace"))
    except ValueError:
        return
    for m in sd.media:
        resolve_control(BASE, m.control)
        if m.formats and m.formats[0].isascii() and m.formats[0].isdigit():
            m.rtpmap(int(m.formats[0]))
            m.fmtp(int(m.formats[0]))


def test_one_input(data: bytes) -> None:
    """Parse, query every media section, serialize and parse again."""
    text = data.decode("utf-8", "replace")  # as rmfproxy/upstream/source.py decodes a body
    try:
        sd = SessionDescription.parse(text)
    except ValueError:
        return
    resolve_control(BASE, sd.control)
    for m in sd.media:
        resolve_control(BASE, m.control)
        for fmt in m.formats:
            try:
                pt = int(fmt)
            except ValueError:
                continue
            rm = m.rtpmap(pt)
            check(rm is None or isinstance(rm, RtpMap), "rtpmap gives an RtpMap or None")
            fmtp = m.fmtp(pt)
            check(isinstance(fmtp, dict), "fmtp gives a dict")
    text = sd.serialize()
    try:
        again = SessionDescription.parse(text)
    except ValueError:
        # serialize() always writes o=, s= and t=, so a document at the line cap may grow past it.
        check(text.count("\n") > MAX_LINES, "serialize() output parses again")
        return
    check(len(again.media) == len(sd.media), "serialize() keeps every media section")
    check(
        [(m.media, m.port, m.formats) for m in again.media]
        == [(m.media, m.port, m.formats) for m in sd.media],
        "serialize() keeps each m= line",
    )
