"""A real Prometheus server (Debian's package) scrapes a running proxy on loopback and
reads a failover back through its HTTP API."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import relay

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_factories=["uvloop"]),
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed"),
]


def free_port() -> int:
    """A port the kernel picks for 127.0.0.1 (Prometheus cannot report one it chose)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def query(http: aiohttp.ClientSession, base: str, promql: str) -> list[dict[str, Any]]:
    async with http.get(f"{base}/api/v1/query", params={"query": promql}) as r:
        body = await r.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def test_prometheus_scrapes_a_failover(tmp_path: Path) -> None:
    async with relay("h264", gop=25) as (sim, proxy):
        assert proxy.api is not None
        target = f"127.0.0.1:{proxy.api.port}"
        (tmp_path / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: rmfproxy\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = await asyncio.create_subprocess_exec(
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=(tmp_path / "prometheus.log").open("wb"),
        )
        try:
            async with aiohttp.ClientSession() as http:
                async with asyncio.timeout(30):
                    while True:
                        try:
                            async with http.get(f"{base}/-/ready") as r:
                                if r.status == 200:
                                    break
                        except aiohttp.ClientError:
                            pass
                        await asyncio.sleep(0.2)
                async with asyncio.timeout(20):
                    while not await query(http, base, 'up{job="rmfproxy"} == 1'):
                        await asyncio.sleep(0.1)

                sim.recorders["r1"].freeze()
                promql = (
                    'rmfproxy_camera_switches_total{camera="lobby",direction="failover",'
                    'reason="rtp-overdue"}'
                )
                async with asyncio.timeout(20):
                    while not (found := await query(http, base, promql)):
                        await asyncio.sleep(0.1)
                assert found[0]["value"][1] == "1"
                active = await query(http, base, "rmfproxy_source_active == 1")
                async with asyncio.timeout(10):
                    while [s["metric"]["source"] for s in active] != ["r2"]:
                        await asyncio.sleep(0.1)
                        active = await query(http, base, "rmfproxy_source_active == 1")
                gap = await query(
                    http, base, 'rmfproxy_camera_switch_gap_seconds_count{camera="lobby"}'
                )
                assert gap and gap[0]["value"][1] == "1"
        finally:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log = (tmp_path / "prometheus.log").read_text()
        assert "level=error" not in log, log[-2000:]
