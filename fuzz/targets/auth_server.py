"""Server side of RTSP authentication (rmfproxy/rtsp/auth.py): a client's
``Authorization`` header checked by ``DigestServer.verify``.

Contract: ``verify`` never raises (a bad header is ``AuthResult(None)``);
``parse_authorization`` rejects with ``ValueError`` only. The seeds hold
valid answers to nonces this module's server issued at ``NOW``, so mutations
reach the HMAC and response checks.
"""

from __future__ import annotations

import contextlib

from fuzz.targets import check
from rmfproxy.rtsp.auth import AuthResult, DigestServer, parse_authorization

MAX_LEN = 16384

REALM = "rmfproxy"
SECRET = b"fuzz-secret-not-used-anywhere-else"
NOW = 1_790_000_000.0
USERS = {"admin": "12345", "viewer": 'pa:ss"w\\rd'}

DICTIONARY = (
    b"Digest ",
    b"Basic ",
    b'username="admin"',
    b'realm="rmfproxy"',
    b'nonce="',
    b'uri="rtsp://127.0.0.1:8554/cam"',
    b'response="',
    b"algorithm=MD5",
    b"algorithm=SHA-256",
    b"algorithm=MD5-sess",
    b"qop=auth",
    b"nc=00000001",
    b'cnonce="',
    b", ",
    b'\\"',
    "\u00b2".encode(),  # a digit to str.isdigit(), not to int()
    "\u0663".encode(),  # ARABIC-INDIC THREE: a digit to both
)

SERVER = DigestServer(REALM, SECRET)


def test_one_input(data: bytes) -> None:
    """Verify the header at a fixed time, and parse it."""
    value = data.decode("utf-8", "replace")
    result = SERVER.verify(value, "DESCRIBE", USERS.get, NOW)
    check(isinstance(result, AuthResult), "verify returns an AuthResult")
    check(result.user is None or result.user in USERS, "verify names only a known user")
    with contextlib.suppress(ValueError):
        parse_authorization(value)
