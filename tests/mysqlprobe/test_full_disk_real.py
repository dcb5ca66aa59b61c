"""State directories that refuse writes, with real processes and real file systems: a
1 MiB tmpfs filled up, and a tmpfs mounted read-only. Slaves and masters keep serving in
a degraded mode (counted, visible in /status), lose no report, and recover when the space
or the write permission returns. The spool keeps its bound and its overflow counter on a
full disk."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pusher.spool import DiskSpool
from tests.support.mariadb import free_port
from tests.support.nodes import Node
from tests.support.prom import parse, scrape, series

pytestmark = [pytest.mark.live]
if os.geteuid() != 0:  # pragma: no cover
    pytestmark.append(pytest.mark.skip(reason="mounting a tmpfs and live capture need root"))


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; returns it (delete it to free space)."""
    filler = directory / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


def wait(predicate: Callable[[], Any], timeout: float = 40.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def alive(*nodes: Node) -> bool:
    return all(n.proc is not None and n.proc.poll() is None for n in nodes)


def slave_config(state: Path) -> dict[str, Any]:
    return {"interval": 1, "statedir": str(state), "probe": {"device": "lo", "port": free_port(), "workers": 1}}


def test_full_disk_on_a_slave_and_a_master_is_a_degraded_mode_that_recovers(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "slave-state") as slave_dir, tmpfs(tmp_path / "master-state") as master_dir:
        slave = Node(tmp_path, slave_config(slave_dir), "s").start()
        master = Node(tmp_path, {"slave": False, "interval": 1, "statedir": str(master_dir)}, "m").start()
        try:
            assert master.request(f"/cluster/join?addr=127.0.0.1:{slave.port}")[0] == 200
            wait(lambda: slave.get("/status")["collector"]["acks"] >= 2, what="acknowledgements")
            fillers = [fill(slave_dir), fill(master_dir)]
            wait(lambda: slave.get("/status")["collector"]["spool"]["in_memory"] >= 3, what="reports kept in memory")
            time.sleep(2)
            assert alive(slave, master)
            status = slave.get("/status")
            assert status["state"]["degraded"] and status["state"]["write_errors"] > 0
            assert "seq.json" in status["state"]["failing"]
            assert "No space left" in status["state"]["failing"]["seq.json"]
            assert status["state"]["incarnation_rotations"] == 1  # no seq can be used twice after a restart
            spool = status["collector"]["spool"]
            assert spool["degraded"] and spool["write_errors"] > 0 and spool["overflowed"] == 0
            mstatus = master.get("/status")
            assert mstatus["state"]["degraded"] and "master.json" in mstatus["state"]["failing"]
            # Prometheus sees it too: an alert needs no /status poller.
            metrics = parse(scrape(slave))
            assert series(metrics, "mysqlprobe_store_degraded", store="state") == 1
            assert series(metrics, "mysqlprobe_store_degraded", store="spool") == 1
            assert series(metrics, "mysqlprobe_store_write_errors_total", store="state") > 0
            assert series(parse(scrape(master)), "mysqlprobe_store_degraded", store="state") == 1
            # The master cannot make what it merged durable, so it acknowledges nothing.
            acks_while_full = status["collector"]["acks"]
            time.sleep(2)
            assert slave.get("/status")["collector"]["acks"] == acks_while_full
            for filler in fillers:
                filler.unlink()
            wait(lambda: not slave.get("/status")["state"]["degraded"], what="slave recovery")
            wait(lambda: not master.get("/status")["state"]["degraded"], what="master recovery")
            wait(lambda: slave.get("/status")["collector"]["spool"]["reports"] <= 2, what="spool drained")

            # seq.json is written again as soon as there is room; the spool at its next append,
            # which also moves the reports it kept in memory to disk (the drain above can
            # finish before that append: CI saw in_memory 1 right after it).
            def spool_on_disk() -> bool:
                spool = slave.get("/status")["collector"]["spool"]
                return not spool["degraded"] and not spool["in_memory"]

            wait(spool_on_disk, what="spool recovery")
            assert slave.get("/status")["state"]["recoveries"] >= 1
            assert master.get("/status")["state"]["recoveries"] >= 1
            metrics = parse(scrape(slave))
            assert series(metrics, "mysqlprobe_store_degraded", store="state") == 0
            assert series(metrics, "mysqlprobe_store_degraded", store="spool") == 0
            assert series(metrics, "mysqlprobe_store_recoveries_total", store="state") >= 1

            def all_merged() -> bool:
                merged = master.get("/report/totals")["slaves"]["s"]["merged"]
                return bool(merged >= slave.get("/status")["seq"] - 1)

            wait(all_merged, what="every report merged")  # nothing lost while the disks were full
            assert alive(slave, master)
        finally:
            master.stop()
            slave.stop()
        assert "Traceback" not in slave.log.read_text() + master.log.read_text()


def test_read_only_state_dirs_do_not_stop_a_slave_or_a_master(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "slave-ro") as slave_dir, tmpfs(tmp_path / "master-ro") as master_dir:
        remount(slave_dir, "ro")
        remount(master_dir, "ro")
        slave = Node(tmp_path, slave_config(slave_dir), "s").start()
        master = Node(tmp_path, {"slave": False, "interval": 1, "statedir": str(master_dir)}, "m").start()
        try:
            status, body = master.request(f"/cluster/join?addr=127.0.0.1:{slave.port}")
            assert status == 200, body
            wait(lambda: slave.get("/status")["collector"]["masters"] == ["m@0"], what="subscription")
            time.sleep(2)
            assert alive(slave, master)
            for node, files in ((slave, {"seq.json"}), (master, {"seq.json", "members.json", "master.json"})):
                state = node.get("/status")["state"]
                assert state["degraded"] and files <= set(state["failing"]), state
                assert all("Read-only" in reason for reason in state["failing"].values())
            assert slave.get("/status")["collector"]["spool"]["degraded"]
            assert master.get("/report/totals")["slaves"]["s"]["merged"] >= 2  # merging goes on
            remount(slave_dir, "rw")
            remount(master_dir, "rw")
            wait(lambda: not slave.get("/status")["state"]["degraded"], what="slave recovery")
            wait(lambda: not master.get("/status")["state"]["degraded"], what="master recovery")
            assert (master_dir / "members.json").exists() and (slave_dir / "seq.json").exists()
        finally:
            master.stop()
            slave.stop()
    # The slave list written after the recovery is the one a restart reads.
    assert "Traceback" not in slave.log.read_text() + master.log.read_text()


def test_the_spool_keeps_its_bound_and_counts_overflow_on_a_full_disk(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "spool", size="256k") as directory:
        spool = DiskSpool(directory, "", max_reports=50, max_bytes=1 << 30)
        report = os.urandom(20_000)  # incompressible: the tmpfs holds about a dozen
        for seq in range(1, 121):
            spool.append(("inc", seq), report)
        status = spool.status()
        assert status["reports"] == 50 and status["overflowed"] == 70
        assert status["degraded"] and status["in_memory"] > 0 and status["write_errors"] > 0
        assert [key[1] for key, _ in spool.items()] == list(range(71, 121))  # the newest, in order
        on_disk = sorted(p.name for p in directory.iterdir() if p.name.endswith(".report"))
        assert len(on_disk) == 50 - status["in_memory"]
        # Space comes back (acknowledged reports leave the disk): memory goes to disk.
        for seq in range(71, 111):
            spool.remove(("inc", seq))
        spool.append(("inc", 121), report)
        status = spool.status()
        assert not status["degraded"] and status["in_memory"] == 0 and status["reports"] == 11
        reread = DiskSpool(directory, "")
        assert [key for key, _ in reread.items()] == [("inc", seq) for seq in range(111, 122)]
