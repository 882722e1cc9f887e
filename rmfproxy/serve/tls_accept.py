"""The RTSPS listener: TCP accepted here, the TLS handshake awaited per connection.

With ``create_server(ssl=...)`` the event loop runs the handshake, and a failed one
(a plain RTSP client on the RTSPS port, a client that does not trust the proxy's
certificate, an old TLS version, a scanner) is reported only in asyncio's debug mode:
the operator of a central site whose feeds do not come sees nothing at all. So the
listener accepts the TCP connections itself and hands each socket to
``loop.connect_accepted_socket(ssl=...)``, which raises when the handshake fails: the
failure is logged (rate-limited per client address and reason, like every refusal) and
counted, with the client's address and the TLS library's reason code. No certificate
content, SNI name or byte of the client's is logged.

The RTSP connection is made only once the handshake is done, so a client that never
completes it holds no slot of the connection limits (the handshake timeout bounds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

BACKLOG = 100
"""Pending TCP connections per listening socket (asyncio's default)."""
ACCEPT_RETRY = 0.1
"""Seconds before accepting again after the process ran out of descriptors."""


def handshake_failure(exc: BaseException) -> str:
    """A short reason for a failed handshake, from a fixed vocabulary (a log field)."""
    if isinstance(exc, TimeoutError | ConnectionAbortedError):
        # The loop aborts a handshake that outlasts ssl_handshake_timeout with
        # ConnectionAbortedError ("SSL handshake is taking longer than ...").
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        # The library's reason code ("wrong_version_number", "tlsv1_alert_unknown_ca",
        # "http_request", "no_shared_cipher" ...), not its message.
        return str(exc.reason or type(exc).__name__).lower()
    if isinstance(exc, ConnectionError | EOFError):
        return "closed-during-handshake"
    return type(exc).__name__


class TlsListener:
    """Listening sockets for RTSPS; each accepted connection becomes ``make_conn()``'s
    protocol over TLS once its handshake succeeds, and each failed handshake is told to
    ``on_failure(client address, reason)``."""

    def __init__(
        self,
        context: ssl.SSLContext,
        timeout: float,
        make_conn: Callable[[], asyncio.Protocol],
        on_failure: Callable[[str, str], None],
    ) -> None:
        self.on_failure = on_failure
        self.context = context
        self.timeout = timeout
        self.make_conn = make_conn
        self.sockets: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._handshakes: dict[asyncio.Task[None], socket.socket] = {}

    async def start(self, host: str, port: int) -> None:
        """Bind and listen on every address of ``host`` (as ``create_server`` does);
        ``OSError`` if one cannot be bound (nothing is left bound then)."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self.sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(BACKLOG)
                sock.setblocking(False)
        except OSError:
            self._close_sockets()
            raise
        self._accepting = [
            loop.create_task(self._accept(sock), name="rtsps-accept") for sock in self.sockets
        ]

    async def _accept(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listening)
            except OSError as exc:  # out of descriptors, mostly: the next one may work
                log.warning("rtsp.accept_failed", listener="rtsps", error=exc.strerror)
                await asyncio.sleep(ACCEPT_RETRY)
                continue
            task = loop.create_task(self._handshake(sock), name="rtsps-handshake")
            self._handshakes[task] = sock
            task.add_done_callback(self._handshakes.pop)

    async def _handshake(self, sock: socket.socket) -> None:
        try:
            peer = sock.getpeername()
        except OSError:
            peer = ("?",)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                self.make_conn, sock, ssl=self.context, ssl_handshake_timeout=self.timeout
            )
        except (OSError, TimeoutError, EOFError) as exc:  # ssl.SSLError is an OSError
            # The loop closed the socket (its transport's); the client is told by the
            # TLS alert the library sent, or by the close.
            self.on_failure(str(peer[0]), handshake_failure(exc))

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets = []

    async def close(self) -> None:
        """Stop accepting; end the handshakes under way (established connections are the
        server's to close)."""
        tasks = [*self._accepting, *self._handshakes]
        pending = dict(self._handshakes)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sock in pending.values():
            # A handshake cancelled before it began never handed its socket to a
            # transport (one that did is closed by the loop: fileno -1).
            if sock.fileno() >= 0:
                sock.close()
        self._accepting = []
        self._close_sockets()
