"""The operator's command line: --version, check-config (secrets masked, one line and exit 2
on a bad file) and a node's structured logging (JSON lines, no SQL above debug)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pymysql
import pytest
import yaml

from mysqlprobe import __version__
from mysqlprobe.config import load_config
from mysqlprobe.config_check import MASK
from probe import native
from tests.support.mariadb import running_mariadb
from tests.support.nodes import ROOT, Node


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mysqlprobe.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"mysqlprobe {__version__}"


def test_check_config_prints_the_effective_config_with_secrets_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "probe.yaml"
    path.write_text("interval: 5\nwatcher: {uname: probe, password: '${PROBE_PW}'}\nprobe: {port: 3307}\n")
    result = cli("check-config", str(path), env={"PROBE_PW": "hunter2-secret", "MYSQLPROBE_TOKEN": "tok-secret"})
    assert result.returncode == 0, result.stderr
    assert "hunter2-secret" not in result.stdout and "tok-secret" not in result.stdout
    shown = yaml.safe_load(result.stdout)
    assert shown["watcher"]["password"] == MASK and shown["token"] == MASK
    assert shown["interval"] == 5 and shown["probe"]["port"] == 3307
    assert shown["watcher"]["port"] == 3307  # the effective value: watcher.port follows probe.port
    # Everything else is the defaults, key for key.
    defaults = yaml.safe_load(cli("check-config", str(ROOT / "config.yaml")).stdout)
    assert set(defaults) == set(shown)
    assert defaults["prometheus"] == shown["prometheus"] == {"topn": 100, "templatelength": 200}
    # What is shown loads back into the same configuration (secrets apart).
    again = tmp_path / "again.yaml"
    shown["watcher"]["password"] = "x"
    shown["token"] = ""
    again.write_text(yaml.safe_dump(shown))
    monkeypatch.setenv("PROBE_PW", "x")
    assert load_config(again).probe == load_config(path).probe


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("probe: {port: 70000}\n", "probe.port: expected a port number from 1 to 65535"),
        ("nosuchkey: 1\n", "unknown key 'nosuchkey'"),
        ("log: {level: loud}\n", "log.level: expected one of debug, info, warning, error"),
        ("otlp: {endpoint: 'ftp://x'}\n", "otlp.endpoint: expected an http:// or https:// URL"),
        ("a: [\n", "not valid YAML"),
        (None, "cannot read"),
    ],
)
def test_check_config_refuses_a_bad_file_in_one_line(tmp_path: Path, text: str | None, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    if text is not None:
        path.write_text(text)
    result = cli("check-config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mysqlprobe: config error: ") and expected in lines[0], lines


@pytest.mark.mariadb
@pytest.mark.live
@pytest.mark.skipif(os.geteuid() != 0, reason="live capture on lo needs root")
def test_node_logs_json_lines_and_no_sql(tmp_path: Path) -> None:
    secret = "swordfish-7f3a"
    with running_mariadb() as server:
        config = {
            "interval": 1,
            "probe": {"device": "lo", "port": server.port, "workers": 1},
            "log": {"level": "info", "format": "json"},
        }
        node = Node(tmp_path, config, name="logger").start()
        try:
            conn = pymysql.connect(host="127.0.0.1", port=server.port, user="root", autocommit=True)
            with conn.cursor() as cur:
                cur.execute(f"SELECT '{secret}' AS pw")
                with pytest.raises(pymysql.err.ProgrammingError):
                    cur.execute(f"SELECT * FROM nowhere.t WHERE pw = '{secret}'")
            conn.close()
            status = node.get("/status")
            assert status["role"] == "slave"
            # a worker restart is logged at warning: kill one
            os.kill(status["workers"][0]["pid"], 9)
            deadline = time.monotonic() + 30
            while node.get("/status")["workers_restarted"] < 1:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        finally:
            node.stop()
    text = node.log.read_text()
    assert secret not in text
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert records and all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    # the start line names the engine once (compiled, or pure when the C decoder was not built)
    assert any(
        r["level"] == "info" and "serving on" in r["msg"] and f"{native.ENGINE} engine" in r["msg"] for r in records
    )
    assert any(r["level"] == "warning" and "restarted 1 capture worker" in r["msg"] for r in records)
    assert not any(r["level"] == "debug" for r in records)
