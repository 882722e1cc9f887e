"""The export benchmark runs end to end (a smoke run, not a measurement)."""

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
