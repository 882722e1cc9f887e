"""The hardening reaches a running proxy: its ``rtsp`` limits come from the config, and a
client can never make it send media into its own upstream UDP ports."""

from __future__ import annotations

import asyncio

import pytest

from rmfproxy.app import Proxy
from rmfproxy.config import parse_config
from rmfproxy.sim.runner import SimCluster, SimSpec
from tests.support import relay, rtsp_exchange, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_factories=["uvloop"])]


async def test_the_upstream_udp_ports_of_a_source_are_never_a_client_port() -> None:
    async with SimCluster(SimSpec(recorders=[("r1", 0)], cameras=["lobby"])) as sim:
        cfg = parse_config(
            {
                "rtsp": {"listen": "127.0.0.1:0"},
                "api": {"enabled": False},
                "cameras": {
                    "lobby": {"sources": [{"url": sim.url("r1", "lobby"), "transport": "udp"}]}
                },
            }
        )
        proxy = Proxy(cfg)
        await proxy.start()
        try:
            await wait_ready(proxy, ("lobby",))
            source = proxy.feeds["lobby"].slots[0].source
            assert source is not None and len(source.udp_ports) == 2
            rtp_port = source.udp_ports[0]
            assert proxy.local_ports.is_own_port(rtp_port)
            req = (
                f"SETUP {proxy.url('lobby')}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\n"
                f"Transport: RTP/AVP;unicast;client_port={rtp_port}-{rtp_port + 1}\r\n\r\n"
            ).encode()
            status, _, _ = await rtsp_exchange(proxy.server.port, req)
            assert status == 461
        finally:
            await proxy.stop()
    assert not proxy.local_ports.is_own_port(rtp_port)  # released with the session


async def test_connection_limits_come_from_the_config() -> None:
    async with relay("h264", rtsp={"max_connections_per_ip": 2}) as (_sim, proxy):
        held = [await asyncio.open_connection("127.0.0.1", proxy.server.port) for _ in range(2)]
        try:
            req = f"OPTIONS {proxy.url('lobby')} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode()
            status, headers, _ = await rtsp_exchange(proxy.server.port, req)
            assert status == 503 and headers.get("retry-after")
        finally:
            for _, w in held:
                w.close()
