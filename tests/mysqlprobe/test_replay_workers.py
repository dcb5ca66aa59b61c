"""``mysqlprobe replay`` gives the same document for any number of workers, byte for byte
(the ``analysis`` block, which describes the run itself, aside), and its template bound
never hides a hot template: on captures built with scapy and on the sample capture."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from message.report import OVERFLOW_KEY
from mysqlprobe.replay import ReplayOptions, document, replay
from probe.engine import EngineConfig
from probe.mysql import constants as c
from tests.support import mysqlwire as w

ROOT = Path(__file__).parents[2]
SCHEMA = json.loads((ROOT / "message" / "schema" / "report.schema.json").read_text())
SLEEP = "SELECT SLEEP(?)"


def write_capture(path: Path, scripts: list[w.Script], **frames_options: Any) -> Path:
    """Several connections (client ports 40001...), their frames interleaved by time."""
    frames: list[tuple[int, bytes]] = []
    for i, script in enumerate(scripts):
        frames += w.to_frames(script, client=("10.0.0.7", 40001 + i), **frames_options)
    frames.sort(key=lambda item: item[0])
    w.write_pcap(str(path), frames)
    return path


def many_templates(connections: int = 4, per_connection: int = 25) -> list[w.Script]:
    """Light templates everywhere; the one that carries the time comes last."""
    scripts = []
    for conn in range(connections):
        script = w.Script().login(conn_id=conn + 1)
        for i in range(per_connection):
            script.client(w.query(f"SELECT c{conn}_{i} FROM t WHERE id = {i}"))
            script.server(w.result_set(["v"], [[b"1"]]), after_us=10)
        scripts.append(script)
    scripts[-1].client(w.query("SELECT SLEEP(5)")).server(w.result_set(["s"], [[b"0"]]), after_us=50_000)
    return scripts


def drivers_mix() -> list[w.Script]:
    """Statement id -1, a failed prepare, bulk execute, a long query, pipelining, errors."""
    long_sql = "INSERT INTO big VALUES " + ",".join(f"({i},'{'x' * 30}')" for i in range(6000))
    value = (c.TYPE_VAR_STRING, w.lenenc_str(b"abc"))
    prepared = (
        w.Script()
        .login()
        .client(w.prepare("INSERT INTO t (v) VALUES (?)") + w.execute(0xFFFFFFFF, [value]))
        .server(w.prepare_ok(1, columns=0, params=1) + w.framed([w.ok(affected=1)], 1))
        .client(w.prepare("SELECT * FROM missing WHERE v = ?") + w.execute(0xFFFFFFFF, [value]))
        .server(w.framed([w.err(1146, "42S02", "no such table")], 1) + w.framed([w.err(1243, "HY000", "unknown")], 1))
        .client(
            w.prepare("INSERT INTO t (v, n) VALUES (?, ?)")
            + w.bulk_execute(
                0xFFFFFFFF,
                [c.TYPE_VAR_STRING, c.TYPE_LONG],
                [[w.lenenc_str(b"r%d" % i), struct.pack("<i", i)] for i in range(100)],
            )
        )
        .server(w.prepare_ok(2, columns=0, params=2) + w.framed([w.ok(affected=100)], 1))
    )
    bulk = (
        w.Script()
        .login()
        .client(w.query(long_sql))
        .server(w.framed([w.ok(affected=6000)], 1), after_us=3000)
        .client(w.query("SELECT 1") + w.query("SELECT 2") + w.query("SELECT * FROM nope"))
        .server(w.result_set(["1"], [[b"1"]]) + w.result_set(["2"], [[b"2"]]))
        .server(w.framed([w.err(1146, "42S02", "no such table")], 1))
    )
    return [prepared, bulk, *many_templates(connections=2, per_connection=5)]


def logins() -> list[w.Script]:
    """Wrong passwords, a full server, a blocked host, good logins and a killed session."""

    def attempt(user: str, reply: bytes) -> w.Script:
        return (
            w.Script()
            .server(w.framed([w.greeting()]))
            .client(w.framed([w.handshake_response(user)], 1))
            .server(w.framed([reply], 2))
        )

    denied = w.err(1045, "28000", "Access denied")
    scripts = [attempt("app", denied) for _ in range(3)] + [attempt("report", denied)]
    scripts.append(w.Script().server(w.framed([w.err(1040, "08004", "Too many connections")])))
    scripts.append(w.Script().server(w.framed([w.err(1129, "HY000", "Host is blocked")])))
    scripts += [attempt("app", w.ok()) for _ in range(2)]
    scripts[-1].client(w.query("SELECT 1")).server(w.result_set(["1"], [[b"1"]]))
    scripts[-1].server(w.framed([w.err(1927, "70100", "Connection was killed")], 0))
    return scripts


def cli_json(path: Path, workers: int) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mysqlprobe.cli", "replay", str(path), "--format", "json", "--workers", str(workers)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def without_analysis(text: str) -> str:
    """The document as the CLI printed it, minus the block that describes the run."""
    doc = json.loads(text)
    doc.pop("analysis")
    return json.dumps(doc, separators=(",", ":"))


def captures(tmp_path: Path) -> dict[str, Path]:
    return {
        "many_templates": write_capture(tmp_path / "many.pcap", many_templates()),
        "drivers_mix": write_capture(tmp_path / "mix.pcap", drivers_mix(), mss=1400),
        "logins": write_capture(tmp_path / "logins.pcap", logins()),
        "sample": ROOT / "examples" / "sample.pcap.gz",
    }


@pytest.mark.parametrize("name", ["many_templates", "drivers_mix", "logins", "sample"])
def test_json_is_identical_for_one_and_two_workers(tmp_path: Path, name: str) -> None:
    path = captures(tmp_path)[name]
    one, two = cli_json(path, 1), cli_json(path, 2)
    assert without_analysis(one) == without_analysis(two)
    doc = json.loads(one)
    Draft202012Validator(SCHEMA).validate(doc)
    assert doc["totals"]["queries"] > 0 and json.loads(two)["analysis"]["workers"] == 2


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_template_bound_keeps_the_heaviest_and_counts_the_fold(tmp_path: Path, workers: int) -> None:
    path = write_capture(tmp_path / "many.pcap", many_templates())
    engine = EngineConfig(max_templates=50)  # what a worker would have used alone
    result = replay(ReplayOptions(str(path), engine, workers, max_templates=50))
    doc = document(result)
    texts = [t["template"] for t in doc["templates"]]
    assert texts[0] == SLEEP  # the late, hot template is listed first, not folded
    assert len([t for t in doc["templates"] if t["key"] != OVERFLOW_KEY]) == 50
    overflow = [t for t in doc["templates"] if t["key"] == OVERFLOW_KEY]
    statements = sum(t["count"] for t in doc["templates"])
    assert doc["folded"]["templates"] == 100 + 1 + 1 - 50  # 100 light SELECTs, SLEEP, Connect
    assert doc["folded"]["statements"] == sum(t["count"] for t in overflow)
    assert statements == doc["totals"]["commands"]  # nothing lost in the fold
    Draft202012Validator(SCHEMA).validate(doc)


def test_table_shows_the_fold(tmp_path: Path) -> None:
    from mysqlprobe.render import profile

    path = write_capture(tmp_path / "many.pcap", many_templates())
    doc = document(replay(ReplayOptions(str(path), EngineConfig(), 2, max_templates=20)))
    table = profile(doc, top=5, width=160)
    assert "82 lighter templates folded into one entry per database" in table
    assert SLEEP in table.split("\n", 8)[-1]


@pytest.mark.parametrize("workers", [1, 2])
def test_logins_are_entries_of_their_own(tmp_path: Path, workers: int) -> None:
    path = write_capture(tmp_path / "logins.pcap", logins())
    doc = document(replay(ReplayOptions(str(path), EngineConfig(), workers)))
    Draft202012Validator(SCHEMA).validate(doc)
    entries = {(e["user"], e["client"]): e for e in doc["logins"]}
    assert set(entries) == {("app", "10.0.0.7"), ("report", "10.0.0.7"), ("", "10.0.0.7")}
    app, report, anonymous = entries[("app", "10.0.0.7")], entries[("report", "10.0.0.7")], entries[("", "10.0.0.7")]
    assert (app["count"], app["errors"], app["session_errors"]) == (5, {"1045": 3}, {"1927": 1})
    assert (report["count"], report["errors"]) == (1, {"1045": 1})
    assert (anonymous["count"], anonymous["errors"]) == (2, {"1040": 1, "1129": 1})
    assert doc["logins"][0]["user"] == "app"  # most refused first
    from mysqlprobe.render import profile

    header = profile(doc, top=5, width=120).split("\n\n", 1)[0]
    assert "# logins: 8 attempts, 6 refused (1045 x4, 1040 x1, 1129 x1); 1 server errors in sessions" in header
