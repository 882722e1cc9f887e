"""The relay benchmark runs end to end and reports every relay (a smoke run, not a measurement)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
def test_relay_benchmark_quick_run() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "relay.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        check=True,
    )
    report = json.loads(out.stdout)
    relays = report["relays"]
    assert {"rmfproxy", "tcp_pipe"} <= set(relays)
    for r in relays.values():
        assert r["packets_per_second"] > 20
        assert r["frames_matched"] > 50
        assert r["added_latency_ms_p50"] == r["added_latency_ms_p50"]  # not NaN
    assert "rmfproxy_vs_tcp_pipe_cpu" in report["ratios"]
