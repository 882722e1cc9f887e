"""The soak benchmark runs end to end and reports its fields (a smoke run, not a measurement)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
def test_soak_benchmark_short_run(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            "--cameras",
            "2",
            "--duration",
            "9",
            "--failover-every",
            "4",
            "--decoded",
            "1",
            "--sample-every",
            "1.5",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        check=True,
    )
    report = json.loads(out.read_text())
    for key in (
        "samples",
        "rss_kb_at_warmup",
        "rss_kb_last",
        "rss_growth_pct",
        "rss_median_growth_pct",
        "fds_min_after_warmup",
        "fds_max_after_warmup",
        "proxy_cpu_percent",
        "failovers",
        "client_disconnects",
        "decode_errors",
        "decoded_frames_lost",
        "decoded_frames_repeated",
    ):
        assert key in report, key
    assert report["complete"] is True
    assert len(report["samples"]) >= 5
    assert {"t", "rss_kb", "fds"} <= set(report["samples"][0])
    assert report["rss_kb_last"] > 0
    assert report["faults_injected"] >= 1
    assert report["failovers"] >= 1
    assert report["client_disconnects_total"] == 0, report["clients"]
    assert set(report["client_disconnects"]) == {"cam001", "cam002"}
    kinds = {c["kind"] for c in report["clients"]}
    assert kinds == {"light", "decoded"}
    assert all(c["frames_decoded"] > 100 for c in report["clients"] if c["kind"] == "decoded")
    assert all(c["frames"] > 100 for c in report["clients"] if c["kind"] == "light")
    assert report["decode_errors"] == 0
    # A picture sent twice is a defect the decoder may not report: counters advance, and
    # no decoded client saw more pictures than the camera made in its span.
    assert report["decoded_frames_repeated"] == 0 and report["light_frames_repeated_total"] == 0
    decoded = [c for c in report["clients"] if c["kind"] == "decoded"]
    assert all(c["beyond_span"] <= 0 for c in decoded), decoded
