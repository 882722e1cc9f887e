"""Structured logs: JSON lines in production, every switch logged once with its detection
time and gap, and no credential in any line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import structlog

from tests.support import relay

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_factories=["uvloop"])]

RECORDER_PASSWORD = "rec-pw-3f9c1a-never-logged"
API_TOKEN = "api-token-77d2e0-never-logged"


async def test_a_failover_is_logged_once_with_detection_and_gap() -> None:
    async with relay("h264", gop=25) as (sim, proxy):
        await asyncio.sleep(1.0)
        feed = proxy.feeds["lobby"]
        with structlog.testing.capture_logs() as logs:
            sim.recorders["r1"].freeze()
            async with asyncio.timeout(5):
                while feed.source_name(feed.active) != "r2":
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
    switched = [e for e in logs if e["event"] == "feed.switched"]
    assert len(switched) == 1, switched
    e = switched[0]
    assert (e["camera"], e["from_source"], e["source"]) == ("lobby", "r1", "r2")
    assert (e["reason"], e["cause"]) == ("failover", "rtp-overdue")
    assert 100 < e["detection_ms"] < 600 and 0 <= e["gap_ms"] < 600
    assert e["log_level"] == "info"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_production_logs_are_json_lines_without_secrets(tmp_path: Path) -> None:
    # A recorder that refuses connections, a user and a token: the proxy logs its start,
    # the failing source and a rejected API call; every line is a JSON object and none
    # carries the password or the token (nor the wrong token a caller sent).
    api_port = free_port()
    cfg = tmp_path / "rmfproxy.yaml"
    cfg.write_text(
        f"""
rtsp: {{listen: "127.0.0.1:0"}}
api: {{listen: "127.0.0.1:{api_port}", token_env: RMF_TEST_TOKEN}}
log: {{format: json, level: debug}}
cameras:
  lobby:
    sources:
      - url: "rtsp://127.0.0.1:{free_port()}/lobby"
        username: viewer
        password_env: RMF_TEST_RECORDER_PW
"""
    )
    env = {**os.environ, "RMF_TEST_RECORDER_PW": RECORDER_PASSWORD, "RMF_TEST_TOKEN": API_TOKEN}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rmfproxy",
        "run",
        "--config",
        str(cfg),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{api_port}/api/v1/cameras/lobby/switch"

        def rejected_call() -> int:
            req = urllib.request.Request(
                url,
                data=b'{"source": null}',
                headers={"Authorization": "Bearer wrong-token-5d1c-never-logged"},
                method="POST",
            )
            try:
                urllib.request.urlopen(req, timeout=5)
            except urllib.error.HTTPError as exc:
                return exc.code
            except OSError:
                return 0
            return 200

        async with asyncio.timeout(15):
            while (status := await asyncio.to_thread(rejected_call)) == 0:
                await asyncio.sleep(0.2)
        assert status == 401
        await asyncio.sleep(1.5)  # a few reconnect attempts
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()[-2000:]
    lines = [line for line in err.decode().splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"event", "level", "timestamp"} <= e.keys() for e in events)
    names = {e["event"] for e in events}
    assert {"proxy.started", "upstream.lost", "api.unauthorized", "proxy.stopped"} <= names
    everything = err.decode() + out.decode()
    for secret in (RECORDER_PASSWORD, API_TOKEN, "wrong-token-5d1c"):
        assert secret not in everything
