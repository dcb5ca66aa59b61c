#!/usr/bin/env bash
# The mariadb command-line client: the driver workload. Plain mode first makes two logins
# the server refuses; then workload.sql (text queries, SQL PREPARE/EXECUTE, a
# multi-statement, CALL, errors), a LOAD DATA LOCAL INFILE of 40 rows and one request
# larger than a 16 MiB protocol packet, in one session.
# Usage: mariadb_cli.sh plain|compress|tls HOST PORT DATABASE BIG_BYTES
set -euo pipefail
mode=$1 host=$2 port=$3 database=$4 big=$5
case "$mode" in
    plain) options=(--skip-ssl) ;;
    compress) options=(--skip-ssl --compress) ;;
    tls) options=(--ssl "--ssl-ca=${MYSQLPROBE_TLS_CA:?the server certificate}") ;;  # a CA makes TLS required
    *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
if [ "$mode" = plain ]; then  # logins the server refuses (1045): a wrong password, an unknown user
    for user in "root --password=wrong" "nobody"; do
        # shellcheck disable=SC2086
        if mariadb --no-defaults "${options[@]}" -h "$host" -P "$port" -u $user -e "SELECT 1" >/dev/null 2>&1; then
            echo "login as $user was not refused" >&2
            exit 1
        fi
    done
fi
infile=$(mktemp)
trap 'rm -f "$infile"' EXIT
for i in $(seq 1 40); do printf 'loaded%s\t%s\n' "$i" "$i"; done >"$infile"
out=$({
    cat "$(dirname "$0")/workload.sql"
    printf "LOAD DATA LOCAL INFILE '%s' INTO TABLE bulk (name, n);\n" "$infile"
    printf "SELECT LENGTH('"
    head -c "$big" /dev/zero | tr '\0' x
    printf "') AS n;\n"
} | mariadb --no-defaults "${options[@]}" --local-infile=1 --force --batch --skip-column-names --max-allowed-packet=64M \
    -h "$host" -P "$port" -u root "$database" 2>/dev/null || true)
# --force goes on after the workload's deliberate errors and then exits 1: check instead
# that the session ran to its last statement.
[ "$(printf '%s\n' "$out" | tail -1)" = "$big" ] || { echo "the large request did not run" >&2; exit 1; }
