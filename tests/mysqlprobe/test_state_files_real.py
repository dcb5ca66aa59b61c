"""Damaged state files and starting afresh, with the real command: a checksummed file of
the wrong shape is one line naming the file and what to do (exit 2, no traceback); a stray
file in the spool is named in one log line and the node starts; ``--fresh-state`` moves
the state aside and starts a new incarnation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from message.persist import write_state
from tests.support.mariadb import free_port
from tests.support.nodes import ROOT, Node

pytestmark = [pytest.mark.live]
if os.geteuid() != 0:  # pragma: no cover
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))


def run_once(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mysqlprobe.cli", "run", "-c", str(config), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


MASTER: dict[str, Any] = {"slave": False, "interval": 1}
SLAVE: dict[str, Any] = {"interval": 1, "probe": {"device": "lo", "port": 3306, "workers": 1}}


@pytest.mark.parametrize(
    ("role", "name", "kind", "payload"),
    [
        ("master", "seq.json", "report-seq", {"node": "n", "sequence": 4}),
        ("master", "seq.json", "report-seq", {"node": "n", "seq": "4"}),
        ("master", "seq.json", "report-seq", [1, 2]),
        ("master", "master.json", "master-checkpoint", {"merger": {"interval": {}}}),
        ("master", "members.json", "cluster-members", {"slaves": "10.0.0.1:8086"}),
        ("slave", "epoch.json", "fencing-epoch", {"epoch": 1e308}),
        ("slave", "epoch.json", "fencing-epoch", {"epoch": True}),
        ("slave", "checkpoint.json", "slave-checkpoint", {"node": "n", "sessions": {"a": [1]}}),
    ],
)
def test_a_state_file_of_the_wrong_shape_is_one_clear_line(
    tmp_path: Path, role: str, name: str, kind: str, payload: Any
) -> None:
    config = {**(MASTER if role == "master" else SLAVE), "node": "n", "serverport": free_port()}
    path = tmp_path / "n.yaml"
    path.write_text(yaml.safe_dump(config))
    damaged = tmp_path / "n.state" / name
    write_state(damaged, kind, payload)  # a valid checksum over the wrong content
    result = run_once(path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("mysqlprobe:")]  # not the log
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(f"mysqlprobe: state error: {damaged}: unexpected content")
    assert "--fresh-state" in lines[0] and "Traceback" not in result.stderr
    # The documented way out: start afresh (the damaged state is kept aside).
    node = Node(tmp_path, config, "n").start(args=("--fresh-state",))
    try:
        status = node.get("/status")
        assert status["state"]["fresh"] and status["incarnation"]
    finally:
        node.stop()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("n.state.old-")]
    assert len(aside) == 1 and (aside[0] / name).exists()


def test_a_stray_file_in_the_spool_is_named_and_left_alone(tmp_path: Path) -> None:
    node = Node(tmp_path, dict(SLAVE), "s")
    spool = node.state / "spool" / "master"
    spool.mkdir(parents=True)
    (spool / "notes.txt").write_text("someone's notes")
    (spool / "000000000007.zz.report").write_text("not ours either")
    node.start()
    try:
        status = node.get("/status")["collector"]["spool"]
        assert sorted(status["stray_files"]) == ["000000000007.zz.report", "notes.txt"]
    finally:
        node.stop()
    log = node.log.read_text()
    assert "config error" not in log and "Traceback" not in log
    named = [line for line in log.splitlines() if "notes.txt" in line]
    assert len(named) == 1 and "move it out of the directory" in named[0]
    assert (spool / "notes.txt").read_text() == "someone's notes"


def test_fresh_state_is_a_new_incarnation(tmp_path: Path) -> None:
    node = Node(tmp_path, dict(MASTER), "m").start()
    try:
        first = node.get("/status")["incarnation"]
    finally:
        node.stop()
    node.start()
    try:
        assert node.get("/status")["incarnation"] == first  # the state survives a restart
    finally:
        node.stop()
    node.start(args=("--fresh-state",))
    try:
        status = node.get("/status")
        assert status["incarnation"] != first and status["state"]["fresh"]
    finally:
        node.stop()
