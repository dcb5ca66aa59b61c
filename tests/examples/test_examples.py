"""The examples work as their comments say: the subscriber prints a live slave's templates,
the systemd units pass ``systemd-analyze verify`` without a warning, the example
configurations pass ``check-config``, and the Containerfile copies what exists."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pymysql
import pytest

from probe.normalize import template_key
from tests.support.mariadb import running_mariadb
from tests.support.nodes import ROOT, Collector, Node

EXAMPLES = ROOT / "examples"


@pytest.mark.mariadb
@pytest.mark.live
@pytest.mark.skipif(os.geteuid() != 0, reason="live capture on lo needs root")
def test_subscriber_prints_templates_as_reports_arrive(tmp_path: Path) -> None:
    with running_mariadb() as server:
        token = "example-token-7"  # the node needs it from subscribers: the example sends it
        config = {"interval": 1, "token": token, "probe": {"device": "lo", "port": server.port, "workers": 1}}
        node = Node(tmp_path, config).start()
        url = f"ws://127.0.0.1:{node.port}/collector"
        collector = Collector(f"{url}?token={token}")
        out = tmp_path / "subscriber.out"
        with open(out, "wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, str(EXAMPLES / "subscriber.py"), url],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env={**os.environ, "MYSQLPROBE_TOKEN": token},
            )
        try:
            time.sleep(1.5)  # subscribed before the workload starts
            conn = pymysql.connect(host="127.0.0.1", port=server.port, user="root", autocommit=True)
            with conn.cursor() as cur:
                for i in range(37):
                    cur.execute(f"SELECT {i} + 1 AS answer_column")
            conn.close()
            collector.wait_for(
                lambda c: (
                    any(t.get("template", "").startswith("SELECT ? + ?") for r in c.reports for t in r["templates"])
                    and c.reports[-1]["totals"]["queries"] == 0
                ),
                timeout=30,
            )
            time.sleep(0.5)
        finally:
            proc.terminate()
            proc.wait(10)
            collector.close()
            node.stop()
    lines = [line for line in out.read_text().splitlines() if "SELECT ? + ? AS answer_column" in line]
    assert lines, out.read_text()[-2000:]
    printed = sum(int(line.split()[2]) for line in lines)
    # A template's text comes with the first report of its key only: later ones match by key.
    keys = {
        t["key"] for r in collector.reports for t in r["templates"] if t.get("template", "").startswith("SELECT ? + ?")
    }
    reported = sum(t["count"] for r in collector.reports for t in r["templates"] if t["key"] in keys)
    assert printed == reported == 37


def test_systemd_units_verify_cleanly(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (Debian package systemd)"
    mysqlprobe = shutil.which("mysqlprobe") or ""
    assert mysqlprobe, "mysqlprobe is not installed on PATH"
    units = []
    for name in ("mysqlprobe-slave.service", "mysqlprobe-master.service"):
        text = (EXAMPLES / "systemd" / name).read_text()
        # verify checks that ExecStart exists: point it at this machine's mysqlprobe
        (tmp_path / name).write_text(text.replace("/usr/local/bin/mysqlprobe", str(Path(mysqlprobe).resolve())))
        units.append(str(tmp_path / name))
    result = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # an unknown or misspelt key is only a warning
    slave = (EXAMPLES / "systemd" / "mysqlprobe-slave.service").read_text()
    master = (EXAMPLES / "systemd" / "mysqlprobe-master.service").read_text()
    assert "AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN" in slave
    for unit in (slave, master):
        assert re.search(r"^User=mysqlprobe$", unit, re.M) and "ProtectSystem=strict" in unit
        assert "NoNewPrivileges=yes" in unit and "StateDirectory=mysqlprobe/" in unit
    assert re.search(r"^CapabilityBoundingSet=$", master, re.M)


@pytest.mark.parametrize("name", ["slave.yaml", "master.yaml"])
def test_example_configs_pass_check_config_and_use_the_state_directory(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mysqlprobe.cli", "check-config", str(EXAMPLES / "systemd" / name)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    role = name.removesuffix(".yaml")
    unit = (EXAMPLES / "systemd" / f"mysqlprobe-{role}.service").read_text()
    assert f"statedir: /var/lib/mysqlprobe/{role}" in result.stdout  # ProtectSystem=strict: only it is writable
    assert f"StateDirectory=mysqlprobe/{role}" in unit and f"/etc/mysqlprobe/{name}" in unit


def test_containerfile_copies_what_exists_and_runs_unprivileged() -> None:
    text = (EXAMPLES / "Containerfile").read_text()
    instructions = [line.split(None, 1) for line in text.splitlines() if line and not line.startswith(("#", " "))]
    assert instructions[0][0] == "FROM"
    for verb, rest in instructions:
        if verb == "COPY":
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), source
    users = [rest for verb, rest in instructions if verb == "USER"]
    assert users == ["mysqlprobe"]
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {name for name in setup["packages"] if "." not in name}
    copied = {rest.split()[0] for verb, rest in instructions if verb == "COPY"}
    assert packages <= copied  # every package the wheel needs is in the build context


CAP_NET_ADMIN, CAP_NET_RAW = 12, 13


def bounding_set(keep: set[int]) -> Any:
    """A preexec_fn limiting the capability bounding set to ``keep``: after exec, even uid 0
    holds no other capability (what AmbientCapabilities/CapabilityBoundingSet give a unit)."""
    libc = ctypes.CDLL(None, use_errno=True)
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())

    def drop() -> None:
        for cap in range(last + 1):
            if cap not in keep and libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), f"PR_CAPBSET_DROP {cap}")

    return drop


def effective_caps(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^CapEff:\s*([0-9a-f]+)$", status, re.M).group(1), 16)  # type: ignore[union-attr]


@pytest.mark.mariadb
@pytest.mark.live
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop capabilities from")
def test_slave_captures_with_net_raw_and_net_admin_only(tmp_path: Path) -> None:
    """What the slave unit grants is enough, and CAP_NET_RAW is needed."""
    with running_mariadb() as server:
        config = {"interval": 1, "probe": {"device": "lo", "port": server.port, "workers": 1}}
        node = Node(tmp_path, dict(config), name="capped")
        node.start(preexec_fn=bounding_set({CAP_NET_RAW, CAP_NET_ADMIN}))
        try:
            assert node.proc is not None
            assert effective_caps(node.proc.pid) == (1 << CAP_NET_RAW) | (1 << CAP_NET_ADMIN)
            collector = Collector(f"ws://127.0.0.1:{node.port}/collector")
            conn = pymysql.connect(host="127.0.0.1", port=server.port, user="root", autocommit=True)
            with conn.cursor() as cur:
                for i in range(5):
                    cur.execute(f"SELECT {i} AS capped_probe")
            conn.close()
            key = template_key("SELECT ? AS capped_probe")
            try:
                collector.wait_for(
                    lambda c: sum(t["count"] for r in c.reports for t in r["templates"] if t["key"] == key) == 5,
                    timeout=30,
                )
            finally:
                collector.close()
        finally:
            node.stop()
        bare = Node(tmp_path, dict(config), name="uncapped")
        with pytest.raises(RuntimeError, match="node exited with 2"):
            bare.start(preexec_fn=bounding_set(set()))
        assert "cannot capture" in bare.log.read_text()
