"""The export and playback benchmarks run end to end (smoke runs, not measurements)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def quick_run(bench: str) -> Any:
    """``bench/<bench> --quick``: its JSON report."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / bench), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=True,
    )
    return json.loads(out.stdout)


@pytest.mark.e2e
def test_export_benchmark_quick_run() -> None:
    report = quick_run("export.py")
    assert report["verified"] == {"every_frame_once_in_order": True, "decode_errors": 0}
    assert report["frames"] == 250 and report["seams"] == 2 and report["gaps"] == 0
    assert report["mp4_mb_per_second"] > 0


@pytest.mark.e2e
def test_playback_benchmark_quick_run() -> None:
    report = quick_run("playback.py")
    full = report["full"]
    assert full["every_frame_once_in_order"] and full["frames"] == 500
    assert full["d_flags"] == 2 and full["ended_by"] == "terminal"
    assert 0 < report["first_frame_at_start_seconds"]["median"] < 10
