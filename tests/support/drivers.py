"""Real client drivers against a throw-away MariaDB, captured on lo and replayed.

A test starts one ``driver_server()`` per module, then for each driver: ``run_driver``
resets the server's accounting, records loopback traffic while the driver's workload runs
as a real subprocess (the programs live in ``tests/drivers/``), replays the capture with
``mysqlprobe replay --format json`` and reads the server's own accounting of the same
statements. ``differences`` lists every template whose commands, errors by code, rows
sent or rows affected differ from the server's; a green test asserts the list is empty,
that replay read every byte, and that its document is byte-identical for 1 and 2 workers.

Every workload gets the same arguments: host, port, database, and the size of its large
request (17 MiB: more than one 16 MiB protocol packet). It prints one JSON line
``{"bulk": SQL, "affected": N}`` per bulk execute (performance_schema records none).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probe.normalize import template_key
from tests.support.accounting import (
    ADMIN,
    FAILED_PREPARE,
    LOGIN_COMMANDS,
    UNKNOWN_STMT,
    UNKNOWN_STMT_HANDLER,
    Accounting,
    Tally,
)
from tests.support.mariadb import MariaDB
from tests.support.recorder import LoopbackRecorder

ROOT = Path(__file__).parents[2]
DRIVERS = ROOT / "tests" / "drivers"
DB = "drv"
BIG_REQUEST = 17 << 20
#: The kernel may drop packets of a burst when the machine is busy: the run is then recorded again.
RECORD_ATTEMPTS = 3
#: When set, each capture is also copied there (to attach to a finding).
KEEP_CAPTURES = "MYSQLPROBE_KEEP_CAPTURES"

SCHEMA = [
    f"CREATE DATABASE {DB}",
    f"USE {DB}",
    "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(64), price DECIMAL(10,2), qty BIGINT)",
    "CREATE TABLE typed (id INT AUTO_INCREMENT PRIMARY KEY, ti TINYINT, si SMALLINT, i INT, bi BIGINT,"
    " ub BIGINT UNSIGNED, f FLOAT, d DOUBLE, dec_v DECIMAL(20,6), s VARCHAR(255), bin VARBINARY(255),"
    " bl LONGBLOB, tx LONGTEXT, day DATE, dt DATETIME(6), tm TIME(6), flag BOOLEAN, nul INT)",
    "CREATE TABLE bulk (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(64), n INT)",
    "INSERT INTO items VALUES " + ",".join(f"({i}, 'item{i}', {i * 1.5:.2f}, {i * 7})" for i in range(1, 201)),
    "CREATE PROCEDURE two_results(IN lim INT) BEGIN"
    " SELECT id, name FROM items ORDER BY id LIMIT lim; SELECT COUNT(*) FROM items; END",
]


def make_certificate(directory: str) -> tuple[str, str]:
    """A self-signed certificate and key for the server's TLS, made with openssl."""
    cert, key = os.path.join(directory, "server-cert.pem"), os.path.join(directory, "server-key.pem")
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"]
    subprocess.run(
        [*request, "-keyout", key, "-out", cert],
        check=True,
        capture_output=True,
    )
    return cert, key


def driver_server(*, tls: bool = False) -> MariaDB:
    """A started MariaDB for driver workloads: general log to a table, large packets,
    LOCAL INFILE, optionally TLS; the schema of the workloads created."""
    server = MariaDB(
        extra_args=[
            "--general-log=1",
            "--log-output=TABLE",
            "--max-allowed-packet=64M",
            "--local-infile=1",
            "--performance-schema-events-statements-history-long-size=100000",
        ]
    )
    if tls:
        cert, key = make_certificate(server.dir)
        server.extra_args += [f"--ssl-cert={cert}", f"--ssl-key={key}"]
    server.start()
    conn = server.connect(autocommit=True)
    try:
        with conn.cursor() as cur:
            for sql in SCHEMA:
                cur.execute(sql)
    finally:
        conn.close()
    return server


@dataclass
class DriverRun:
    name: str
    capture: Path
    port: int
    server: dict[str, Tally]
    server_logins: dict[str, int]  # Accounting.logins(): connections, access_denied
    report: dict[str, Any]
    output: str
    one_worker: str  # the replay documents as printed, for --workers 1 and 2
    two_workers: str
    pure_engine: str  # --workers 1 with the pure-Python engine (MYSQLPROBE_NO_EXTENSIONS=1)

    def assert_workers_agree(self) -> None:
        """Replay's document is the same, byte for byte, for one and for two workers, and
        for the pure engine as for the one loaded (compiled when built)."""
        assert without_analysis(self.one_worker) == without_analysis(self.two_workers), self.name
        assert without_analysis(self.pure_engine) == without_analysis(self.one_worker), self.name


def replay_text(path: Path, port: int, *extra: str, env: dict[str, str] | None = None) -> str:
    """``mysqlprobe replay --format json`` of a capture, as printed."""
    result = subprocess.run(
        [sys.executable, "-m", "mysqlprobe.cli", "replay", str(path), "--port", str(port), "--format", "json", *extra],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def replay_json(path: Path, port: int, *extra: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(replay_text(path, port, *extra))
    return doc


def without_analysis(text: str) -> str:
    """A replay document minus the block that describes the run itself (time, memory)."""
    doc = json.loads(text)
    doc.pop("analysis")
    return json.dumps(doc, separators=(",", ":"))


def run_driver(
    server: MariaDB,
    name: str,
    argv: Sequence[str],
    directory: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 180,
) -> DriverRun:
    """Run one driver's workload under capture; the replayed report and the server's accounting."""
    for attempt in range(RECORD_ATTEMPTS):
        accounting = Accounting(server)
        try:
            accounting.reset()
            capture = directory / f"{name}.pcap"
            with LoopbackRecorder(server.port, str(capture)) as recorder:
                result = subprocess.run(
                    [*argv, "127.0.0.1", str(server.port), DB, str(BIG_REQUEST)],
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    cwd=ROOT,
                    env={**os.environ, **(env or {})},
                )
            output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            assert result.returncode == 0, f"{name} workload failed ({result.returncode}):\n{output}"
            if recorder.dropped and attempt + 1 < RECORD_ATTEMPTS:
                continue  # a busy machine, not the probe: record the workload again
            assert recorder.dropped == 0, f"the kernel dropped {recorder.dropped} packets {RECORD_ATTEMPTS} times"
            reference = accounting.statements(bulk_affected(result.stdout))
            logins = accounting.logins()
            break
        finally:
            accounting.close()
    keep = os.environ.get(KEEP_CAPTURES)
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(capture, os.path.join(keep, capture.name))
    one, two = (replay_text(capture, server.port, "--workers", str(n)) for n in (1, 2))
    pure = replay_text(capture, server.port, "--workers", "1", env={"MYSQLPROBE_NO_EXTENSIONS": "1"})
    return DriverRun(name, capture, server.port, reference, logins, json.loads(two), result.stdout, one, two, pure)


def admin_key(command: str) -> str:
    """Our key of a command that carries no SQL (Ping, Long Data, ...)."""
    return template_key(ADMIN.format(command))


def bulk_affected(output: str) -> dict[str, list[int]]:
    """What each bulk execute affected, from the workload's ``{"bulk": SQL, "affected": N}`` lines."""
    counts: dict[str, list[int]] = {}
    for line in output.splitlines():
        if line.startswith("{"):
            fact = json.loads(line)
            counts.setdefault(fact["bulk"], []).append(int(fact["affected"]))
    return counts


def report_tallies(doc: dict[str, Any]) -> dict[str, Tally]:
    """The report's templates by key (entries of several databases added up), logins left out."""
    tallies: dict[str, Tally] = {}
    for entry in doc["templates"]:
        if set(entry["commands"]) <= LOGIN_COMMANDS:
            continue
        tally = tallies.setdefault(entry["key"], Tally(entry["template"]))
        tally.commands.update(Counter(entry["commands"]))
        tally.errors.update(Counter(entry["errors"]))
        tally.rows_sent += entry["rows_sent"]
        tally.rows_affected += entry["rows_affected"]
    pool_failures(tallies)
    return tallies


def pool_failures(tallies: dict[str, Tally]) -> None:
    """Move failed prepares and executes of unknown statement ids to the server's pools.

    The server logs no SQL for a prepare that failed, nor for an execute of a statement id
    it does not know (1243): the reference has them under ``PREPARE <failed>`` and
    ``EXECUTE <unknown prepared statement>``, by error code, whatever their template.
    """
    for key, tally in list(tallies.items()):
        if tally.template.startswith("PREPARE ") and key != template_key(FAILED_PREPARE):
            moves = [(code, n, "Prepare", FAILED_PREPARE) for code, n in tally.errors.items()]
        else:
            n = tally.errors.get(str(UNKNOWN_STMT_HANDLER), 0)
            moves = [(str(UNKNOWN_STMT_HANDLER), n, "Execute", UNKNOWN_STMT)] if n else []
        for code, n, command, pool in moves:
            if pool == tally.template:
                continue
            target = tallies.setdefault(template_key(pool), Tally(pool))
            tally.errors[code] -= n
            tally.commands[command] -= n
            target.errors[code] += n
            target.commands[command] += n
        if moves:
            tally.errors = +tally.errors
            tally.commands = +tally.commands
            if not tally.commands:
                del tallies[key]


def differences(run: DriverRun) -> list[str]:
    """One line per template whose accounting differs from the server's (empty: exact)."""
    ours = report_tallies(run.report)
    lines = []
    for key in sorted(set(ours) | set(run.server)):
        mine, theirs = ours.get(key), run.server.get(key)
        got = mine.as_dict() if mine else None
        want = theirs.as_dict() if theirs else None
        if got != want:
            text = (mine or theirs or Tally()).template[:120]
            lines.append(f"{run.name}: {key} {text!r}: probe {got} != server {want}")
    return lines


def assert_exact(run: DriverRun) -> None:
    """The report equals the server's accounting and read every byte.

    Only the large request may be incomplete: its text is longer than ``max_query_bytes``.
    """
    lines = differences(run)
    assert not lines, "\n".join(lines)
    run.assert_workers_agree()
    logins = run.report["logins"]
    assert sum(entry["count"] for entry in logins) == run.server_logins["connections"], logins
    denied = sum(entry["errors"].get("1045", 0) for entry in logins)
    assert denied == run.server_logins["access_denied"], logins
    totals = run.report["totals"]
    for name in ("gaps", "resyncs", "unparsed_packets", "responses_lost", "encrypted_conns", "unread_exchanges"):
        assert totals[name] == 0, totals
    cut = [t["template"] for t in run.report["templates"] if t["incomplete"]]
    assert all("LENGTH(?" in text for text in cut), cut
    assert sum(t.commands.total() for t in run.server.values()) > 20, "the workload ran almost nothing"
