"""With ``redact`` on, no literal reaches any output: a real slave (watcher on, every
statement a slow sample) next to a real MariaDB runs a workload full of secrets (string
literals, quoted values in error messages, fake optimizer hints, account hosts, prepared
statements with literals and parameters); then every report, /status, the trace store,
/metrics, every file of the state directory (spooled reports decoded), the node's log and
the output of ``replay --redact`` on a capture of the same traffic are searched for them.
A control run of ``replay`` without ``--redact`` finds them, so the search can find."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mysql.connector
import pymysql
import pytest

from message import decode
from tests.support import workload
from tests.support.mariadb import MariaDB
from tests.support.nodes import ROOT, Collector, Node
from tests.support.recorder import LoopbackRecorder

pytestmark = [pytest.mark.mariadb, pytest.mark.live]
if os.geteuid() != 0:  # pragma: no cover
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))

SECRETS = {
    "literal": "SecretLiteral4711",
    "duplicate": "SecretDuplicate0815",
    "syntax": "SecretSyntax1234",
    "hint": "SecretHint5678",
    "host": "secret-host-9876",
    "password": "SecretPassword2468",
    "prepared": "SecretPrepared1357",
    "param": "SecretParam8642",
    "integer": "SecretInteger9753",
    "column": "SecretComment3141",
}


@pytest.fixture()
def server() -> Iterator[MariaDB]:
    db = MariaDB()
    db.start()
    workload.prepare_schema(db)
    db.query(f"CREATE TABLE {workload.DB}.vault (k VARCHAR(64) PRIMARY KEY)")
    try:
        yield db
    finally:
        db.destroy()


def secret_workload(server: MariaDB) -> mysql.connector.MySQLConnection:
    """Run every secret-bearing statement; returns a connection with a statement prepared
    (kept open, so checkpoints hold it)."""
    s = SECRETS
    conn = pymysql.connect(host="127.0.0.1", port=server.port, user="root", database=workload.DB, autocommit=True)
    with conn.cursor() as cur:
        statements = [
            f"SELECT id FROM items WHERE name = '{s['literal']}'",
            f"INSERT INTO vault VALUES ('{s['duplicate']}')",
            f"INSERT INTO vault VALUES ('{s['duplicate']}')",  # Duplicate entry '...' for key
            f"SELECT id FROM items WHERE id = 1 '{s['syntax']}' AND",  # ... near '...' at line 1
            f"SELECT /*+ {s['hint']} */ id FROM items WHERE id = 2",
            f"SELECT /*+ MAX_EXECUTION_TIME(1000) INDEX(items '{s['hint']}') */ id FROM items WHERE id = 3",
            f"SELECT id /* {s['column']} */ FROM items WHERE id = 4",
            f"CREATE USER 'probeuser'@'{s['host']}' IDENTIFIED BY '{s['password']}'",
            f"CREATE USER 'probeuser'@'{s['host']}' IDENTIFIED BY '{s['password']}'",  # exists: error quotes it
            f"DROP USER probeuser@'{s['host']}'",
            f"INSERT INTO items (id, name) VALUES ('{s['integer']}', 'x')",  # Incorrect integer value
        ]
        for sql in statements:
            try:
                cur.execute(sql)
                cur.fetchall()
            except pymysql.MySQLError:
                pass
    conn.close()
    prepared = mysql.connector.connect(
        host="127.0.0.1", port=server.port, user="root", database=workload.DB, use_pure=True
    )
    cursor = prepared.cursor(prepared=True)
    for i in range(3):
        cursor.execute(
            f"SELECT qty FROM items WHERE name <> '{s['prepared']}' AND name <> %s AND id = %s", (s["param"], i)
        )
        cursor.fetchall()
    return prepared  # the cursor stays open: its statement stays prepared


def leaks(text: str) -> list[str]:
    low = text.lower()
    return sorted(name for name, secret in SECRETS.items() if secret.lower() in low)


def everything_in(directory: Path) -> str:
    """Every file under ``directory`` as text; spooled reports decoded first."""
    parts = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        if path.suffix == ".report":
            raw = json.dumps(decode(raw[32:])).encode()
        parts.append(f"== {path}\n" + raw.decode("utf-8", "replace"))
    return "\n".join(parts)


def test_no_literal_reaches_any_output_with_redact_on(server: MariaDB, tmp_path: Path) -> None:
    node = Node(
        tmp_path,
        {
            "interval": 1,
            "redact": True,
            "slowthresholdms": 0,
            "probe": {"device": "lo", "port": server.port, "workers": 1, "maxslow": 1000},
            "watcher": {"uname": "root", "refreshs": 1},
        },
        "redacted",
    ).start()
    pcap = tmp_path / "secrets.pcap"
    collector = Collector(f"ws://127.0.0.1:{node.port}/collector")
    try:
        time.sleep(1.5)
        with LoopbackRecorder(server.port, str(pcap)):
            held = secret_workload(server)
            time.sleep(3.5)  # reports and at least two checkpoints with the prepared statement
        outputs: dict[str, str] = {}
        collector.wait_for(lambda c: sum(r["totals"]["queries"] for r in c.reports) >= 15)
        outputs["reports"] = json.dumps(collector.reports)
        outputs["status"] = json.dumps(node.get("/status"))
        outputs["traces"] = json.dumps(node.get("/events/scan?limit=1000"))
        with urllib.request.urlopen(node.url + "/metrics", timeout=10) as resp:
            outputs["metrics"] = resp.read().decode()
        outputs["state"] = everything_in(node.state)
        held.close()
    finally:
        collector.close()
        node.stop()
    outputs["log"] = node.log.read_text()

    replay = [sys.executable, "-m", "mysqlprobe.cli", "replay", str(pcap), "--port", str(server.port)]
    for fmt in ("json", "table"):
        result = subprocess.run(
            [*replay, "--redact", "--slow-ms", "0", "--format", fmt, "--details", "50"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        outputs[f"replay {fmt}"] = result.stdout + result.stderr

    for where, text in outputs.items():
        assert leaks(text) == [], f"{where} leaks {leaks(text)}"

    # The statements were seen, their errors too, and redacted rather than dropped.
    slow = [s for r in collector.reports for s in r["slow"]]
    messages = [s["error"]["message"] for s in slow if s.get("error")]
    assert any(m.startswith("Duplicate entry '?' for key") for m in messages), messages
    assert any("near '?' at line 1" in m for m in messages), messages
    assert any("Incorrect integer value: '?'" in m for m in messages), messages
    templates = {t["template"] for r in collector.reports for t in r["templates"] if t.get("template")}
    assert "CREATE USER ? @? IDENTIFIED BY ?" in templates
    assert "SELECT /*+ MAX_EXECUTION_TIME(?) INDEX(items ?) */ id FROM items WHERE id = ?" in templates
    assert "SELECT id FROM items WHERE id = ?" in templates  # the fake hint went like a comment
    executes = [t for t in templates if t.startswith("SELECT qty FROM items WHERE name <> ?")]
    assert executes, templates
    assert all(s.get("params") in (None, []) for s in slow)
    # The checkpoint taken while the statement was prepared holds its template, not its SQL.
    assert "SELECT qty FROM items WHERE name <> ? AND name <> ? AND id = ?" in outputs["state"]

    # Control: without --redact the same capture shows the secrets, so the search works.
    plain = subprocess.run(
        [*replay, "--slow-ms", "0", "--format", "json"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert {"literal", "duplicate", "syntax", "prepared", "param"} <= set(leaks(plain.stdout))
