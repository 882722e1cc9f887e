"""The installed entry point answers as a newcomer first runs it."""

import subprocess
import sys

import rmfproxy


def test_version_is_what_the_cli_reports() -> None:
    assert rmfproxy.__version__.count(".") == 2
    proc = subprocess.run(
        [sys.executable, "-m", "rmfproxy", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == rmfproxy.__version__


def test_help_lists_the_commands() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rmfproxy", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("run", "check", "sim", "demo", "plan"):
        assert command in proc.stdout
