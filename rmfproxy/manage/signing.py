"""Signed requests between the two proxies of a pair (HMAC-SHA256 with the pair token).

Theory of operation.

- **What is signed.** ``HMAC-SHA256(token, method "\\n" path?query "\\n" SHA-256(body)
  "\\n" timestamp "\\n" nonce)``, hex, in ``X-Rmfproxy-Signature``; the Unix time in
  ``X-Rmfproxy-Timestamp``; a random ``X-Rmfproxy-Nonce`` so two identical requests in
  the same second have different signatures. The token itself never travels.
- **What is refused.** A wrong or missing signature, a timestamp more than
  :data:`SKEW` seconds away from this machine's clock (the peers' clocks must agree
  within it: run NTP), and a signature already accepted within that window (a
  replayed request). A signature older than the window cannot be replayed: its
  timestamp is refused first, so remembering the window's signatures is enough.
- **Answers are signed too.** The answer to a signed request carries
  ``X-Rmfproxy-Signature``: ``HMAC-SHA256(token, "response" "\n" status "\n"
  the request's signature "\n" SHA-256(body))``. Bound to the request's (unique)
  signature, an answer cannot be replayed to another request, and a follower applies
  only changes the other proxy of its pair sent.
- No I/O and no clock reading here: callers pass ``now``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SKEW = 60.0
"""Seconds a signed request's timestamp may differ from the receiver's clock."""
MAX_REMEMBERED = 100_000
"""Signatures remembered at most (a peer polls a few times a minute)."""

TIMESTAMP = "X-Rmfproxy-Timestamp"
NONCE = "X-Rmfproxy-Nonce"
SIGNATURE = "X-Rmfproxy-Signature"


def signature(token: str, method: str, target: str, body: bytes, ts: str, nonce: str) -> str:
    """The hex HMAC-SHA256 of one request (``target``: path and query as sent)."""
    digest = hashlib.sha256(body).hexdigest()
    message = "\n".join((method.upper(), target, digest, ts, nonce)).encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def response_signature(token: str, request_signature: str, status: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of the answer to a signed request."""
    digest = hashlib.sha256(body).hexdigest()
    message = "\n".join(("response", str(status), request_signature, digest)).encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def response_is_signed(
    token: str, request_signature: str, status: int, body: bytes, given: str | None
) -> bool:
    """Whether ``given`` signs this answer with ``token``."""
    expected = response_signature(token, request_signature, status, body)
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def sign_headers(token: str, method: str, target: str, body: bytes, now: float) -> dict[str, str]:
    """The headers that sign a request sent at ``now``."""
    ts = str(int(now))
    nonce = secrets.token_hex(12)
    return {
        TIMESTAMP: ts,
        NONCE: nonce,
        SIGNATURE: signature(token, method, target, body, ts, nonce),
    }


class SignatureGuard:
    """Checks signed requests and remembers the accepted signatures of the window."""

    def __init__(self, skew: float = SKEW) -> None:
        self.skew = skew
        self._seen: dict[str, float] = {}
        """Accepted signature -> when it can be forgotten."""

    def check(
        self,
        token: str,
        method: str,
        target: str,
        body: bytes,
        headers: dict[str, str],
        now: float,
    ) -> str | None:
        """None when the request is signed with ``token``, fresh and new; else the reason."""
        ts, nonce, given = (headers.get(h) for h in (TIMESTAMP, NONCE, SIGNATURE))
        if not ts or not nonce or not given:
            return "unsigned"
        try:
            when = int(ts)
        except ValueError:
            return "bad-timestamp"
        if abs(now - when) > self.skew:
            return "stale-timestamp"
        expected = signature(token, method, target, body, ts, nonce)
        if not hmac.compare_digest(expected.encode(), given.strip().lower().encode()):
            return "bad-signature"
        self._forget(now)
        if expected in self._seen:
            return "replayed"
        if len(self._seen) >= MAX_REMEMBERED:
            return "too-many"
        self._seen[expected] = when + self.skew
        return None

    def _forget(self, now: float) -> None:
        for sig in [s for s, until in self._seen.items() if until < now]:
            del self._seen[sig]
