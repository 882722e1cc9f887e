"""HTTP-style authentication for RTSP: Digest (RFC 2617, RFC 7616) and Basic (RFC 7617).

No secret ever appears in an exception message, ``repr`` or ``str``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
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


def parse_challenges(values: list[str]) -> list[Challenge]:
    """Every challenge in the given WWW-Authenticate header values."""
    out = []
    for value in values:
        rest = value.strip()
        while rest:
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
            f'username="{self.username}"',
            f'realm="{challenge.realm}"',
            f'nonce="{challenge.nonce}"',
            f'uri="{uri}"',
            f'response="{resp}"',
        ]
        parts.append(f"algorithm={challenge.algorithm}")
        if challenge.opaque is not None:
            parts.append(f'opaque="{challenge.opaque}"')
        if qop:
            parts += [f"qop={qop}", f"nc={nc}", f'cnonce="{cnonce}"']
        return "Digest " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of :meth:`DigestServer.verify`."""

    user: str | None
    stale: bool = False


class DigestServer:
    """Server side of Digest with stateless, HMAC-signed, time-limited nonces."""

    def __init__(self, realm: str, secret: bytes, nonce_lifetime: float = 300.0) -> None:
        self.realm = realm
        self._secret = secret
        self.nonce_lifetime = nonce_lifetime

    def __repr__(self) -> str:
        return f"DigestServer(realm={self.realm!r})"

    def _nonce(self, t: int) -> str:
        mac = hmac.new(self._secret, str(t).encode(), hashlib.sha256).hexdigest()[:32]
        return f"{t:x}{mac}"

    def challenge(self, now: float | None = None, stale: bool = False) -> str:
        """A WWW-Authenticate value with a fresh nonce."""
        t = int(now if now is not None else time.time())
        value = f'Digest realm="{self.realm}", nonce="{self._nonce(t)}", algorithm=MD5, qop="auth"'
        return value + (", stale=TRUE" if stale else "")

    def verify(
        self,
        authorization: str,
        method: str,
        lookup_password: Callable[[str], str | None],
        now: float | None = None,
    ) -> AuthResult:
        """The authenticated user name, or None (``stale`` when only the nonce expired)."""
        try:
            scheme, p = parse_authorization(authorization)
        except ValueError:
            return AuthResult(None)
        if scheme != "Digest":
            return AuthResult(None)
        user, nonce, uri, resp = p.get("username"), p.get("nonce"), p.get("uri"), p.get("response")
        if not user or not nonce or uri is None or not resp or p.get("realm") != self.realm:
            return AuthResult(None)
        if len(nonce) <= 32:
            return AuthResult(None)
        try:
            t = int(nonce[:-32], 16)
        except ValueError:
            return AuthResult(None)
        if not hmac.compare_digest(nonce, self._nonce(t)):
            return AuthResult(None)
        password = lookup_password(user)
        if password is None:
            return AuthResult(None)
        try:
            h, sess = _hash_for(p.get("algorithm", "MD5"))
        except ValueError:
            return AuthResult(None)
        qop = p.get("qop")
        if qop not in (None, "auth"):
            return AuthResult(None)
        expected = digest_response(
            h,
            sess,
            user,
            self.realm,
            password,
            method,
            uri,
            nonce,
            p.get("cnonce", ""),
            p.get("nc", ""),
            qop,
        )
        if not hmac.compare_digest(expected, resp.lower()):
            return AuthResult(None)
        current = now if now is not None else time.time()
        if current - t > self.nonce_lifetime:
            return AuthResult(None, stale=True)
        return AuthResult(user)
