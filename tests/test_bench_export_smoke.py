"""The export and playback benchmarks run end to end (smoke runs, not measurements)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
def test_export_benchmark_quick_run() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "export.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["verified"] == {"every_frame_once_in_order": True, "decode_errors": 0}
    assert report["frames"] == 250 and report["seams"] == 2 and report["gaps"] == 0
    assert report["mp4_mb_per_second"] > 0


@pytest.mark.e2e
def test_playback_benchmark_quick_run() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "playback.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=True,
    )
    report = json.loads(out.stdout)
    full = report["full"]
    assert full["every_frame_once_in_order"] and full["frames"] == 500
    assert full["d_flags"] == 2 and full["ended_by"] == "terminal"
    assert 0 < report["first_frame_at_start_seconds"]["median"] < 10
