#!/usr/bin/env bash
# Installs Debian's Chromium, the browser tests/test_report.py opens the run
# report in (headless). Needs root and apt-get; does nothing when a chromium
# is already on PATH. The test calls this itself when it can, with a timeout.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install_chromium.sh: needs root and apt-get (Debian/Ubuntu)" >&2
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium
