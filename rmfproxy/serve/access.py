"""Client authentication (Digest, RFC 7616) and per-user camera rights."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from rmfproxy.rtsp.auth import AuthFailure, DigestServer, NonceCounts
from rmfproxy.rtsp.message import Request


@dataclass(frozen=True)
class User:
    """A client account: its password and the paths it may open (None = all)."""

    name: str
    password: str = field(repr=False)
    paths: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of checking a request: ``status`` 200 means go ahead."""

    status: int
    user: str | None = None
    challenge: str | None = None
    failure: AuthFailure | None = None
    """Why credentials that were presented were refused (None: none presented, or fine)."""


class AccessControl:
    """Checks every request's Authorization header against the configured users."""

    def __init__(self, users: list[User], realm: str = "rmfproxy") -> None:
        self._users = {u.name: u for u in users}
        self._digest = DigestServer(realm, secrets.token_bytes(32))

    def new_counts(self) -> NonceCounts:
        """A nonce-count table for one client connection (see :class:`NonceCounts`)."""
        return NonceCounts(lifetime=self._digest.nonce_lifetime)

    def check(
        self,
        request: Request,
        path: str | None,
        now: float,
        *,
        binding: str = "",
        counts: NonceCounts | None = None,
        uri_ok: Callable[[str], bool] | None = None,
    ) -> Decision:
        """401 with a challenge when unauthenticated, 404 for a path the user may not see.

        A forbidden camera answers 404 like an unknown one, so that a user cannot
        learn which cameras exist beyond those granted. ``binding`` (the connection's
        identity) ties nonces to one connection; ``counts`` and ``uri_ok`` are passed
        to :meth:`DigestServer.verify`.
        """
        header = request.headers.get("Authorization")
        if header is None:
            return Decision(401, challenge=self._digest.challenge(now, binding=binding))
        result = self._digest.verify(
            header,
            request.method,
            self._password,
            now,
            binding=binding,
            uri_ok=uri_ok,
            counts=counts,
        )
        if result.user is None:
            challenge = self._digest.challenge(now, stale=result.stale, binding=binding)
            return Decision(401, challenge=challenge, failure=result.failure)
        user = self._users[result.user]
        if path is not None and user.paths is not None and path not in user.paths:
            return Decision(404, user=user.name)
        return Decision(200, user=user.name)

    def _password(self, name: str) -> str | None:
        user = self._users.get(name)
        return user.password if user else None
