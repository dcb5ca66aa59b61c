#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run it:
# system packages (mariadb-server for throw-away servers, libpcap, chromium and npm for the
# dashboard tests), the project with its test extras, npm's playwright-core, then ruff, mypy
# and pytest. Safe to re-run: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
command -v mariadb-install-db >/dev/null 2>&1 || missing+=(mariadb-server)
[ -e /usr/include/pcap.h ] || missing+=(libpcap-dev)
command -v serf >/dev/null 2>&1 || missing+=(serf)  # gossip membership (cluster/serf.py)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)  # promtool checks /metrics
[ -x /usr/bin/chromium ] || missing+=(chromium)  # the dashboard's browser tests
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

python3 -m pip install -q --disable-pip-version-check -e ".[test]"
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)  # playwright-core drives chromium

python3 -m ruff check .
python3 -m ruff format --check .
python3 -m mypy
python3 -m pytest -q "$@"
