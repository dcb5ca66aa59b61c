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
command -v cc >/dev/null 2>&1 || missing+=(build-essential)  # builds probe/_cdecode.c
[ -e "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] || missing+=(python3-dev)
command -v serf >/dev/null 2>&1 || missing+=(serf)  # gossip membership (cluster/serf.py)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)  # promtool checks /metrics
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)  # examples/nats: JetStream ingest
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)  # examples/nats: merged state
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)  # verifies examples/systemd units
[ -x /usr/bin/chromium ] || missing+=(chromium)  # the dashboard's browser tests
# client drivers of tests/mysqlprobe/test_drivers_*.py (a missing one fails its test)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v mariadb_config >/dev/null 2>&1 || missing+=(libmariadb-dev)  # builds PyPI mariadb
command -v php >/dev/null 2>&1 || missing+=(php-cli)
[ -n "$(find /etc/php -name '*mysqli.ini' 2>/dev/null | head -1)" ] || missing+=(php-mysql)
perl -MDBD::MariaDB -e 1 >/dev/null 2>&1 || missing+=(libdbd-mariadb-perl)
[ -e /usr/share/java/mariadb-java-client.jar ] || missing+=(libmariadb-java)
command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

# PostgreSQL for the shared history store's tests: a server on 127.0.0.1:5432 with trust
# auth for local TCP and a database named test (tests create and drop their own databases).
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        $SUDO apt-get update -q
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q postgresql
    fi
    pg_version=$(ls /etc/postgresql | sort -n | tail -1)
    hba=/etc/postgresql/$pg_version/main/pg_hba.conf
    $SUDO grep -q '^host all all 127.0.0.1/32 trust' "$hba" || $SUDO sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    $SUDO pg_ctlcluster "$pg_version" main start 2>/dev/null || $SUDO pg_ctlcluster "$pg_version" main reload
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" postgres | grep -q 1 ||
    psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" postgres

# The compiled decoder must build here (a C compiler is installed) and be the one the suite loads.
export MYSQLPROBE_REQUIRE_EXTENSIONS=1
python3 -m pip install -q --disable-pip-version-check -e ".[test]"
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)  # playwright-core drives chromium
(cd tests/drivers/node && npm ci --no-audit --no-fund --loglevel=error)  # mysql2, mariadb for the driver tests

python3 -m ruff check .
python3 -m ruff format --check .
python3 -m mypy
python3 -m pytest -q --durations=25 "$@"  # the slowest tests: CI must stay under 30 minutes
