"""Live reconfiguration: cameras added, changed and removed through the admin API and on
SIGHUP while FFmpeg (PyAV) reads another camera, which must not notice (no reconnect,
no decode error, no frame lost or repeated); revisions as ETags with If-Match; the
file written atomically with secrets as references; a broken config keeps the running
one."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from rmfproxy.app import Proxy
from rmfproxy.config import load_config, parse_config
from rmfproxy.sim.probe import read_rtsp
from rmfproxy.sim.runner import SimCluster, SimSpec
from tests.support import LoopStalls, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_factories=["uvloop"])]

TOKEN = "reconfig-token-0123456789"
FPS = 25
GOP = 10
"""The simulated cameras' GOP (0.4 s): a camera the API adds is served from its first
keyframe, so the test waits about one GOP for it."""


def camera(sim: SimCluster, cam: str, **extra: Any) -> dict[str, Any]:
    return {
        "sources": [
            {"url": sim.url("r1", cam), "name": "r1"},
            {
                "url": sim.url("r2", cam),
                "name": "r2",
                "username": "svc",
                "password_env": "RMF_T_PW",
            },
        ],
        **extra,
    }


def document(sim: SimCluster, cameras: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "rtsp": {"listen": "127.0.0.1:0"},
        "api": {"listen": "127.0.0.1:0", "token_env": "RMF_T_TOKEN"},
        "cameras": cameras,
    }


async def metrics_text(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as r:
        assert r.status == 200
        return await r.text()


async def test_cameras_change_through_the_api_and_other_clients_never_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RMF_T_TOKEN", TOKEN)
    monkeypatch.setenv("RMF_T_PW", "recorder-secret-42")
    spec = SimSpec(cameras=["lobby", "gate", "yard"], size=(160, 96), fps=FPS, gop=GOP)
    async with SimCluster(spec) as sim, aiohttp.ClientSession() as http:
        doc = document(sim, {"lobby": camera(sim, "lobby"), "gate": camera(sim, "gate")})
        path = tmp_path / "rmfproxy.yaml"
        path.write_text(yaml.safe_dump(doc))
        proxy = Proxy(parse_config(doc), document=doc, path=path)
        stalls = LoopStalls()
        await proxy.start()
        await stalls.__aenter__()
        try:
            await wait_ready(proxy, ("lobby", "gate"))
            # the reader reads through every change, until the checks below are done
            stop, t_read = threading.Event(), time.monotonic()
            reader = asyncio.create_task(
                asyncio.to_thread(read_rtsp, proxy.url("lobby"), seconds=30.0, stop=stop)
            )
            auth = {"Authorization": f"Bearer {TOKEN}"}
            api = proxy.api_url
            async with http.get(api("/api/v1/config"), headers=auth) as r:
                assert r.status == 200 and r.headers["ETag"] == '"1"'
                got = await r.json()
                assert got["cameras"]["gate"]["sources"][1]["password_env"] == "RMF_T_PW"
            async with http.get(api("/api/v1/config")) as r:
                assert r.status == 401  # the document needs the token too
            yard = camera(sim, "yard")
            async with http.put(api("/api/v1/cameras/yard"), json=yard, headers=auth) as r:
                assert r.status == 428
            stale = {**auth, "If-Match": '"0"'}
            async with http.put(api("/api/v1/cameras/yard"), json=yard, headers=stale) as r:
                assert r.status == 412 and r.headers["ETag"] == '"1"'
            ok = {**auth, "If-Match": '"1"'}
            async with http.put(api("/api/v1/cameras/yard"), json=yard, headers=ok) as r:
                assert r.status == 201, await r.text()
                assert (await r.json())["added"] == ["yard"] and r.headers["ETag"] == '"2"'
            await wait_ready(proxy, ("yard",))
            new = await asyncio.to_thread(read_rtsp, proxy.url("yard"), seconds=1.5)
            assert new.error is None and new.frames_decoded > 20 and new.decode_errors == 0
            assert new.repeated() == 0 and new.lost() == 0 and new.beyond_span() <= 0

            # a change to one camera rebuilds it alone
            gate = camera(sim, "gate", stall_timeout=0.3)
            ok = {**auth, "If-Match": '"2"'}
            async with http.put(api("/api/v1/cameras/gate"), json=gate, headers=ok) as r:
                assert r.status == 200 and (await r.json())["changed"] == ["gate"]
            # invalid: every problem named, nothing applied
            bad = {"sources": [{"url": "http://nope", "bogus": 1}]}
            ok = {**auth, "If-Match": '"3"'}
            async with http.put(api("/api/v1/cameras/gate"), json=bad, headers=ok) as r:
                assert r.status == 400
                fields = {p["field"] for p in (await r.json())["problems"]}
                assert {"cameras.gate.sources.0.url", "cameras.gate.sources.0.bogus"} <= fields
            # a listener cannot move while running: 409, named
            moved = {
                **doc,
                "rtsp": {"listen": "127.0.0.1:1"},
                "cameras": proxy.keeper.document["cameras"],
            }
            async with http.put(api("/api/v1/config"), json=moved, headers=ok) as r:
                assert r.status == 409
                assert [p["field"] for p in (await r.json())["problems"]] == ["rtsp.listen"]
            before = await metrics_text(http, api("/metrics"))
            assert 'rmfproxy_camera_switches_total{camera="gate"' in before
            assert 'rmfproxy_camera_switch_gap_seconds_count{camera="gate"}' in before
            async with http.delete(api("/api/v1/cameras/gate"), headers=ok) as r:
                assert r.status == 200 and (await r.json())["removed"] == ["gate"]
            # every series of a removed camera goes with it (a dashboard would show it
            # forever at its last values); the others stay
            after = await metrics_text(http, api("/metrics"))
            assert 'camera="gate"' not in after
            assert 'rmfproxy_camera_switches_total{camera="lobby"' in after
            async with http.delete(api("/api/v1/cameras/gate"), headers=auth) as r:
                assert r.status == 404
            assert set(proxy.feeds) == {"lobby", "yard"}
            gone = await asyncio.to_thread(
                read_rtsp, proxy.url("gate"), seconds=1.0, open_timeout=2.0
            )
            assert gone.error is not None and gone.frames_decoded == 0
            async with http.get(api("/api/v1/config/revisions"), headers=auth) as r:
                changes = (await r.json())["changes"]
                assert [c["revision"] for c in changes] == [1, 2, 3, 4]
            stop.set()
            read_s = time.monotonic() - t_read
            result = await reader
        finally:
            await stalls.__aexit__()
            await proxy.stop()
    # the reader of lobby saw nothing of it all
    assert result.error is None and result.decode_errors == 0
    assert result.repeated() == 0 and result.lost() == 0 and result.beyond_span() <= 0
    # (plus what the event loop was kept from running by a loaded machine, if anything)
    assert result.max_gap_seconds() < 0.5 + stalls.longest, (result.max_gap_seconds(), stalls)
    assert result.frames_decoded > (read_s - 2.0) * FPS, (result.frames_decoded, read_s)
    # the file says what runs: revision 4, yard and lobby, secrets as references only
    text = path.read_text()
    assert "recorder-secret-42" not in text and TOKEN not in text
    written = load_config(path)
    assert written.revision == 4 and set(written.cameras) == {"lobby", "yard"}
    left = await asyncio.to_thread(lambda: list(tmp_path.glob(".rmfproxy.yaml.*")))
    assert not left  # no temporary file left


async def test_sighup_applies_the_file_and_a_broken_one_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RMF_T_PW", "recorder-secret-42")
    spec = SimSpec(cameras=["lobby", "gate"], size=(160, 96))
    async with SimCluster(spec) as sim, aiohttp.ClientSession() as http:
        api_port = _free_port()
        doc = document(sim, {"lobby": camera(sim, "lobby")})
        doc["api"] = {"listen": f"127.0.0.1:{api_port}"}
        path = tmp_path / "rmfproxy.yaml"
        text = "# the operator's comment\n" + yaml.safe_dump(doc)
        path.write_text(text)
        env = {**os.environ, "RMF_T_PW": "recorder-secret-42"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rmfproxy",
            "run",
            "--config",
            str(path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            base = f"http://127.0.0.1:{api_port}"
            await _until(
                http,
                f"{base}/api/v1/cameras",
                lambda c: {x["id"] for x in c["cameras"]} == {"lobby"},
            )
            # a broken file: logged with its field, the running config serves on
            broken = {**doc, "cameras": {"lobby": {"sources": [{"url": "ftp://x"}]}}}
            path.write_text(yaml.safe_dump(broken))
            proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(1.0)
            async with http.get(f"{base}/api/v1/cameras") as r:
                assert {c["id"] for c in (await r.json())["cameras"]} == {"lobby"}
            # a good one: gate appears, lobby untouched
            good = {**doc, "cameras": {"lobby": camera(sim, "lobby"), "gate": camera(sim, "gate")}}
            path.write_text(text.replace(yaml.safe_dump(doc), yaml.safe_dump(good)))
            proc.send_signal(signal.SIGHUP)
            await _until(
                http,
                f"{base}/api/v1/cameras",
                lambda c: {x["id"] for x in c["cameras"]} == {"lobby", "gate"},
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                out, _ = await proc.communicate()
    log = out.decode(errors="replace")
    assert proc.returncode == 0, log[-2000:]
    assert "config.reload_failed" in log and "cameras.lobby.sources.0.url" in log
    assert "config.applied" in log
    after = path.read_text()
    assert after.startswith("# the operator's comment\n")  # the operator's file, kept
    assert load_config(path).revision == 2  # 1 at start, 2 after the good SIGHUP
    assert "recorder-secret-42" not in log


async def _until(http: aiohttp.ClientSession, url: str, cond: Any, limit: float = 15.0) -> None:
    async with asyncio.timeout(limit):
        while True:
            try:
                async with http.get(url) as r:
                    if r.status == 200 and cond(await r.json()):
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_planning_fields_and_recorders_change_nothing_that_runs() -> None:
    # bitrate_mbps / id / pending and the recorders section are for `rmfproxy plan`:
    # changing them must neither rebuild a camera (its clients would be cut) nor be
    # refused as needing a restart.
    cams = {"lobby": {"sources": [{"url": "rtsp://127.0.0.1:1/a", "name": "r1"}]}}
    proxy = Proxy(parse_config({"cameras": cams}))
    feed = proxy.feeds["lobby"]
    planned = {
        "cameras": {"lobby": {**cams["lobby"], "bitrate_mbps": 8, "id": "cam-17"}},
        "recorders": {"r1": {"site": "a", "capacity": {"cameras": 4}}},
    }
    change = await proxy.apply(parse_config(planned))
    assert (change.added, change.removed, change.changed) == ([], [], [])
    assert proxy.feeds["lobby"] is feed
