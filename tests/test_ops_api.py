"""The admin listener against a running proxy and simulator: health, readiness, metrics,
the camera API, the authenticated switch endpoint, thumbnails and the OpenAPI document."""

from __future__ import annotations

import asyncio
import io
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
import structlog
import yaml
from prometheus_client.parser import text_string_to_metric_families

from rmfproxy.app import Proxy
from rmfproxy.config import parse_config
from rmfproxy.rtp import h264, h265, nal
from rmfproxy.sim.camera import StreamStyle
from tests.support import relay
from tests.tls_support import make_pki

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_factories=["uvloop"])]

TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as r:
        return r.status, await r.json()


Samples = dict[tuple[str, tuple[Any, ...]], float]


async def scrape(http: aiohttp.ClientSession, proxy: Proxy) -> Samples:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    async with http.get(proxy.api_url("/metrics")) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def wait_for(predicate: Any, limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_health_metrics_and_camera_state_follow_a_failover(
    http: aiohttp.ClientSession,
) -> None:
    async with relay("h264", gop=25) as (sim, proxy):
        status, body = await get_json(http, proxy.api_url("/healthz"))
        assert (status, body) == (200, {"status": "ok"})
        status, body = await get_json(http, proxy.api_url("/readyz"))
        assert status == 200 and body["ready"] is True

        before = await scrape(http, proxy)
        assert sample(before, "rmfproxy_source_active", camera="lobby", source="r1") == 1
        assert sample(before, "rmfproxy_source_healthy", camera="lobby", source="r2") == 1
        assert sample(before, "rmfproxy_camera_healthy_sources", camera="lobby") == 2
        received = "rmfproxy_source_rtp_packets_received_total"
        assert sample(before, received, camera="lobby", source="r2") > 0

        await asyncio.sleep(1.0)  # the heartbeat learns the frame interval
        sim.recorders["r1"].freeze()
        feed = proxy.feeds["lobby"]
        await wait_for(lambda: feed.source_name(feed.active) == "r2")
        after = await scrape(http, proxy)
        assert sample(after, "rmfproxy_source_active", camera="lobby", source="r2") == 1
        assert sample(after, "rmfproxy_source_healthy", camera="lobby", source="r1") == 0
        assert (
            sample(
                after,
                "rmfproxy_camera_switches_total",
                camera="lobby",
                direction="failover",
                reason="rtp-overdue",
            )
            == 1
        )
        assert sample(after, "rmfproxy_camera_switch_gap_seconds_count", camera="lobby") == 1
        assert sample(after, "rmfproxy_camera_switch_detection_seconds_count", camera="lobby") == 1
        detection = sample(after, "rmfproxy_camera_switch_detection_seconds_sum", camera="lobby")
        assert 0.1 < detection < 0.6  # the freeze budget at 25 fps, plus a health tick

        status, cam = await get_json(http, proxy.api_url("/api/v1/cameras/lobby"))
        assert status == 200
        assert cam["active"] == "r2" and cam["healthy"] is True
        assert [s["healthy"] for s in cam["sources"]] == [False, True]
        last = cam["switches"][0]
        assert (last["direction"], last["reason"], last["from"], last["to"]) == (
            "failover",
            "rtp-overdue",
            "r1",
            "r2",
        )
        status, listing = await get_json(http, proxy.api_url("/api/v1/cameras"))
        assert status == 200 and [c["id"] for c in listing["cameras"]] == ["lobby"]
        status, err = await get_json(http, proxy.api_url("/api/v1/cameras/nope"))
        assert status == 404 and "nope" in err["error"]


async def test_readyz_waits_for_a_healthy_source_within_the_grace(
    http: aiohttp.ClientSession,
) -> None:
    async with relay("h264", api={"ready_grace": 600}) as (sim, proxy):
        sim.recorders["r1"].freeze()
        sim.recorders["r2"].freeze()
        feed = proxy.feeds["lobby"]
        await wait_for(lambda: not any(s.healthy(feed.clock()) for s in feed.slots))
        status, body = await get_json(http, proxy.api_url("/readyz"))
        assert status == 503
        assert body == {
            "ready": False,
            "cameras_without_healthy_source": ["lobby"],
            "cameras_not_delivering": [],
        }
        samples = await scrape(http, proxy)
        assert sample(samples, "rmfproxy_camera_healthy_sources", camera="lobby") == 0
        sim.recorders["r2"].freeze(False)
        await wait_for(lambda: any(s.healthy(feed.clock()) for s in feed.slots))
        await wait_for(lambda: feed.delivering(feed.clock()))
        status, body = await get_json(http, proxy.api_url("/readyz"))
        assert status == 200
        samples = await scrape(http, proxy)
        outage = "rmfproxy_camera_no_healthy_source_seconds_total"
        assert sample(samples, outage, camera="lobby") > 0


async def test_switch_endpoint_is_disabled_without_a_token(http: aiohttp.ClientSession) -> None:
    async with relay("h264") as (_sim, proxy):
        url = proxy.api_url("/api/v1/cameras/lobby/switch")
        async with http.post(url, json={"source": "r2"}) as r:
            assert r.status == 403
            assert "disabled" in (await r.json())["error"]
        assert proxy.feeds["lobby"].policy.manual is None


async def test_switch_endpoint_needs_the_token_and_switches(
    http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RMF_TEST_API_TOKEN", TOKEN)
    async with relay("h264", gop=25, api={"token_env": "RMF_TEST_API_TOKEN"}) as (_sim, proxy):
        url = proxy.api_url("/api/v1/cameras/lobby/switch")
        feed = proxy.feeds["lobby"]
        with structlog.testing.capture_logs() as logs:
            async with http.post(url, json={"source": "r2"}) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"] == "Bearer"
            bad = {"Authorization": "Bearer wrong-token-wrong-token"}
            async with http.post(url, json={"source": "r2"}, headers=bad) as r:
                assert r.status == 401
        assert feed.policy.manual is None
        assert TOKEN not in repr(logs) and "wrong-token" not in repr(logs)

        auth = {"Authorization": f"Bearer {TOKEN}"}
        for body, problem in [
            (b"{not json", "JSON"),
            (b"[]", "object"),
            (b'{"source": 3}', "name or null"),
            (b'{"source": "r9"}', "no source 'r9'"),
        ]:
            async with http.post(url, data=body, headers=auth) as r:
                assert r.status == 400, body
                assert problem in (await r.json())["error"]
        async with http.post(
            proxy.api_url("/api/v1/cameras/nope/switch"), json={"source": "r2"}, headers=auth
        ) as r:
            assert r.status == 404

        async with http.post(url, json={"source": "r2"}, headers=auth) as r:
            assert r.status == 202
            state = await r.json()
            assert state["mode"] == "manual" and state["manual_source"] == "r2"
        await wait_for(lambda: feed.source_name(feed.active) == "r2")
        rec = feed.switches[-1]
        assert (rec.reason, rec.cause, rec.to_source) == ("manual", "operator", "r2")
        samples = await scrape(http, proxy)
        assert sample(samples, "rmfproxy_camera_manual_override", camera="lobby") == 1
        assert (
            sample(
                samples,
                "rmfproxy_camera_switches_total",
                camera="lobby",
                direction="manual",
                reason="operator",
            )
            == 1
        )

        async with http.post(url, json={"source": None}, headers=auth) as r:
            assert r.status == 202
            assert (await r.json())["mode"] == "auto"
        assert feed.policy.manual is None


async def test_thumbnails_decode_and_unknown_sources_are_404(http: aiohttp.ClientSession) -> None:
    async with relay("h265", gop=25, size=(640, 360)) as (_sim, proxy):
        feed = proxy.feeds["lobby"]
        await wait_for(lambda: all(s.gop.valid for s in feed.slots))
        for name in ("r1", "r2"):
            url = proxy.api_url(f"/api/v1/cameras/lobby/sources/{name}/thumbnail.jpg")
            async with http.get(url) as r:
                assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg"
                jpeg = await r.read()
            with av.open(io.BytesIO(jpeg)) as c:
                frame = next(c.decode(video=0))
            assert frame.width == 320 and frame.height == 180
        # Cached: a second request within the interval does not decode again.
        renders = proxy.api.thumbnails.renders if proxy.api else -1
        async with http.get(url) as r:
            assert r.status == 200
        assert proxy.api is not None and proxy.api.thumbnails.renders == renders
        async with http.get(proxy.api_url("/api/v1/cameras/lobby/sources/r9/thumbnail.jpg")) as r:
            assert r.status == 404


@pytest.mark.parametrize("codec", ["h264", "h265"])
async def test_thumbnails_of_recorders_that_place_parameter_sets_their_own_way(
    http: aiohttp.ClientSession, codec: str
) -> None:
    # r1 sends its parameter sets only in the SDP, r2 every 3 s in front of any frame (so a
    # delta frame carries them too, without marker bits): each source's GOP still starts
    # at a random-access slice and its thumbnail decodes.
    styles = {"r1": StreamStyle(param_interval=0), "r2": StreamStyle(param_interval=3, aud=True)}
    async with relay(codec, gop=25, styles=styles) as (_sim, proxy):  # type: ignore[arg-type]
        feed = proxy.feeds["lobby"]
        assert feed.merger is not None
        fmt = feed.merger.fmt
        await wait_for(lambda: all(s.gop.valid for s in feed.slots))
        await asyncio.sleep(3.5)  # r2's parameter sets came in front of a delta frame by now
        for slot in feed.slots:
            first = slot.gop.packets[0][1]
            payload = memoryview(first)[12:]
            types = nal.starting_types(fmt, payload)
            d = (h264 if codec == "h264" else h265).depacketizer()
            nals = [n for _, p in slot.gop.packets[:40] for n in d.push(memoryview(p)[12:])]
            slices = [fmt.nal_type(n) for n in nals if fmt.nal_type(n) in fmt.vcl_types]
            assert slices[0] in fmt.irap_types, (slot.name, types, slices[:3])
            url = proxy.api_url(f"/api/v1/cameras/lobby/sources/{slot.name}/thumbnail.jpg")
            async with http.get(url) as r:
                assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg", slot.name


async def test_standby_keeps_its_current_gop_from_a_keyframe(http: aiohttp.ClientSession) -> None:
    async with relay("h264", gop=25) as (_sim, proxy):
        feed = proxy.feeds["lobby"]
        standby = feed.slots[1]
        await wait_for(lambda: standby.gop.valid)
        await asyncio.sleep(0.5)
        assert feed.active == 0 and standby.gop.valid
        age = standby.gop.age(feed.clock())
        assert age is not None and age <= 25 / 25 + 0.2  # never older than one GOP
        first_track, first = standby.gop.packets[0]
        assert first_track == feed.video_track
        payload = memoryview(first)[12:]
        assert h264.carries_parameter_sets(payload)  # the GOP starts with SPS/PPS, then the IDR


async def test_openapi_documents_every_route() -> None:
    cfg = parse_config({"cameras": {"a": {"sources": [{"url": "rtsp://127.0.0.1:1/a"}]}}})
    proxy = Proxy(cfg)
    assert proxy.api is not None
    routes = {
        r.resource.canonical
        for r in proxy.api.app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    doc = yaml.safe_load(proxy.api.static_file_bytes("openapi.yaml"))
    documented = set(doc["paths"])
    assert routes - {"/status.js", "/status.css"} == documented


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
async def test_metrics_pass_promtool_lint(http: aiohttp.ClientSession) -> None:
    async with relay("h264") as (sim, proxy):
        sim.recorders["r1"].freeze()
        feed = proxy.feeds["lobby"]
        await wait_for(lambda: feed.source_name(feed.active) == "r2")
        async with http.get(proxy.api_url("/metrics")) as r:
            text = await r.read()
    proc = await asyncio.to_thread(
        subprocess.run,
        ["promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        timeout=30,
    )
    out = (proc.stdout + proc.stderr).decode()
    assert proc.returncode == 0 and out.strip() == "", out
    names = set(re.findall(rb"^(rmfproxy_[a-z_]+)", text, re.M))
    assert len(names) > 20


async def test_every_exported_metric_is_documented(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # With the coverage journal and an RTSPS listener configured, so that their metrics
    # are exported too.
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    tls = {"listen": "127.0.0.1:0", "cert_file": str(pki.cert), "key_file": str(pki.key)}
    archive = {"journal": str(tmp_path / "coverage.sqlite")}
    async with relay("h264", archive=archive, rtsp={"tls": tls}) as (_sim, proxy):
        samples = await scrape(http, proxy)
    families = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for name, _ in samples
        if name.startswith("rmfproxy_")
    }
    doc = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"`(rmfproxy_[a-z_]+)`", doc))
    assert families - documented == set(), "undocumented metrics"
    assert {d for d in documented if d.startswith("rmfproxy_")} - families == set(), "stale docs"
