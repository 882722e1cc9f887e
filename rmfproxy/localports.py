"""Which UDP ports belong to this process, so that no client can point media at them.

Theory of operation. A client that asks for RTP over UDP names its own receive ports
(``client_port``, RFC 2326 §12.39) and the server sends there. When the client runs on
the proxy's host, those could be the proxy's own ports: the shared client-facing
RTP/RTCP pair of the RTSP server, or a pair an upstream source bound to receive a
recorder's media. Media sent there loops back into the proxy: it can pose as a
recorder's RTP, or as RTCP that keeps a client session alive by itself.

- :class:`LocalPorts`: one per proxy, handed down by the composition root; whoever
  binds a UDP socket registers its port (the RTSP server its pair; an upstream source
  each pair it binds for a recorder) and unregisters it on close; ``is_own_port``
  answers from it (a dict lookup). Not a process-wide table: a simulated recorder in
  the same process (tests, the demo) is another server with ports of its own, and must
  not refuse the proxy's sources as if they were its own.
- :func:`is_local_address`: whether an address is one of this host's (a UDP socket can
  be bound to it), cached.

Why a registry and not a scan of the process' sockets (``/proc/self/fd``): a client
that runs inside this process (the status page's decoder, the tests' FFmpeg) binds
ports that are its own, not the proxy's.

Imports nothing of ours, so every layer may use it.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections import Counter


class LocalPorts:
    """The UDP ports one proxy bound (its server's pair, its sources' pairs).

    Owned by the composition root and handed to the server and to every source, so a
    simulator or a second proxy in the same process keeps its own set.
    """

    __slots__ = ("_ports",)

    def __init__(self) -> None:
        self._ports: Counter[int] = Counter()

    def register(self, port: int) -> None:
        """Record that ``port`` was bound (call :meth:`unregister` on close)."""
        self._ports[port] += 1

    def unregister(self, port: int) -> None:
        """Forget one :meth:`register` of ``port``."""
        if self._ports[port] <= 1:
            self._ports.pop(port, None)
        else:
            self._ports[port] -= 1

    def is_own_port(self, port: int) -> bool:
        """True if a UDP socket of this proxy is bound to ``port`` (as registered)."""
        return port in self._ports


@functools.lru_cache(maxsize=256)
def is_local_address(host: str) -> bool:
    """True if ``host`` (an IP address) is an address of this host."""
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    if ip.is_loopback or ip.is_unspecified:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((str(ip), 0))  # only an address of this host can be bound
    except OSError:
        return False
    return True
