"""HTTP-style authentication for RTSP: Digest (RFC 2617, RFC 7616) and Basic (RFC 7617).

No secret ever appears in an exception message, ``repr`` or ``str``.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^\s,]*)\s*,?')
_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda b: hashlib.md5(b).hexdigest(),
    "SHA-256": lambda b: hashlib.sha256(b).hexdigest(),
}


@dataclass(frozen=True)
class Challenge:
    """One challenge of a WWW-Authenticate header."""

    scheme: str
    realm: str = ""
    nonce: str = ""
    opaque: str | None = None
    algorithm: str = "MD5"
    qop: list[str] = field(default_factory=list)
    stale: bool = False


def _params(text: str) -> tuple[dict[str, str], int]:
    """Parse ``k=v, k="v"`` pairs from the start of ``text``; returns them and where they end."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        m = _PARAM.match(text, pos)
        if not m:
            break
        # A bare token followed by a space starts the next challenge.
        if m.group(2) is not None and m.group(3) is None and " " in m.group(2):
            break
        value = m.group(3)
        value = re.sub(r"\\(.)", r"\1", value) if value is not None else m.group(2)
        out[m.group(1).lower()] = value
        pos = m.end()
    return out, pos


def _quoted(value: str) -> str:
    """``value`` as a quoted-string (RFC 7230 §3.2.6): ``\\`` and ``"`` escaped, so a
    camera's realm or nonce that contains them is sent back as the camera sent it."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


MAX_CHALLENGES = 16
"""Challenges read from one response (a camera offers a few; thousands are an attack)."""


def parse_challenges(values: list[str]) -> list[Challenge]:
    """Every challenge in the given WWW-Authenticate header values."""
    out: list[Challenge] = []
    for value in values:
        rest = value.strip()
        while rest and len(out) < MAX_CHALLENGES:
            scheme, _, tail = rest.partition(" ")
            if not scheme or "=" in scheme:
                raise ValueError("WWW-Authenticate must start with an auth scheme")
            params, used = _params(tail)
            rest = tail[used:].strip().lstrip(",").strip()
            qop = [q.strip() for q in params.get("qop", "").split(",") if q.strip()]
            out.append(
                Challenge(
                    scheme=scheme.capitalize(),
                    realm=params.get("realm", ""),
                    nonce=params.get("nonce", ""),
                    opaque=params.get("opaque"),
                    algorithm=params.get("algorithm", "MD5"),
                    qop=qop,
                    stale=params.get("stale", "").lower() == "true",
                )
            )
            if not params:
                break
    return out


def parse_authorization(value: str) -> tuple[str, dict[str, str]]:
    """``(scheme, params)`` of an Authorization header (Basic gives ``{"token": ...}``)."""
    scheme, _, tail = value.strip().partition(" ")
    if not scheme:
        raise ValueError("empty Authorization header")
    if scheme.lower() == "basic":
        return "Basic", {"token": tail.strip()}
    params, _ = _params(tail)
    return scheme.capitalize(), params


def basic_authorization(username: str, password: str) -> str:
    """A Basic Authorization header value."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _hash_for(algorithm: str) -> tuple[Callable[[bytes], str], bool]:
    algo = algorithm.upper()
    sess = algo.endswith("-SESS")
    base = algo.removesuffix("-SESS")
    if base not in _HASHES:
        raise ValueError(f"unsupported digest algorithm {algorithm[:20]!r}")
    return _HASHES[base], sess


def digest_response(
    h: Callable[[bytes], str],
    sess: bool,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    cnonce: str,
    nc: str,
    qop: str | None,
) -> str:
    """The ``response`` value (RFC 7616 §3.4.1)."""
    ha1 = h(f"{username}:{realm}:{password}".encode())
    if sess:
        ha1 = h(f"{ha1}:{nonce}:{cnonce}".encode())
    ha2 = h(f"{method}:{uri}".encode())
    if qop:
        return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())
    return h(f"{ha1}:{nonce}:{ha2}".encode())


class DigestClient:
    """Answers Digest challenges for one user, counting nonces (RFC 7616 §3.4)."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self._password = password
        self._nc = 0
        self._nonce = ""

    def __repr__(self) -> str:
        return f"DigestClient(username={self.username!r})"

    def authorization(
        self, challenge: Challenge, method: str, uri: str, cnonce: str | None = None
    ) -> str:
        """The Authorization header value answering ``challenge`` for ``method uri``."""
        if challenge.scheme.lower() == "basic":
            return basic_authorization(self.username, self._password)
        h, sess = _hash_for(challenge.algorithm)
        if challenge.nonce != self._nonce:
            self._nonce, self._nc = challenge.nonce, 0
        self._nc += 1
        nc = f"{self._nc:08x}"
        cnonce = cnonce or os.urandom(8).hex()
        qop = "auth" if "auth" in challenge.qop else None
        resp = digest_response(
            h,
            sess,
            self.username,
            challenge.realm,
            self._password,
            method,
            uri,
            challenge.nonce,
            cnonce,
            nc,
            qop,
        )
        parts = [
            f"username={_quoted(self.username)}",
            f"realm={_quoted(challenge.realm)}",
            f"nonce={_quoted(challenge.nonce)}",
            f"uri={_quoted(uri)}",
            f'response="{resp}"',
        ]
        parts.append(f"algorithm={challenge.algorithm}")
        if challenge.opaque is not None:
            parts.append(f"opaque={_quoted(challenge.opaque)}")
        if qop:
            parts += [f"qop={qop}", f"nc={nc}", f'cnonce="{cnonce}"']
        return "Digest " + ", ".join(parts)


class AuthFailure(enum.Enum):
    """Why :meth:`DigestServer.verify` refused an Authorization header."""

    MALFORMED = "malformed"
    """Not a Digest header this server can read (scheme, fields, sizes, characters)."""
    UNKNOWN_NONCE = "unknown-nonce"
    """A nonce this server did not issue, or issued to another connection."""
    UNKNOWN_USER = "unknown-user"
    BAD_RESPONSE = "bad-response"
    """Wrong password (or a response computed over other request fields)."""
    STALE = "stale"
    """Right credentials over an expired nonce, or one issued to another connection."""
    REPLAY = "replay"
    """A nonce count (``nc``) not above the last one seen for that nonce."""
    URI_MISMATCH = "uri-mismatch"
    """The digest ``uri`` names another resource than the request."""


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of :meth:`DigestServer.verify`."""

    user: str | None
    stale: bool = False
    failure: AuthFailure | None = None
    """Why it failed (None on success)."""


def _fail(failure: AuthFailure) -> AuthResult:
    return AuthResult(None, stale=failure is AuthFailure.STALE, failure=failure)


def _is_hex(text: str, max_len: int) -> bool:
    return 0 < len(text) <= max_len and text.isascii() and all(c in _HEX for c in text)


_HEX = frozenset("0123456789abcdefABCDEF")
_SALT_LEN = 16
_MAC_LEN = 32


class NonceCounts:
    """The highest nonce count (``nc``) seen per nonce, to refuse replays (RFC 7616 §3.4.5).

    Bounded: at most ``max_entries`` nonces, and a nonce older than ``lifetime`` is
    forgotten (it is stale anyway). When an entry must go, its issue time raises a
    floor: a nonce issued at or before the floor and no longer in the table is treated
    as stale, so forgetting a nonce never lets one of its counts be replayed.
    """

    def __init__(self, *, max_entries: int = 16, lifetime: float = 300.0) -> None:
        self.max_entries = max_entries
        self.lifetime = lifetime
        self._seen: dict[str, tuple[int, int]] = {}
        """nonce -> (issue time, highest nc)."""
        self._floor = -1

    def __len__(self) -> int:
        return len(self._seen)

    def advance(self, nonce: str, issued: int, nc: int, now: float) -> AuthFailure | None:
        """Record ``nc`` for ``nonce``: None if it is new and higher, else why not."""
        for old, (t, _) in list(self._seen.items()):
            if now - t > self.lifetime:
                self._drop(old, t)
        entry = self._seen.get(nonce)
        if entry is None:
            if issued <= self._floor:
                return AuthFailure.STALE
            if len(self._seen) >= self.max_entries:
                oldest = min(self._seen, key=lambda k: self._seen[k][0])
                self._drop(oldest, self._seen[oldest][0])
            if issued <= self._floor:
                return AuthFailure.STALE
            self._seen[nonce] = (issued, nc)
            return None
        if nc <= entry[1]:
            return AuthFailure.REPLAY
        self._seen[nonce] = (entry[0], nc)
        return None

    def _drop(self, nonce: str, issued: int) -> None:
        del self._seen[nonce]
        self._floor = max(self._floor, issued)


class DigestServer:
    """Server side of Digest with stateless, HMAC-signed, time-limited nonces.

    A nonce is ``hex(issue time) + salt + MAC(time, salt, binding)``: verifiable
    without a table, unique per challenge, and, when the caller passes a ``binding``
    (the client connection's identity), valid on that connection only. With
    ``qop=auth`` the caller's :class:`NonceCounts` refuses a replayed ``nc``; legacy
    Digest without qop has no count, and the connection binding is what keeps a
    captured header from being replayed elsewhere (RFC 7616 §5.10, §5.11).
    """

    MAX_NONCE_LEN = 12 + _SALT_LEN + _MAC_LEN

    def __init__(self, realm: str, secret: bytes, nonce_lifetime: float = 300.0) -> None:
        self.realm = realm
        self._secret = secret
        self.nonce_lifetime = nonce_lifetime

    def __repr__(self) -> str:
        return f"DigestServer(realm={self.realm!r})"

    def _nonce(self, t: int, salt: str, binding: str) -> str:
        msg = f"{t}:{salt}:{binding}".encode()
        mac = hmac.new(self._secret, msg, hashlib.sha256).hexdigest()[:_MAC_LEN]
        return f"{t:x}{salt}{mac}"

    def challenge(self, now: float | None = None, stale: bool = False, binding: str = "") -> str:
        """A WWW-Authenticate value with a fresh nonce (for the connection ``binding``)."""
        t = int(now if now is not None else time.time())
        nonce = self._nonce(t, secrets.token_hex(_SALT_LEN // 2), binding)
        value = f'Digest realm="{self.realm}", nonce="{nonce}", algorithm=MD5, qop="auth"'
        return value + (", stale=TRUE" if stale else "")

    def verify(
        self,
        authorization: str,
        method: str,
        lookup_password: Callable[[str], str | None],
        now: float | None = None,
        *,
        binding: str = "",
        uri_ok: Callable[[str], bool] | None = None,
        counts: NonceCounts | None = None,
    ) -> AuthResult:
        """The authenticated user name, or None with the :class:`AuthFailure`.

        ``stale`` is set when the credentials were right but the nonce is expired or
        belongs to another ``binding``: the client retries with the fresh nonce
        without asking its user (RFC 7616 §3.3). ``uri_ok`` says whether the digest
        ``uri`` may stand for this request (RFC 7616 §3.4.6); ``counts`` tracks ``nc``.
        Never raises: any malformed input is :attr:`AuthFailure.MALFORMED`.
        """
        try:
            scheme, p = parse_authorization(authorization)
        except ValueError:
            return _fail(AuthFailure.MALFORMED)
        if scheme != "Digest":
            return _fail(AuthFailure.MALFORMED)
        user, nonce, uri, resp = p.get("username"), p.get("nonce"), p.get("uri"), p.get("response")
        if not user or not nonce or uri is None or not resp or p.get("realm") != self.realm:
            return _fail(AuthFailure.MALFORMED)
        # Bounded, ASCII hex only: int() of a 4,300-digit or non-ASCII "number" raises,
        # and compare_digest() refuses non-ASCII strings.
        if not _is_hex(nonce, self.MAX_NONCE_LEN) or len(nonce) <= _SALT_LEN + _MAC_LEN:
            return _fail(AuthFailure.UNKNOWN_NONCE)
        if not _is_hex(resp, 128) or not uri.isascii() or len(uri) > 4096:
            return _fail(AuthFailure.MALFORMED)
        t = int(nonce[: -_SALT_LEN - _MAC_LEN], 16)
        salt = nonce[-_SALT_LEN - _MAC_LEN : -_MAC_LEN]
        password = lookup_password(user)
        if password is None:
            return _fail(AuthFailure.UNKNOWN_USER)
        try:
            h, sess = _hash_for(p.get("algorithm", "MD5"))
        except ValueError:
            return _fail(AuthFailure.MALFORMED)
        qop = p.get("qop")
        if qop not in (None, "auth"):
            return _fail(AuthFailure.MALFORMED)
        nc = p.get("nc", "")
        cnonce = p.get("cnonce", "")
        if qop is not None and (not _is_hex(nc, 8) or not cnonce.isascii() or len(cnonce) > 256):
            return _fail(AuthFailure.MALFORMED)
        expected = digest_response(
            h, sess, user, self.realm, password, method, uri, nonce, cnonce, nc, qop
        )
        if not hmac.compare_digest(expected, resp.lower()):
            return _fail(AuthFailure.BAD_RESPONSE)
        # The response is right: whoever sent it knows the password, or replays it.
        if not hmac.compare_digest(nonce, self._nonce(t, salt, binding)):
            # Issued to another connection (or forged): a replay gains nothing from a
            # fresh nonce, a real client retries with it.
            return _fail(AuthFailure.STALE)
        current = now if now is not None else time.time()
        if current - t > self.nonce_lifetime:
            return _fail(AuthFailure.STALE)
        if uri_ok is not None and not uri_ok(uri):
            return _fail(AuthFailure.URI_MISMATCH)
        if qop is not None and counts is not None:
            failure = counts.advance(nonce, t, int(nc, 16), current)
            if failure is not None:
                return _fail(failure)
        return AuthResult(user)
