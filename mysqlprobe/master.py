"""Master and standby: many slaves' reports, one cluster view.

Owns the process wiring of a node with ``slave: false``. While it is master (always, in
static mode; when it holds the election's lock, in gossip mode) it subscribes to every
slave's /collector with a hello carrying its epoch, merges each report exactly once as it
arrives (``cluster.merge``) and publishes the merged report on its own /collector every
interval. As a standby it subscribes to nothing and waits; when the master dies it wins the
election, gets a higher epoch, subscribes to every slave, and the slaves cut off the old
master. A master that a slave refuses (its epoch is stale) steps down at once.

A standby (gossip mode) follows the leader's published feed, its /collector, and learns
which slave reports each published report holds (``ReportMerger.learn_published``; only
reports of a master whose epoch is not newer than the cluster's, as this node knows it).
The leader acknowledges those reports only after publishing them: killed in between, it
leaves them in the slaves' spools, and they are offered to the next master. That master
starts its term from what it learned (``ReportMerger.successor``): such a report is
dropped as a duplicate (``duplicates_published_by_predecessor``) and acknowledged, so it
leaves the spool without reaching the subscribers twice. (In static mode the successor
is the same master restarted: its checkpoint remembers what it merged and its outbox
holds the report it may have published, so it needs no feed. In gossip mode that
report is published again, and its slave reports dropped when offered again, only if the
restarted master leads the very next epoch: see ``_earlier_term``.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from cluster.merge import ReportMerger
from cluster.metrics import Sample
from cluster.subscriptions import Link, Subscriptions
from message.persist import read_shaped
from mysqlprobe.config import Config
from mysqlprobe.node import BaseNode

log = logging.getLogger("mysqlprobe.master")


#: Fault injection for tests, never for production: the path of a trigger file. A master
#: that publishes an interval report holding slave reports while the file exists deletes
#: it, waits until its subscribers have been sent the report, and exits at once
#: (``os._exit``, as after a kill -9) before acknowledging any of those slave reports: the
#: window in which a successor is offered reports that were already published.
FAULT_EXIT_AFTER_PUBLISH = "MYSQLPROBE_FAULT_EXIT_AFTER_PUBLISH"
#: The exit status of a master that ``FAULT_EXIT_AFTER_PUBLISH`` ended.
FAULT_EXIT_CODE = 86

#: Reports to acknowledge: (slave address, node, incarnation) -> (connection, seqs).
Acks = dict[tuple[str, str, str], tuple[Link, list[int]]]


class MasterNode(BaseNode):
    role = "master"
    master_capable = True
    stores_own_samples = False

    def __init__(self, config: Config, state: Path) -> None:
        super().__init__(config, state)
        self.merger = ReportMerger(max_slow=config.probe.maxslow)
        self.subscriptions = self._links(self._report, self._hello, on_refused=self._refused)
        self.clustering.on_change = self._retarget
        # The leader's published feed, followed while this node is a standby (gossip mode).
        self.feed = self._links(self._published_by_leader, self._follower_hello)
        self.feed_reports = 0  # the leader's reports learned from
        self.feed_ignored = 0  # ... and those not taken (a newer epoch than known, not a master's)
        self.interval_start = time.time_ns()
        self.intake_latency_ms: list[float] = []
        # Reports merged (or recognised as duplicates) into the interval under way: they are
        # acknowledged only once the report of that interval is checkpointed and published.
        # Acknowledged earlier, a master that dies (or loses an election) before publishing
        # would lose them: the slaves no longer keep them, and a new master starts afresh.
        self.pending_acks: Acks = {}
        # Reports of published intervals, acknowledged at the next durable checkpoint.
        self.published_acks: Acks = {}
        self._checkpoint_lock = asyncio.Lock()  # one write at a time, in order
        self.checkpoints = 0
        self._dirty = False
        self.outbox: dict[str, Any] | None = None  # a merged report checkpointed, maybe not published
        # Gossip mode: the outbox of this node's term that ended with a crash, until the
        # next term shows whether it may be published again (``_earlier_term``).
        self.earlier_outbox: dict[str, Any] | None = None
        self.earlier_term_republished = 0
        self.fault_exit_trigger = os.environ.get(FAULT_EXIT_AFTER_PUBLISH) or None
        read_shaped(state / "master.json", "master-checkpoint", self._restore)

    def _restore(self, saved: dict[str, Any]) -> None:
        self.merger.restore(saved["merger"])
        self.interval_start = int(saved.get("interval_start_ns", self.interval_start))
        outbox = saved.get("outbox")
        if outbox is not None and not isinstance(outbox, dict):
            raise TypeError("outbox: expected a report")
        self.outbox = outbox

    def _links(
        self,
        on_report: Callable[[Link, dict[str, Any], dict[str, str]], None],
        hello: Callable[[], dict[str, Any]],
        on_refused: Callable[[Link, int], None] | None = None,
    ) -> Subscriptions:
        """Websocket subscriptions to other nodes' /collector, with this node's token, TLS
        and websocket settings."""
        ws = self.config.websocket
        return Subscriptions(
            on_report,
            hello,
            token=lambda: self.config.token,
            reconnect_max_s=ws.reconnectperiods,
            ping_s=ws.pingtimeouts,
            max_size=ws.maxmessagesize,
            ssl=self.client_tls,
            on_refused=on_refused,
        )

    def _hello(self) -> dict[str, Any]:
        return {"node": self.name, "role": "master", "epoch": self.clustering.epoch}

    def _follower_hello(self) -> dict[str, Any]:
        return {"node": self.name, "role": "standby", "epoch": self.clustering.epoch}

    def _published_by_leader(self, link: Link, report: dict[str, Any], texts: dict[str, str]) -> None:
        """A report the leader published: the slave reports it holds are merged for good."""
        if self.current_role != "standby":
            return
        epoch = report.get("epoch")
        if (
            report.get("role") != "master"
            or report.get("node") == self.name
            or type(epoch) is not int
            or epoch > self.clustering.known_epoch()
        ):
            self.feed_ignored += 1
            return
        self.feed_reports += 1
        self._learn_published(report)

    def _learn_published(self, report: dict[str, Any]) -> None:
        """The slave reports a published merged report holds are merged for good."""
        for slave in report.get("slaves", ()):
            if not isinstance(slave, dict) or not isinstance(slave.get("node"), str):
                continue
            node, incarnation = slave["node"], str(slave.get("incarnation", ""))
            self.merger.learn_published(node, incarnation, _seqs(slave.get("seqs")))
            earlier = slave.get("earlier_seqs")
            for old, seqs in earlier.items() if isinstance(earlier, dict) else ():
                self.merger.learn_published(node, str(old), _seqs(seqs), current=False)

    def _report(self, link: Link, report: dict[str, Any], texts: dict[str, str]) -> None:
        if self.current_role != "master":
            return
        outcome = self.merger.add(report, texts)
        self.clustering.last_reports[link.addr] = time.time()
        if outcome in ("merged", "duplicate"):
            node = str(report["node"])
            incarnation = str(report.get("incarnation", ""))
            entry = self.pending_acks.setdefault((link.addr, node, incarnation), (link, []))
            entry[1].append(int(report["seq"]))
            self._dirty = self._dirty or outcome == "merged"
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

    async def _checkpoints(self) -> None:
        """Group commit: every 0.5 s, write a checkpoint of what was merged, then
        acknowledge the reports of intervals already published. A kill -9 at any point
        loses no report (the slaves keep what is not acknowledged) and counts none twice
        (the checkpoint remembers their sequence numbers)."""
        while True:
            await asyncio.sleep(0.5)
            await self.checkpoint()

    async def checkpoint(self, *, acknowledge: bool = True) -> bool:
        """Write what was merged if anything changed; once that is durable, acknowledge the
        reports of published intervals (with ``acknowledge``). Returns whether it is durable."""
        async with self._checkpoint_lock:
            if self._dirty:
                self._dirty = False
                document = {
                    "node": self.name,
                    "interval_start_ns": self.interval_start,
                    "merger": self.merger.snapshot(),
                    "outbox": self.outbox if self.outbox is not None else self.earlier_outbox,
                }
                saved = await asyncio.to_thread(
                    self.writes.write, self.state / "master.json", "master-checkpoint", document
                )
                if not saved:
                    # Not durable: acknowledge nothing (the slaves keep the reports) and retry.
                    self._dirty = True
                    return False
                self.checkpoints += 1
        if acknowledge:
            await self._acknowledge_published()
        return True

    async def _acknowledge_published(self) -> None:
        """Acknowledge the reports of published intervals (the slaves forget them)."""
        acks, self.published_acks = self.published_acks, {}
        for (_, node, incarnation), (link, seqs) in acks.items():
            await self.subscriptions.ack(link, node, incarnation, seqs)

    def _refused(self, link: Link, code: int) -> None:
        log.warning("slave %s refused epoch %d: a newer master leads; stepping down", link.addr, self.clustering.epoch)
        self.clustering.step_down()
        self._retarget()

    def _retarget(self) -> None:
        targets = self.clustering.slave_addresses() if self.current_role == "master" else set()
        self.subscriptions.set_targets(targets)
        self.feed.set_targets(self.clustering.master_addresses() if self.current_role == "standby" else set())

    async def cluster_changed(self, changed: bool) -> None:
        if changed and self.current_role == "master":
            # A new epoch: start the interval afresh and tell every slave who leads now.
            self.interval_start = time.time_ns()
            # Nothing merged before is published by this master now: unacknowledged, those
            # reports are replayed by the slaves on the hello below and merged afresh. What
            # the leader before published is not: offered again, it is dropped and acknowledged.
            self.merger = self.merger.successor()
            self.pending_acks = {}
            self._earlier_term()
            await self.subscriptions.announce()
        self._retarget()

    def _earlier_term(self) -> None:
        """What becomes of the report this node checkpointed in a term that ended with its
        crash (``earlier_outbox``), called when this node leads a new epoch.

        It may have reached subscribers. If this node leads the very next epoch (the
        earlier's plus one), no other master led in between, so none merged its slave
        reports afresh: it is published again, with its own node, incarnation and seq
        (subscribers and the history deduplicate), and its slave reports, which the slaves
        offer again, are known as published: dropped and acknowledged, as a successor does
        with what it saw on the leader's feed. Had another master led in between, that one
        dealt with them (dropped what it saw published, merged the rest): it is forgotten.
        Until this node leads, it is kept, in the checkpoint too."""
        held, self.earlier_outbox = self.earlier_outbox, None
        if held is None:
            return
        self._dirty = True  # the checkpoint forgets it
        epoch = held.get("epoch")
        if type(epoch) is not int or self.clustering.epoch != epoch + 1:
            log.info("not publishing the report of an earlier term (seq %s): another master led since", held.get("seq"))
            return
        self._learn_published(held)
        log.info("publishing again the report of this node's earlier term (seq %s)", held.get("seq"))
        self.earlier_term_republished += 1
        self.publish(held)

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_get("/report/totals", self.totals)
        return app

    async def totals(self, request: web.Request) -> web.Response:
        """Everything merged since the master's state began (kept across restarts)."""
        self.check_read(request)  # template texts and slow samples
        return web.json_response(self.merger.cumulative_report())

    async def start(self) -> None:
        if self.outbox is not None:
            if self.config.cluster.gossip:
                # A term that ended with the crash: its slave reports were never acknowledged,
                # so the slaves replay them to whichever master leads now. Which one that is
                # decides (``_earlier_term``).
                self.earlier_outbox, self.outbox = self.outbox, None
            else:
                # Checkpointed before a crash, perhaps never published: the same report with
                # the same seq again (subscribers and receivers deduplicate by node and seq).
                self.publish(self.outbox)
        self._tasks.append(asyncio.ensure_future(self._checkpoints()))

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
                    incarnation=self.incarnation,
                    epoch=self.clustering.epoch,
                    start_ns=self.interval_start,
                    end_ns=end,
                    expected=expected,
                    states={name: ("reporting" if state == "connected" else state) for name, state in states.items()},
                )
                acks, self.pending_acks = self.pending_acks, {}  # what this report holds
                # Checkpoint first, then publish, then acknowledge: a crash before the
                # checkpoint loses nothing (the slaves replay); one after it republishes
                # this report from the outbox instead of merging the interval a second time.
                self.outbox = report
                self._dirty = True
                durable = await self.checkpoint(acknowledge=False)
                self.publish(report)
                if self.fault_exit_trigger is not None and any(slave["seqs"] for slave in report["slaves"]):
                    await self._fault_exit_after_publish()
                for key, (link, seqs) in acks.items():
                    self.published_acks.setdefault(key, (link, []))[1].extend(seqs)
                if durable:
                    # At once: the report holding them is checkpointed and out. Writing a
                    # checkpoint of what was merged meanwhile first would widen the window in
                    # which a master killed after publishing leaves them unacknowledged, and
                    # the next master merges them a second time.
                    await self._acknowledge_published()
                if self.history is not None:
                    await self.history.flush()  # in history before the outbox forgets it
                self.outbox = None
                self._dirty = True
            self.settings.apply_pending()
            self.interval_start = end

    async def _fault_exit_after_publish(self) -> None:
        """``FAULT_EXIT_AFTER_PUBLISH``: die now if the trigger file exists (tests only)."""
        assert self.fault_exit_trigger is not None
        try:
            os.unlink(self.fault_exit_trigger)
        except FileNotFoundError:
            return
        sent = await self.hub.sent(5.0)
        log.warning("fault injection: exiting after publishing seq %d (subscribers sent it: %s)", self.seq, sent)
        logging.shutdown()
        os._exit(FAULT_EXIT_CODE)

    async def stop(self) -> None:
        await self.checkpoint()
        await self.subscriptions.close()
        await self.feed.close()

    def status_body(self) -> dict[str, Any]:
        body = super().status_body()
        latencies = sorted(self.intake_latency_ms)
        body.update(
            {
                "subscriptions": self.subscriptions.status(),
                "merge": {
                    "merged": self.merger.merged,
                    "duplicates": self.merger.duplicates,
                    "duplicates_published_by_predecessor": self.merger.duplicates_published_by_predecessor,
                    "predecessor_seqs": self.merger.predecessor_seqs,
                    "predecessor_seqs_forgotten": self.merger.predecessor_seqs_forgotten,
                    "restarts_without_state": self.merger.restarts_without_state,
                    "rejected": self.merger.rejected,
                    "intake_latency_ms_p50": latencies[len(latencies) // 2] if latencies else None,
                    "checkpoints": self.checkpoints,
                    # Reports of this node's term that ended with a crash, published again
                    # when it led the next epoch (gossip mode).
                    "earlier_term_republished": self.earlier_term_republished,
                },
                "leader_feed": {
                    "links": self.feed.status(),
                    "reports": self.feed_reports,
                    "ignored": self.feed_ignored,
                },
            }
        )
        return body


def _seqs(value: object) -> list[int]:
    """The sequence numbers of a published report's slave entry (anything else dropped)."""
    if not isinstance(value, list):
        return []
    return [seq for seq in value if type(seq) is int and seq >= 0]
