"""Who may use the RTSP server: connection limits and temporary bans after failed logins.

Theory of operation. Every accepted TCP connection asks :meth:`ConnectionLimits.admit`
with its peer address; past ``max_per_ip`` connections from one address, or past
``max_total`` altogether, the connection is refused (the caller answers its first
request ``503 Service Unavailable`` with ``Retry-After``, RFC 2326 §11.5.3/§12.31, and
closes it). :meth:`ConnectionLimits.release` gives the slot back when it closes.

:class:`AuthBans` counts failed authentications per address: ``after`` failures within
``seconds`` ban the address for ``seconds`` (``after`` 0 = never). A success clears the
count. The table is bounded; when full the oldest address is forgotten (it loses its
count, never gains a ban).

Neither class reads the clock or does I/O: callers pass ``now``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServeLimits:
    """The client-facing server's limits (the ``rtsp`` config keys of the same names)."""

    request_timeout: float = 10.0
    """Seconds a started request (or interleaved frame) may take to arrive whole."""
    idle_timeout: float = 60.0
    """Seconds a connection without a live session may stay silent."""
    max_connections: int = 1024
    """Client connections at once, over all addresses."""
    max_connections_per_ip: int = 256
    """Client connections at once from one address (a VMS opens one per camera)."""
    auth_ban_after: int = 0
    """Failed authentications from one address that ban it (0: never ban)."""
    auth_ban_seconds: float = 300.0
    """How long such a ban lasts, and the window the failures are counted in."""
    retry_after: int = 5
    """Seconds announced in ``Retry-After`` when the server is full."""
    log_interval: float = 60.0
    """Refusals from one address are logged once per this many seconds, with a count."""
    write_high_water: int = 64 << 10
    """Bytes of unsent replies above which a connection's requests stop being read."""
    max_body_bytes: int = 8 << 10
    """Largest request body accepted (RTSP requests to this server carry little or none)."""


class ConnectionLimits:
    """Counts open connections per address and in total."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self._per_ip: Counter[str] = Counter()

    def admit(self, ip: str) -> str | None:
        """Take a slot for ``ip``: None if admitted, else why not (``per-ip``/``total``)."""
        if self.total >= self.max_total:
            return "total"
        if self._per_ip[ip] >= self.max_per_ip:
            return "per-ip"
        self.total += 1
        self._per_ip[ip] += 1
        return None

    def release(self, ip: str) -> None:
        """Give back a slot taken by :meth:`admit`."""
        self.total -= 1
        if self._per_ip[ip] <= 1:
            self._per_ip.pop(ip, None)
        else:
            self._per_ip[ip] -= 1

    def count(self, ip: str) -> int:
        """Connections open from ``ip``."""
        return self._per_ip.get(ip, 0)


@dataclass(slots=True)
class _Failures:
    first: float
    count: int = 0
    banned_until: float = 0.0


class AuthBans:
    """Bans an address for a while after repeated failed authentications."""

    def __init__(self, after: int, seconds: float, *, max_entries: int = 4096) -> None:
        self.after = after
        self.seconds = seconds
        self.max_entries = max_entries
        self._table: dict[str, _Failures] = {}

    def __len__(self) -> int:
        return len(self._table)

    def failed(self, ip: str, now: float) -> bool:
        """Count a failure; True if it bans ``ip`` now."""
        if self.after <= 0:
            return False
        entry = self._table.get(ip)
        if entry is None or now - entry.first > self.seconds:
            if entry is None and len(self._table) >= self.max_entries:
                self._forget_one(now)
            entry = _Failures(now, banned_until=entry.banned_until if entry else 0.0)
            self._table[ip] = entry
        entry.count += 1
        if entry.count >= self.after:
            entry.banned_until = now + self.seconds
            entry.first, entry.count = now, 0
            return True
        return False

    def succeeded(self, ip: str) -> None:
        """A successful authentication clears the address' count."""
        entry = self._table.get(ip)
        if entry is not None and entry.banned_until == 0.0:
            del self._table[ip]
        elif entry is not None:
            entry.count = 0

    def banned_for(self, ip: str, now: float) -> float:
        """Seconds the ban of ``ip`` still lasts (0: not banned)."""
        entry = self._table.get(ip)
        if entry is None:
            return 0.0
        return max(0.0, entry.banned_until - now)

    def _forget_one(self, now: float) -> None:
        # Prefer an address that is not banned; the dict is ordered oldest first.
        for ip, entry in self._table.items():
            if entry.banned_until <= now:
                del self._table[ip]
                return
        del self._table[next(iter(self._table))]
