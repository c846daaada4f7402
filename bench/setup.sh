#!/usr/bin/env bash
# Install the benchmark's tools: nginx and wrk from Debian (run as root or with sudo), and the
# LiteLLM proxy (system `litellm`) in its own virtual environment, bench/.venv-litellm.
# SKIP_LITELLM=1 skips the latter.
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends nginx wrk
# Debian's nginx package may start the system service; the harness runs its own nginx.
$SUDO service nginx stop >/dev/null 2>&1 || true
echo "nginx: $(command -v nginx)  wrk: $(command -v wrk)"

if [ "${SKIP_LITELLM:-0}" = "1" ]; then exit 0; fi
# LiteLLM never goes into the project's environment: its own venv, pinned set, no resolver
# surprises (litellm's certifi pin is newer than the registry has, hence --no-deps).
VENV="$BENCH/.venv-litellm"
PYTHON="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --no-deps \
    litellm==1.109.1 litellm-proxy-extras==0.4.110 litellm-enterprise==0.1.82
# pip then says litellm needs boto3 and a newer certifi: expected, neither is used here.
"$VENV/bin/pip" install --quiet -r "$BENCH/litellm-requirements.txt"
echo "litellm: $VENV/bin/litellm ($("$VENV/bin/python" -c \
    'import importlib.metadata as m; print(m.version("litellm"))'))"
