"""Is a source there? One RTSP DESCRIBE per source URL, no credentials, a short timeout.

Theory of operation. ``rmfproxy consolidate --probe`` imports cameras whose recorders
may be unreachable from here: instead of failing the batch, a camera none of whose
sources answers is written ``pending: true``. The probe opens a TCP connection (TLS
for ``rtsps``, certificate not checked: nothing secret is sent), sends one DESCRIBE
(RFC 2326 §10.2) *without credentials* (consolidation never reads a secret) and waits
for the response's status line. A source answers when the status is 200, or 401:
the recorder is there and serving RTSP, it only wants the credentials the proxy will
send (RFC 2326 §11.1, §D.2.1). Anything else (no connection, no answer within the
timeout, not RTSP, 404 or another status) is "did not answer", with the reason. The
URL in a result never carries a user name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass

from rmfproxy import __version__
from rmfproxy.rtsp.errors import ParseError
from rmfproxy.rtsp.message import Headers, Request, Response, StreamParser
from rmfproxy.upstream.url import host_port, is_tls, split_credentials

ANSWERING = frozenset({200, 401})
"""Statuses that show the stream is served (401: it wants the credentials we omit)."""
MAX_READ = 64 * 1024
"""Bytes read for one answer before the source is called not RTSP."""


@dataclass(frozen=True)
class ProbeResult:
    """What one DESCRIBE found."""

    url: str
    """The URL probed, without user."""
    reachable: bool
    detail: str
    """``RTSP 200 OK``, ``RTSP 404 Not Found``, ``connection refused``, ``no answer in 3 s``..."""


async def describe(url: str, wait: float) -> ProbeResult:
    """DESCRIBE ``url`` once, waiting at most ``wait`` seconds; never raises for a network
    problem."""
    clean = split_credentials(url)[0]
    host, port = host_port(clean)
    context = None
    if is_tls(clean):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    request = Request(
        "DESCRIBE",
        clean,
        Headers(
            [
                ("CSeq", "1"),
                ("Accept", "application/sdp"),
                ("User-Agent", f"rmfproxy/{__version__} consolidate probe"),
            ]
        ),
    )
    try:
        async with asyncio.timeout(wait):
            reader, writer = await asyncio.open_connection(host, port, ssl=context)
            try:
                writer.write(request.serialize())
                await writer.drain()
                status = await _read_status(reader)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        return ProbeResult(clean, False, f"no answer in {wait:g} s")
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else (str(exc) or type(exc).__name__)
        return ProbeResult(clean, False, f"cannot connect: {why}")
    if isinstance(status, str):
        return ProbeResult(clean, False, status)
    return ProbeResult(
        clean, status.status in ANSWERING, f"RTSP {status.status} {status.reason}".strip()
    )


async def _read_status(reader: asyncio.StreamReader) -> Response | str:
    """The first response, or why there is none."""
    parser = StreamParser(lambda channel, data: None)
    received = 0
    while received < MAX_READ:
        data = await reader.read(4096)
        if not data:
            return "closed without an answer"
        received += len(data)
        parser.feed(data)
        event = parser.next_event()
        if isinstance(event, Response):
            return event
        if isinstance(event, Request | ParseError):
            return "not an RTSP answer"
    return "not an RTSP answer"


async def probe_all(
    urls: Iterable[str], wait: float, concurrency: int = 32
) -> dict[str, ProbeResult]:
    """DESCRIBE every distinct URL, ``concurrency`` at a time, each waiting at most
    ``wait`` seconds; URL -> result."""
    limit = asyncio.Semaphore(concurrency)

    async def one(url: str) -> ProbeResult:
        async with limit:
            return await describe(url, wait)

    distinct = list(dict.fromkeys(urls))
    results = await asyncio.gather(*(one(u) for u in distinct))
    return dict(zip(distinct, results, strict=True))
