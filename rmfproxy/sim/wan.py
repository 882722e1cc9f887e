"""A user-space WAN impairment relay for RTSP: delay, jitter, bandwidth, TCP stalls, UDP loss.

    python -m rmfproxy.sim.wan --listen 127.0.0.1:0 --target 127.0.0.1:8601 \\
        --delay-ms 40 --jitter-ms 20 --stall-every 10 --stall-ms 300 --udp-loss 0.01

Theory of operation. :class:`WanLink` listens on one TCP port and relays every connection
to one upstream RTSP server (a recorder), through a :class:`~rmfproxy.sim.impair.Shaper`
per direction (``impairment`` from the server to the client and, unless ``reverse`` is
given, the same from the client to the server). It stands between the proxy and a
recorder where a kernel ``netem`` is not available.

- TCP: bytes are read as they come, stamped, and written to the other side when the
  shaper says; order is kept. Reading pauses while more than ``QUEUE_LIMIT`` bytes wait,
  so a bandwidth cap pushes back on the sender as a real bottleneck does.
- RTSP over UDP: the relay reads the RTSP messages of both directions, rewrites the
  ports of a UDP SETUP and its reply, and relays the media's datagrams through the
  shapers (:mod:`rmfproxy.sim.wan_udp`). Every other byte goes on as it came.
- Close: a close from either side reaches the other after the bytes sent before it
  (after the one-way delay, or later only if those bytes were held by the bottleneck or
  a stall); a reset after the one-way delay, discarding what was in flight. Then the
  whole connection and its UDP pairs are closed: a recorder killed behind the link
  looks killed to the proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections import deque

import structlog

from rmfproxy.sim.impair import Flow, Impairment, LinkStats, Shaper
from rmfproxy.sim.wan_udp import RtspTap, UdpSessions

log = structlog.get_logger(__name__)

QUEUE_LIMIT = 1 << 20
"""Bytes of one TCP direction waiting for delivery before the relay stops reading."""


class WanLink:
    """One impaired path from clients on ``listen_host`` to the RTSP server ``host:port``."""

    def __init__(
        self,
        host: str,
        port: int,
        impairment: Impairment | None = None,
        *,
        reverse: Impairment | None = None,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        name: str = "wan",
        epoch: float | None = None,
    ) -> None:
        self.target = (host, port)
        self.impairment = impairment or Impairment()
        self.reverse = reverse or self.impairment
        self.name = name
        self._listen = (listen_host, listen_port)
        self._epoch = epoch
        self.stats = LinkStats()
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self.down: Shaper | None = None
        self.up: Shaper | None = None

    @property
    def port(self) -> int:
        """The port clients connect to."""
        if self._server is None:
            raise RuntimeError("WanLink not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def host(self) -> str:
        """The address clients connect to."""
        return self._listen[0]

    async def start(self) -> None:
        """Listen (the shapers' epoch, and so the stall schedule, starts now unless given)."""
        loop = asyncio.get_running_loop()
        epoch = loop.time() if self._epoch is None else self._epoch
        self.down = Shaper(self.impairment, epoch, stream="down")
        self.up = Shaper(self.reverse, epoch, stream="up")
        self.stats.down, self.stats.up = self.down.stats, self.up.stats
        self._server = await asyncio.start_server(self._accept, *self._listen)

    async def aclose(self) -> None:
        """Stop listening and close every connection and UDP pair."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.close(abort=True)
        handlers = list(self._handlers)
        for t in handlers:
            t.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> WanLink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None and self.down is not None and self.up is not None
        self._handlers.add(task)
        self.stats.connections += 1
        conn = _Conn(self, reader, writer)
        self._conns.add(conn)
        try:
            await conn.run()
        except asyncio.CancelledError:
            # aclose() cancelled it. End normally: asyncio's stream server (3.11) asks a
            # finished handler task for its exception, which raises for a cancelled one.
            pass
        finally:
            self._conns.discard(conn)
            self._handlers.discard(task)
            conn.close(abort=True)


class _Pipe:
    """One TCP direction: read, stamp, deliver in order when due; then pass the close on."""

    def __init__(
        self,
        conn: _Conn,
        shaper: Shaper,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        tap: RtspTap,
    ) -> None:
        self.conn = conn
        self.shaper = shaper
        self.reader = reader
        self.writer = writer
        self.tap = tap
        self.flow = Flow()
        self.queue: deque[tuple[float, bytes]] = deque()
        self.queued = 0
        self.closing: tuple[float, bool] | None = None
        """(when, abort) once the source side closed."""
        self._wake = asyncio.Event()
        self._room = asyncio.Event()

    async def read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        abort = False
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    self._push(loop.time(), [self.tap.rest()])
                    break
                self._push(loop.time(), await self.tap.feed(data))
                while self.queued > QUEUE_LIMIT:
                    self._room.clear()
                    await self._room.wait()
        except (ConnectionError, OSError):
            abort = True
        # A close (FIN) comes after the bytes sent before it, as on a real path (a stall
        # holds it too); a reset overtakes them: it arrives after the one-way delay and
        # discards what was still in flight.
        when = loop.time() + self.shaper.impairment.delay
        self.closing = (when if abort else max(when, self.flow.last), abort)
        self._wake.set()

    def _push(self, now: float, chunks: list[bytes]) -> None:
        for chunk in chunks:
            if chunk:
                t = self.shaper.schedule(self.flow, now, len(chunk), datagram=False)
                assert t is not None  # TCP is never dropped
                self.queue.append((t, chunk))
                self.queued += len(chunk)
        self._wake.set()

    async def send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue and self.closing is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            now = loop.time()
            due = self.queue[0][0] if self.queue else float("inf")
            if self.closing is not None:
                due = min(due, self.closing[0])
            if due > now:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), due - now)
                continue
            closing = self.closing is not None and self.closing[0] <= now
            out = []
            while self.queue and (closing or self.queue[0][0] <= now):
                _, chunk = self.queue.popleft()
                out.append(chunk)
            if out:
                data = b"".join(out)
                if closing and self.closing is not None and self.closing[1]:
                    pass  # a reset discards what was still in flight
                else:
                    self.writer.write(data)
                    self.shaper.stats.bytes += len(data)
                    self.queued -= len(data)
                    self._room.set()
                    await self.writer.drain()
            if closing:
                assert self.closing is not None
                self.conn.close(abort=self.closing[1])
                return


class _Conn:
    """One client connection and its upstream connection, with the UDP pairs of its SETUPs."""

    def __init__(
        self, link: WanLink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.link = link
        self.client = (reader, writer)
        self.upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.udp: UdpSessions | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False

    async def run(self) -> None:
        link = self.link
        assert link.down is not None and link.up is not None
        try:
            self.upstream = await asyncio.open_connection(*link.target)
        except OSError:
            # The client learns of it a round trip later, as over a real path.
            await asyncio.sleep(link.impairment.delay + link.reverse.delay)
            return
        self.udp = UdpSessions(
            self.client[1], self.upstream[1], down=link.down, up=link.up, stats=link.stats
        )
        up_tap = RtspTap(self.udp.on_request)
        down_tap = RtspTap(self.udp.on_response)
        up = _Pipe(self, link.up, self.client[0], self.upstream[1], up_tap)
        down = _Pipe(self, link.down, self.upstream[0], self.client[1], down_tap)
        self.tasks = [
            asyncio.create_task(p())
            for p in (up.read_loop, up.send_loop, down.read_loop, down.send_loop)
        ]
        try:
            await asyncio.gather(*self.tasks)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, OSError):
            pass  # a write to a side that went away: the connection is over
        finally:
            self.close(abort=True)
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def close(self, abort: bool) -> None:
        """Close both sides (reset them if ``abort``) and every UDP pair."""
        if self.closed:
            return
        self.closed = True
        for _, w in (self.client, self.upstream or self.client):
            if abort:
                w.transport.abort()
            else:
                w.close()
        if self.udp is not None:
            self.udp.close()
        current = asyncio.current_task()
        for t in self.tasks:
            if t is not current:
                t.cancel()


# --- command line ---------------------------------------------------------------------


def add_impairment_arguments(
    p: argparse.ArgumentParser | argparse._ArgumentGroup, prefix: str = ""
) -> None:
    """The impairment options (``--{prefix}delay-ms`` ...), shared with ``rmfproxy sim``."""
    p.add_argument(f"--{prefix}delay-ms", type=float, default=0.0, help="one-way delay (ms)")
    p.add_argument(f"--{prefix}jitter-ms", type=float, default=0.0, help="± per chunk (ms)")
    p.add_argument(f"--{prefix}mbps", type=float, default=None, help="bandwidth cap (Mbit/s)")
    p.add_argument(
        f"--{prefix}udp-loss", type=float, default=0.0, help="fraction of UDP datagrams dropped"
    )
    p.add_argument(f"--{prefix}stall-every", type=float, default=None, help="TCP stall period (s)")
    p.add_argument(f"--{prefix}stall-ms", type=float, default=0.0, help="TCP stall length (ms)")
    p.add_argument(
        f"--{prefix}stall-phase",
        type=float,
        default=None,
        help="seconds to the first stall (default: from the seed)",
    )
    p.add_argument(f"--{prefix}seed", type=int, default=0)


def impairment_from_args(args: argparse.Namespace, prefix: str = "") -> Impairment | None:
    """The :class:`Impairment` the options describe (None when they describe none)."""
    a = {k: getattr(args, prefix.replace("-", "_") + k) for k in _ARG_NAMES}
    imp = Impairment(
        delay=a["delay_ms"] / 1000,
        jitter=a["jitter_ms"] / 1000,
        bandwidth_bps=None if a["mbps"] is None else a["mbps"] * 1e6,
        udp_loss=a["udp_loss"],
        stall_every=a["stall_every"],
        stall_for=a["stall_ms"] / 1000,
        stall_phase=a["stall_phase"],
        seed=a["seed"],
    )
    return None if imp == Impairment(seed=imp.seed) else imp


_ARG_NAMES = (
    "delay_ms",
    "jitter_ms",
    "mbps",
    "udp_loss",
    "stall_every",
    "stall_ms",
    "stall_phase",
    "seed",
)


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


async def _main(args: argparse.Namespace) -> None:
    import signal

    try:
        imp = impairment_from_args(args) or Impairment()
    except ValueError as exc:
        raise SystemExit(f"rmfproxy.sim.wan: {exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host, port = args.target
    link = WanLink(host, port, imp, listen_host=args.listen[0], listen_port=args.listen[1])
    async with link:
        print(f"PORT {link.port}", flush=True)
        await stop.wait()
        print(f"STATS {link.stats}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """``python -m rmfproxy.sim.wan``: one link until SIGINT/SIGTERM; prints ``PORT <n>``."""
    p = argparse.ArgumentParser(prog="python -m rmfproxy.sim.wan", description=__doc__)
    p.add_argument("--listen", type=_hostport, default=("127.0.0.1", 0), help="HOST:PORT")
    p.add_argument("--target", type=_hostport, required=True, help="the RTSP server HOST:PORT")
    add_impairment_arguments(p)
    asyncio.run(_main(p.parse_args(argv)))


if __name__ == "__main__":
    main()
