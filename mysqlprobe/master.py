"""Master and standby: many slaves' reports, one cluster view.

Owns the process wiring of a node with ``slave: false``. While it is master (always, in
static mode; when it holds the election's lock, in gossip mode) it subscribes to every
slave's /collector with a hello carrying its epoch, merges each report exactly once as it
arrives (``cluster.merge``) and publishes the merged report on its own /collector every
interval. As a standby it subscribes to nothing and waits; when the master dies it wins the
election, gets a higher epoch, subscribes to every slave, and the slaves cut off the old
master. A master that a slave refuses (its epoch is stale) steps down at once.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from cluster.merge import ReportMerger
from cluster.metrics import Sample
from cluster.subscriptions import Link, Subscriptions
from mysqlprobe.config import Config
from mysqlprobe.node import BaseNode

log = logging.getLogger("mysqlprobe.master")


class MasterNode(BaseNode):
    role = "master"
    master_capable = True
    stores_own_samples = False

    def __init__(self, config: Config, state: Path) -> None:
        super().__init__(config, state)
        self.merger = ReportMerger(max_slow=config.probe.maxslow)
        self.subscriptions = Subscriptions(
            self._report,
            self._hello,
            reconnect_max_s=config.websocket.reconnectperiods,
            ping_s=config.websocket.pingtimeouts,
            max_size=config.websocket.maxmessagesize,
            on_refused=self._refused,
        )
        self.clustering.on_change = self._retarget
        self.interval_start = time.time_ns()
        self.intake_latency_ms: list[float] = []

    def _hello(self) -> dict[str, Any]:
        return {"node": self.name, "role": "master", "epoch": self.clustering.epoch}

    def _report(self, link: Link, report: dict[str, Any], texts: dict[str, str]) -> None:
        if self.current_role != "master":
            return
        outcome = self.merger.add(report, texts)
        self.clustering.last_reports[link.addr] = time.time()
        if outcome == "merged":
            now = time.time_ns()
            slave = str(report.get("node", link.addr))
            samples = self.report_samples(report, slave, now)
            samples.append(Sample(now, slave, "reports", 1.0, False))
            end_ns = int(report.get("interval", {}).get("end_ns", 0))
            if end_ns:
                latency = (now - end_ns) / 1e6
                self.intake_latency_ms.append(latency)
                del self.intake_latency_ms[:-1000]
                samples.append(Sample(now, slave, "report_intake_ms", latency, False))
            self.metrics.record(samples, now)
            self.traces.add(report.get("slow", ()), now)

    def _refused(self, link: Link, code: int) -> None:
        log.warning("slave %s refused epoch %d: a newer master leads; stepping down", link.addr, self.clustering.epoch)
        self.clustering.step_down()
        self._retarget()

    def _retarget(self) -> None:
        targets = self.clustering.slave_addresses() if self.current_role == "master" else set()
        self.subscriptions.set_targets(targets)

    async def cluster_changed(self, changed: bool) -> None:
        if changed and self.current_role == "master":
            # A new epoch: start the interval afresh and tell every slave who leads now.
            self.interval_start = time.time_ns()
            self.merger = ReportMerger(max_slow=self.config.probe.maxslow)
            await self.subscriptions.announce()
        self._retarget()

    async def main(self) -> None:
        self._retarget()
        while await self.wait_interval(self.interval_start):
            end = time.time_ns()
            if self.current_role == "master":
                states = {link.node or link.addr: link.state for link in self.subscriptions.links.values()}
                expected = [link.node or link.addr for link in self.subscriptions.links.values()]
                report = self.merger.drain(
                    node=self.name,
                    role="master",
                    seq=self.next_seq(),
                    epoch=self.clustering.epoch,
                    start_ns=self.interval_start,
                    end_ns=end,
                    expected=expected,
                    states={name: ("reporting" if state == "connected" else state) for name, state in states.items()},
                )
                self.publish(report)
            self.settings.apply_pending()
            self.interval_start = end

    async def stop(self) -> None:
        await self.subscriptions.close()

    def status_body(self) -> dict[str, Any]:
        body = super().status_body()
        latencies = sorted(self.intake_latency_ms)
        body.update(
            {
                "subscriptions": self.subscriptions.status(),
                "merge": {
                    "merged": self.merger.merged,
                    "duplicates": self.merger.duplicates,
                    "rejected": self.merger.rejected,
                    "intake_latency_ms_p50": latencies[len(latencies) // 2] if latencies else None,
                },
            }
        )
        return body
