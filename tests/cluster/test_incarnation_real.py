"""A slave that loses its state directory after its reports were merged restarts at seq 1
under a new incarnation: the master merges its new reports (none taken for duplicates),
counts the restart and shows it. Real processes, real MariaDB, real capture on lo."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.test_resume_real import Background, shop_counts, wait_settled
from tests.support import workload
from tests.support.mariadb import MariaDB
from tests.support.nodes import Collector, Node

pytestmark = [pytest.mark.mariadb, pytest.mark.live]
if os.geteuid() != 0:  # pragma: no cover
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))


@pytest.fixture()
def server() -> Iterator[MariaDB]:
    yield from workload.schema_server()


def run_for(server: MariaDB, seconds: float) -> None:
    with Background(server):
        time.sleep(seconds)


def test_slave_with_a_wiped_state_dir_is_merged_as_a_new_incarnation(server: MariaDB, tmp_path: Path) -> None:
    slave = Node(tmp_path, {"interval": 1, "probe": {"device": "lo", "port": server.port, "workers": 1}}, "s").start()
    master = Node(tmp_path, {"slave": False, "interval": 1}, "m").start()
    accounting = workload.Accounting(server)
    try:
        assert master.request(f"/cluster/join?addr=127.0.0.1:{slave.port}")[0] == 200
        time.sleep(2)
        accounting.reset()
        run_for(server, 6)
        first = wait_settled(slave, master)
        before = slave.get("/status")
        assert before["seq"] >= 5 and first["slaves"]["s"]["incarnation"] == before["incarnation"]
        slave.stop()
        shutil.rmtree(slave.state)  # a redeployed container: same name, no state
        slave.start()
        after = slave.get("/status")
        assert after["incarnation"] != before["incarnation"] and after["state"]["fresh"]
        assert after["seq"] < before["seq"]  # numbering starts again
        collector = Collector(f"ws://127.0.0.1:{master.port}/collector")
        run_for(server, 6)
        totals = wait_settled(slave, master)
        collector.wait_for(lambda c: any(s["restarted_without_state"] for r in c.reports for s in r["slaves"]))
        collector.close()
        expected = accounting.expectations(schema=workload.DB)
    finally:
        accounting.close()
        master.stop()
        slave.stop()
    # Every statement of both lives of the slave is in the master's totals: nothing dropped.
    assert expected and shop_counts(totals) == expected
    state = totals["slaves"]["s"]
    assert state["incarnation"] == after["incarnation"]
    assert state["restarts_without_state"] == 1 and totals["restarts_without_state"] == 1
    restarted = [s for r in collector.reports for s in r["slaves"] if s["restarted_without_state"]]
    assert restarted and restarted[0]["restarted_without_state"] == [after["incarnation"]]
