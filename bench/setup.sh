#!/usr/bin/env bash
# Install the benchmark's system tools (nginx, wrk) from Debian. Run as root (or with sudo).
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends nginx wrk
# Debian's nginx package may start the system service; the harness runs its own nginx.
$SUDO service nginx stop >/dev/null 2>&1 || true
echo "nginx: $(command -v nginx)  wrk: $(command -v wrk)"
