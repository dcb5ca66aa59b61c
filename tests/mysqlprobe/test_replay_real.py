"""``mysqlprobe replay`` on real traffic: a throw-away MariaDB, a varied workload captured
on lo, and the server's own accounting (performance_schema) as the reference."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.support import workload
from tests.support.mariadb import MariaDB
from tests.support.native import need_compiled
from tests.support.recorder import LoopbackRecorder

pytestmark = [pytest.mark.mariadb, pytest.mark.live]
SCHEMA = json.loads((Path(__file__).parents[2] / "message" / "schema" / "report.schema.json").read_text())


class Recorded:
    def __init__(self, path: Path, port: int, expected: dict[str, list[int]], commands: dict[str, int]) -> None:
        self.path = path
        self.port = port
        self.expected = expected
        self.commands = commands


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    directory = tmp_path_factory.mktemp("replay")
    server = MariaDB()
    server.start()
    try:
        workload.prepare_schema(server)
        accounting = workload.Accounting(server)
        accounting.reset()
        path = directory / "workload.pcap"
        with LoopbackRecorder(server.port, str(path)) as recorder:
            workload.text_workload(server, rounds=40)
            workload.prepared_workload(server, rounds=25)
            workload.prepared_workload(server, rounds=10, compress=True)
        assert recorder.dropped == 0
        yield Recorded(path, server.port, accounting.expectations(), accounting.commands())
        accounting.close()
    finally:
        server.destroy()


def replay(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mysqlprobe.cli", "replay", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def replay_json(path: Path, port: int, *extra: str) -> dict[str, Any]:
    result = replay(str(path), "--port", str(port), "--format", "json", *extra)
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_counts_equal_performance_schema(recorded: Recorded) -> None:
    doc = replay_json(recorded.path, recorded.port)
    Draft202012Validator(SCHEMA).validate(doc)
    ours = {t["key"]: t for t in doc["templates"]}
    assert recorded.expected, "the server accounted no statements"
    mismatches = []
    for key, (count, errors) in recorded.expected.items():
        entry = ours.get(key)
        got = (entry["commands"].get("Query", 0), sum(entry["errors"].values())) if entry else None
        if got != (count, errors):
            mismatches.append((key, (count, errors), got, entry["template"] if entry else None))
    assert not mismatches
    # Every Query the probe saw is a statement the server accounted for.
    assert sum(t["commands"].get("Query", 0) for t in doc["templates"]) == sum(c for c, _ in recorded.expected.values())
    totals = doc["totals"]
    assert totals["coverage"] == 1.0 and totals["gaps"] == 0 and totals["responses_lost"] == 0


def test_commands_equal_performance_schema(recorded: Recorded) -> None:
    doc = replay_json(recorded.path, recorded.port)
    by_command: dict[str, int] = {}
    for entry in doc["templates"]:
        for name, n in entry["commands"].items():
            by_command[name] = by_command.get(name, 0) + n
    for name in ("Prepare", "Execute", "Close stmt", "Reset stmt", "Ping", "Init DB", "Quit"):
        assert by_command.get(name, 0) == recorded.commands.get(name, 0), name


def test_workers_do_not_change_the_report(recorded: Recorded) -> None:
    """Byte for byte as printed, the ``analysis`` block (the run itself) aside."""
    one = replay_json(recorded.path, recorded.port, "--workers", "1", "--slow-ms", "0.5")
    two = replay_json(recorded.path, recorded.port, "--workers", "2", "--slow-ms", "0.5")
    for doc in (one, two):
        doc.pop("analysis")
    assert json.dumps(one, separators=(",", ":")) == json.dumps(two, separators=(",", ":"))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_compiled_and_pure_engines_print_the_same_document(recorded: Recorded, workers: str) -> None:
    """Real traffic (text, prepared and compressed) through each engine: byte for byte the
    same document, timing fields included; only the ``analysis`` block (the run: its time,
    which engine) differs."""
    need_compiled()
    docs = {}
    for engine, value in (("pure", "1"), ("compiled", "0")):
        args = (str(recorded.path), "--port", str(recorded.port), "--format", "json", "--workers", workers)
        result = replay(*args, "--slow-ms", "0.5", env={"MYSQLPROBE_NO_EXTENSIONS": value})
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        assert doc.pop("analysis")["engine"] == engine
        docs[engine] = json.dumps(doc, separators=(",", ":"))
    assert docs["compiled"] == docs["pure"]


def test_gzip_capture_and_table_output(recorded: Recorded, tmp_path: Path) -> None:
    gz = tmp_path / "workload.pcap.gz"
    with open(recorded.path, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert replay_json(gz, recorded.port)["totals"] == replay_json(recorded.path, recorded.port)["totals"]
    table = replay(str(gz), "--port", str(recorded.port), "--top", "5")
    assert table.returncode == 0, table.stderr
    assert "SELECT name, price FROM items WHERE id = ?" in table.stdout or "Rank" in table.stdout
    assert table.stdout.count("\n") > 10


def test_truncated_capture_reports_what_it_read(recorded: Recorded, tmp_path: Path) -> None:
    data = recorded.path.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) * 2 // 3 + 7])
    result = replay(str(cut), "--port", str(recorded.port), "--format", "json")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "truncated" in result.stderr
    doc = json.loads(result.stdout)
    assert doc["totals"]["queries"] > 100 and doc["source"]["error"]


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "No such file"), (b"not a capture at all", "not a readable capture"), (b"", "not a readable capture")],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "input.pcap"
    if content is not None:
        path.write_bytes(content)
    result = replay(str(path))
    assert result.returncode == 2 and result.stdout == ""
    assert message in result.stderr and result.stderr.strip().count("\n") == 0


def test_server_filter_and_redaction(recorded: Recorded) -> None:
    doc = replay_json(
        recorded.path, recorded.port, "--server", f"127.0.0.1:{recorded.port}", "--slow-ms", "0", "--redact"
    )
    assert doc["totals"]["queries"] > 0
    assert doc["slow"] and all(s["params"] is None for s in doc["slow"])
    assert all(s["sql"] in {t["template"] for t in doc["templates"]} for s in doc["slow"])
    other = replay_json(recorded.path, recorded.port, "--server", f"127.0.0.2:{recorded.port}")
    assert other["totals"]["queries"] == 0


def test_sample_capture_in_examples() -> None:
    sample = Path(__file__).parents[2] / "examples" / "sample.pcap.gz"
    result = replay(str(sample), "--format", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    Draft202012Validator(SCHEMA).validate(doc)
    assert doc["totals"]["queries"] > 1000 and doc["totals"]["coverage"] == 1.0


if os.geteuid() != 0:  # pragma: no cover - capture needs root
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))
