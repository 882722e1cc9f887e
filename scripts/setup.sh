#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for rmfproxy: the system packages the
# tests and the demo use (FFmpeg, GStreamer with its RTSP server and rtspsrc,
# Prometheus and promtool, headless Chromium for the status page, systemd-analyze
# for the unit file, openssl for the TLS tests' certificates)
# and a virtual environment in .venv with the project and its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  ffmpeg
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-rtsp
  gir1.2-gst-rtsp-server-1.0 python3-gi
  prometheus chromium fonts-dejavu-core systemd openssl
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ] || [ ! -x .venv/bin/pip ]; then
  "$PY" -m venv --clear .venv   # (again, if an interrupted run left it without pip)
fi
# Install (again) only when the project's metadata changed since the last install.
stamp=.venv/.rmfproxy-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null
  log=$(mktemp)
  status=0
  .venv/bin/pip install -q -e '.[test]' >"$log" 2>&1 || status=$?
  # setuptools' notice about editable installs is not news; anything else is shown.
  grep -v -e '^ *$' -e BuildBackendWarning -e '!!' -e '\*\*\*' -e 'Please be careful with' \
    -e 'name as your package' -e 'with strategy, WheelFile' "$log" || true
  rm -f "$log"
  [ "$status" -eq 0 ] || { echo "pip install failed ($status)"; exit "$status"; }
  echo "$want" > "$stamp"
fi
