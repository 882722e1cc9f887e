"""Client side of RTSP authentication (rmfproxy/rtsp/auth.py): the proxy pulling from a
camera reads its ``WWW-Authenticate`` headers and answers them.

The input is one header value per line (a 401 may carry several headers).
Contract: ``parse_challenges`` rejects with ``ValueError`` only;
``DigestClient.authorization`` rejects an unsupported algorithm with
``ValueError`` only (the first four challenges are answered). The answer
must carry the challenge's realm, nonce and opaque back unchanged when the
server parses it (``parse_authorization``).
"""

from __future__ import annotations

from fuzz.targets import check
from rmfproxy.rtsp.auth import DigestClient, parse_authorization, parse_challenges

MAX_LEN = 16384

URI = "rtsp://10.0.0.5:554/Streaming/Channels/101"

DICTIONARY = (
    b"Digest ",
    b"Basic ",
    b'realm="',
    b'nonce="',
    b'opaque="',
    b"algorithm=MD5",
    b"algorithm=SHA-256",
    b"algorithm=MD5-sess",
    b'qop="auth"',
    b'qop="auth,auth-int"',
    b"stale=TRUE",
    b"stale=FALSE",
    b", ",
    b'\\"',
    b"\n",
    "\u00b2".encode(),  # a digit to str.isdigit(), not to int()
    "\u0663".encode(),  # ARABIC-INDIC THREE: a digit to both
)


def test_one_input(data: bytes) -> None:
    """Parse the challenges and answer the first few."""
    values = data.decode("utf-8", "replace").split("\n")
    try:
        challenges = parse_challenges(values)
    except ValueError:
        return
    # The proxy answers one challenge (rmfproxy/upstream/source.py picks it); answering a
    # few covers the client without timing thousands of MD5s on top of the parse.
    for ch in challenges[:4]:
        client = DigestClient("admin", "12345")
        try:
            answer = client.authorization(ch, "DESCRIBE", URI, cnonce="0a4f113b")
        except ValueError:
            continue
        if ch.scheme.lower() == "basic":
            continue
        scheme, params = parse_authorization(answer)
        check(scheme == "Digest", "the answer to a Digest challenge is Digest")
        check(
            (params.get("realm"), params.get("nonce"), params.get("opaque"))
            == (ch.realm, ch.nonce, ch.opaque),
            "the answer carries realm, nonce and opaque back unchanged",
        )
