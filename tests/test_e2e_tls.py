"""RTSPS end to end: clients this project did not write read the proxy's TLS listener, a
proxy pulls another proxy over TLS (the central-site case), and a running ``rmfproxy
run`` renews its certificate on SIGHUP while a client keeps playing.

What each client can verify:
- FFmpeg through PyAV (FFmpeg 8): ``tls_verify=1`` with ``ca_file``, so the test CA is
  really checked (and an unknown CA really refused).
- The ffmpeg 5.1 command line: its RTSP demuxer passes no option to its TLS layer
  ("Option tls_verify not found"), so it reads encrypted but unverified.
- GStreamer 1.22 gst-launch ``rtspsrc``: a CA file cannot be given from gst-launch (the
  ``tls-database`` property is an object); its default validation refuses the test CA
  (checked), so it runs with every validation flag except ``unknown-ca``: expiry and
  host identity (the 127.0.0.1 IP SAN) are still checked.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from prometheus_client import generate_latest

from rmfproxy.app import Proxy
from rmfproxy.config import parse_config
from rmfproxy.sim.probe import ProbeResult, read_rtsp
from rmfproxy.sim.runner import SimCluster, SimSpec
from tests.replay_support import annexb_counters
from tests.support import LoopStalls, relay, wait_ready
from tests.test_e2e_external import run_tool
from tests.tls_support import Pki, cert_fingerprint, make_pki, peer_fingerprint

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_factories=["uvloop"])]
FPS = 25
GOP = 25
BAD_WORDS = re.compile(r"error|corrupt|missed|non monoton|concealing|invalid", re.IGNORECASE)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


def tls_section(pki: Pki) -> dict[str, Any]:
    return {"listen": "127.0.0.1:0", "cert_file": str(pki.cert), "key_file": str(pki.key)}


def verified(pki: Pki, ca: Path | None = None) -> dict[str, str]:
    """FFmpeg options: verify the server against ``ca`` (default: the test CA)."""
    return {"tls_verify": "1", "ca_file": str(ca or pki.ca)}


def assert_clean(r: ProbeResult, seconds: float, name: str) -> None:
    """Every frame decoded once, in order, about real time (at most one GOP of fast
    start on top, and what arrived while FFmpeg was still opening: its read time starts
    after the open, which takes up to a second on a loaded machine)."""
    assert r.error is None, f"{name}: {r.error}"
    assert r.decode_errors == 0, f"{name}: decode errors, warnings: {r.warnings[:5]}"
    assert (seconds - 1.5) * FPS <= r.frames_decoded <= (seconds + 1.0) * FPS + GOP, (
        f"{name}: {r.frames_decoded} frames in {seconds} s"
    )
    assert len(r.counters) == r.frames_decoded and None not in r.counters, name
    assert r.lost() == 0 and r.repeated() == 0 and r.beyond_span() <= 0, (
        f"{name}: lost {r.lost()}, rep {r.repeated()}, beyond span {r.beyond_span()}"
    )


def gst_read(url: str, out: Path, flags: str | None, frames: int) -> list[str]:
    """gst-launch: rtspsrc over TCP, ``frames`` access units decoded and written as Annex B."""
    validation = [] if flags is None else [f"tls-validation-flags={flags}"]
    return [
        "gst-launch-1.0",
        "rtspsrc",
        f"location={url}",
        "protocols=tcp",
        "latency=200",
        *validation,
        "!", "rtph264depay",
        "!", "h264parse",
        "!", "video/x-h264,stream-format=byte-stream,alignment=au",
        "!", "identity", f"eos-after={frames}",
        "!", "tee", "name=t",
        "!", "queue", "!", "avdec_h264", "!", "fakesink", "sync=false",
        "t.", "!", "queue", "!", "filesink", f"location={out}", "sync=false",
    ]  # fmt: skip


async def test_ffmpeg_gstreamer_and_pyav_read_the_tls_listener(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for tool in ("ffmpeg", "gst-launch-1.0"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup.sh installs it)")
    monkeypatch.setenv("RMF_TEST_VIEWER_PASSWORD", "tls-viewer-pw")
    # Digest authentication inside TLS, as on the plain listener
    users = [{"name": "viewer", "password_env": "RMF_TEST_VIEWER_PASSWORD"}]
    async with relay("h264", rtsp={"tls": tls_section(pki), "users": users}) as (_sim, proxy):
        port = proxy.server.tls_port
        url = f"rtsps://viewer:tls-viewer-pw@127.0.0.1:{port}/lobby"
        assert proxy.tls_url("lobby") == f"rtsps://127.0.0.1:{port}/lobby"
        # Verification is real: an unknown CA, or GStreamer's default trust, refuses.
        wrong = await asyncio.to_thread(
            read_rtsp, url, seconds=1, options=verified(pki, pki.other_ca)
        )
        assert wrong.error is not None and wrong.frames_decoded == 0
        rc, out = await run_tool(*gst_read(url, tmp_path / "refused.h264", None, 10))
        assert rc != 0 and "Failed to connect" in out, out[-1500:]
        seconds = 3.0
        annexb = tmp_path / "gst.h264"
        ffmpeg = [
            "ffmpeg", "-hide_banner", "-nostats", "-loglevel", "info",
            "-rtsp_transport", "tcp", "-i", url, "-t", str(int(seconds)), "-f", "null", "-",
        ]  # fmt: skip
        all_but_ca = "bad-identity+not-activated+expired+revoked+insecure+generic-error"

        async def sessions_by_listener() -> dict[str, float]:
            await asyncio.sleep(seconds / 2)  # all three play by now
            text = generate_latest(proxy.metrics.registry).decode()
            found = re.findall(r'^rmfproxy_rtsp_sessions\{listener="(\w+)"\} (\S+)$', text, re.M)
            return {listener: float(value) for listener, value in found}

        with structlog.testing.capture_logs() as logs:
            (ff_rc, ff_out), (gst_rc, gst_out), probe, metric = await asyncio.gather(
                run_tool(*ffmpeg),
                run_tool(*gst_read(url, annexb, all_but_ca, int(seconds * FPS))),
                asyncio.to_thread(read_rtsp, url, seconds=seconds, options=verified(pki)),
                sessions_by_listener(),
            )
    assert metric == {"rtsp": 0, "rtsps": 3}, metric
    assert ff_rc == 0, ff_out[-2000:]
    assert not [ln for ln in ff_out.splitlines() if BAD_WORDS.search(ln)], ff_out[-2000:]
    found = re.findall(r"frame=\s*(\d+)", ff_out)
    ff_frames = int(found[-1]) if found else 0
    assert (seconds - 0.5) * FPS <= ff_frames <= seconds * FPS + GOP, f"ffmpeg: {ff_frames}"
    assert gst_rc == 0 and "ERROR" not in gst_out and "WARNING" not in gst_out, gst_out[-2000:]
    counters = annexb_counters(annexb)
    # eos-after passes exactly that many buffers; the last AU may end unwritten at EOS
    assert seconds * FPS - 3 <= len(counters) <= seconds * FPS, f"gst: {len(counters)} frames"
    assert all(b == a + 1 for a, b in itertools.pairwise(counters)), counters
    assert_clean(probe, seconds, "pyav")
    sessions = [e for e in logs if e["event"] == "rtsp.session_created"]
    assert len(sessions) == 3 and {e["listener"] for e in sessions} == {"rtsps"}
    assert {e["user"] for e in sessions} == {"viewer"}
    assert "tls-viewer-pw" not in repr(logs)


async def test_proxy_pulls_a_proxy_over_tls(pki: Pki) -> None:
    """Site proxy A serves RTSPS; central proxy B pulls it: with the right CA it plays,
    with an unknown CA or the wrong host name it refuses (log line, lost reason, no
    media), with tls_verify: false it plays and says so."""
    async with relay("h264", rtsp={"tls": tls_section(pki)}) as (_sim, site):
        port = site.server.tls_port
        upstream = f"rtsps://127.0.0.1:{port}/lobby"
        cameras = {
            "good": {"url": upstream, "tls_ca_file": str(pki.ca)},
            "unknown": {"url": upstream, "tls_ca_file": str(pki.other_ca)},
            "wronghost": {"url": f"rtsps://localhost:{port}/lobby", "tls_ca_file": str(pki.ca)},
            "noverify": {"url": upstream, "tls_verify": False},
        }
        cfg = parse_config(
            {
                "rtsp": {"listen": "127.0.0.1:0"},
                "api": {"enabled": False},
                "cameras": {c: {"sources": [{**s, "name": "site"}]} for c, s in cameras.items()},
            }
        )
        central = Proxy(cfg)
        with structlog.testing.capture_logs() as logs:
            await central.start()
            try:
                await wait_ready(central, ("good", "noverify"))
                good, noverify = await asyncio.gather(
                    asyncio.to_thread(read_rtsp, central.url("good"), seconds=2.5),
                    asyncio.to_thread(read_rtsp, central.url("noverify"), seconds=2.5),
                )
                for cam in ("unknown", "wronghost"):
                    feed = central.feeds[cam]
                    async with asyncio.timeout(5):
                        while not feed.slots[0].lost_reasons:
                            await asyncio.sleep(0.05)
                    assert set(feed.slots[0].lost_reasons) == {"tls-verify-failed"}, cam
                    assert feed.active is None and feed.sdp() is None, cam  # nothing came
            finally:
                await central.stop()
    assert_clean(good, 2.5, "good")
    assert_clean(noverify, 2.5, "noverify")
    lines = {e["source"]: e for e in logs if e["event"] == "upstream.tls_refused"}
    assert lines["unknown/site"]["log_level"] == "error"
    assert lines["unknown/site"]["url"] == upstream
    assert lines["unknown/site"]["reason"] == (
        "certificate verify failed: unable to get local issuer certificate"
    )
    assert "localhost" in lines["wronghost/site"]["reason"]  # hostname mismatch
    assert set(lines) == {"unknown/site", "wronghost/site"}
    warned = [e for e in logs if e["event"] == "upstream.tls_unverified"]
    assert [e["source"] for e in warned] == ["noverify/site"]
    assert warned[0]["log_level"] == "warning"


async def handshake(port: int, ca: Path) -> str:
    """The fingerprint of the certificate a new TLS connection to ``port`` is shown."""
    import ssl

    _, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ssl.create_default_context(cafile=ca)), 5
    )
    try:
        return peer_fingerprint(writer)
    finally:
        writer.close()


async def test_sighup_renews_the_certificate_while_a_session_plays(
    pki: Pki, tmp_path: Path
) -> None:
    """``rmfproxy run``: certificate and key replaced in place + SIGHUP (configuration
    unchanged) -> new handshakes get the new certificate, the playing client does not
    notice; a broken pair + SIGHUP -> an error line, the renewed certificate stays."""
    spec = SimSpec(recorders=[("r1", 0)], cameras=["lobby"], gop=GOP, fps=FPS)
    async with SimCluster(spec) as sim:
        config = tmp_path / "rmfproxy.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "rtsp": {"listen": None, "tls": tls_section(pki)},
                    "api": {"enabled": False},
                    "log": {"format": "json"},
                    "cameras": {"lobby": {"sources": [{"url": sim.url("r1", "lobby")}]}},
                }
            )
        )
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rmfproxy", "run", "--config", str(config),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        assert proc.stderr is not None
        events: list[dict[str, Any]] = []

        async def wait_for(event: str, limit: float = 10.0) -> dict[str, Any]:
            assert proc.stderr is not None
            async with asyncio.timeout(limit):
                while True:
                    line = await proc.stderr.readline()
                    assert line, f"rmfproxy exited; log: {events[-5:]}"
                    try:
                        events.append(json.loads(line))
                    except ValueError:
                        continue
                    if events[-1]["event"] == event:
                        return events[-1]

        try:
            port = int((await wait_for("rtsp.listening"))["tls_port"])
            await wait_for("feed.switched")  # the camera plays
            url = f"rtsps://127.0.0.1:{port}/lobby"
            seconds = 3.0
            async with LoopStalls() as stalls:
                reading = asyncio.create_task(
                    asyncio.to_thread(read_rtsp, url, seconds=seconds, options=verified(pki))
                )
                await asyncio.sleep(1.0)
                first = cert_fingerprint(pki.cert)
                assert await handshake(port, pki.ca) == first
                renewed_cert, renewed_key = pki.issue("renewed")
                renewed_cert.replace(pki.cert)
                renewed_key.replace(pki.key)
                renewed = cert_fingerprint(pki.cert)
                assert renewed != first
                proc.send_signal(signal.SIGHUP)
                reloaded = await wait_for("tls.reloaded")
                assert reloaded["fingerprint"] == renewed and reloaded["changed"]
                assert await handshake(port, pki.ca) == renewed
                _, stray_key = pki.issue("stray")
                stray_key.replace(pki.key)
                proc.send_signal(signal.SIGHUP)
                failed = await wait_for("tls.reload_failed")
                assert failed["level"] == "error" and failed["field"] == "rtsp.tls.key_file"
                assert await handshake(port, pki.ca) == renewed
                # the configuration now names other files: applied without a restart
                moved_cert, moved_key = pki.issue("moved")
                document = yaml.safe_load(config.read_text())
                document["rtsp"]["tls"].update(cert_file=str(moved_cert), key_file=str(moved_key))
                config.write_text(yaml.safe_dump(document))
                proc.send_signal(signal.SIGHUP)
                await wait_for("config.applied")
                reloaded = [e for e in events if e["event"] == "tls.reloaded"][-1]
                assert reloaded["fingerprint"] == cert_fingerprint(moved_cert)
                assert await handshake(port, pki.ca) == cert_fingerprint(moved_cert)
                probe = await reading
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 10)
    assert_clean(probe, seconds, "client across the reloads")
    # no picture gap beyond a frame or two, except what a stalled test loop explains
    assert probe.max_gap_seconds() < 0.5 + stalls.longest, probe.max_gap_seconds()
    reloads = [e["event"] for e in events if e["event"].startswith("config.")]
    # twice the file did not change (only the certificate was re-read), then it did
    assert reloads == ["config.reload_unchanged"] * 2 + ["config.applied"], reloads
