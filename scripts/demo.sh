#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh) and runs the demo: simulated cameras
# on simulated recorders, the proxy in front of them, and the URL to watch.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/rmfproxy demo "$@"
