#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh) and runs the whole test suite:
# lint, type check, then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check rmfproxy tests bench
.venv/bin/ruff format --check rmfproxy tests bench
.venv/bin/mypy
.venv/bin/pytest "$@"
