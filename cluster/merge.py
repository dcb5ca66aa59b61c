"""The master's merge: many slaves' interval reports in, one cluster report out.

Owns merging reports exactly once. A report is identified by (node, incarnation, seq); one
seen before is dropped and counted (a slave resending after a reconnect, a pusher
retrying). A report with an incarnation never seen from its node means the slave lost its
state and numbers its reports from 1 again: that restart is counted and shown (the slave's
entry says ``restarted_without_state``), and its reports are merged, never taken for
duplicates. The sequence numbers of a few earlier incarnations are kept, so late replays of
those are still recognised. Reports without an incarnation (older slaves) have the
incarnation "". Within an
interval, templates merge per (server, db, user, key): counts, sums and bytes add, errors add per
code, sketches add bucket by bucket, min/max take the extremes, slow samples keep the worst
N; nothing is ever overwritten. A gap in a slave's sequence numbers means intervals that
never arrived: they are listed in the merged report (``missing``), as are slaves that sent
nothing in the interval, so absence is visible rather than silent.

Failover: a standby learns from the leader's published reports which slave reports they
held (``learn_published``): they are remembered with the merged ones, marked as published
by a predecessor. A master taking over starts from ``successor()``, which keeps only those
marks: a slave offering such a report again (its acknowledgement never came) gets it
dropped as a duplicate (counted apart, ``duplicates_published_by_predecessor``) and
acknowledged, never merged a second time. The marks are bounded like the merged seqs.

Sans-I/O: ``add(report)`` and ``drain(...)``; the caller owns the clock and the sockets.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from message.check import check_interval_report
from message.logins import LoginStats, merge_logins, ordered_logins
from message.report import (
    SCHEMA_VERSION,
    SchemaError,
    SlowQuery,
    SlowSamples,
    TemplateIdent,
    TemplateStats,
    add_capture,
    merge_templates,
    merge_totals,
)

log = logging.getLogger("mysqlprobe.merge")

#: Sequence numbers remembered per slave for duplicate detection.
DEFAULT_SEEN_WINDOW = 4096
#: Missing sequence numbers listed per slave and interval (longer runs are summarised).
MAX_MISSING_LISTED = 100
#: Earlier incarnations per slave whose sequence numbers are remembered.
MAX_RETIRED_INCARNATIONS = 8


#: A slave's remembered sequence numbers: seq -> whether a predecessor published it
#: (True) rather than this master merging it (False).
Seen = OrderedDict[int, bool]


@dataclass
class _SlaveState:
    last_seq: int = 0
    seen: Seen = field(default_factory=OrderedDict)
    reports: list[int] = field(default_factory=list)  # seqs of this incarnation merged in the interval
    earlier: dict[str, list[int]] = field(default_factory=dict)  # ... and of earlier incarnations
    missing: list[int] = field(default_factory=list)
    missing_count: int = 0
    totals: dict[str, Any] = field(default_factory=dict)
    last_report_ns: int = 0
    merged: int = 0  # reports merged, ever
    gap_ns: int = 0  # capture gaps the slave reported (its restarts), ever
    incarnation: str = ""
    # earlier incarnations -> their sequence numbers seen (bounded like ``seen``)
    retired: OrderedDict[str, Seen] = field(default_factory=OrderedDict)
    restarts: int = 0  # restarts without state, ever
    restarted: list[str] = field(default_factory=list)  # new incarnations in this interval


class ReportMerger:
    def __init__(self, *, max_slow: int = 100, seen_window: int = DEFAULT_SEEN_WINDOW) -> None:
        self.max_slow = max_slow
        self.seen_window = seen_window
        self.slaves: dict[str, _SlaveState] = {}
        self.duplicates = 0
        self.merged = 0
        self.rejected = 0
        self.restarts_without_state = 0
        self.duplicates_published_by_predecessor = 0  # of ``duplicates``: offered again after a failover
        self.predecessor_seqs = 0  # slave reports learned as published by the leader (standby)
        self.predecessor_seqs_forgotten = 0  # such marks pushed out of the bounded window
        # Everything merged since ``since_ns`` (checkpointed with the rest): the totals that
        # must equal the servers' own accounting, whatever restarts happened in between.
        self.cumulative: dict[TemplateIdent, TemplateStats] = {}
        self.cumulative_totals: dict[str, Any] = {}
        self.since_ns = 0
        self._reset()

    def _reset(self) -> None:
        self.templates: dict[TemplateIdent, TemplateStats] = {}
        self.logins: dict[tuple[str, str, str], LoginStats] = {}
        self.slow = SlowSamples(self.max_slow)
        self.totals: dict[str, Any] = {}
        self.capture: dict[str, Any] = {}
        self.heartbeat: dict[str, dict[str, Any]] = {}  # server -> the latest state reported
        # Per (server, db, user, key) and slave: [calls, latency sum µs, errors] (the per-slave breakdown).
        self.by_slave: dict[TemplateIdent, dict[str, list[int]]] = {}
        for state in self.slaves.values():
            state.reports = []
            state.earlier = {}
            state.missing = []
            state.missing_count = 0
            state.totals = {}
            state.restarted = []

    def add(self, report: Mapping[str, Any], texts: Mapping[str, str] | None = None) -> str:
        """Merge one slave report; returns "merged", "duplicate" or "rejected"."""
        try:
            check_interval_report(report)
            node = str(report["node"])
            seq = int(report["seq"])
            entries = [TemplateStats.from_json(entry) for entry in report.get("templates", ())]
            samples = [SlowQuery.from_json(sample) for sample in report.get("slow", ())]
            logins = [LoginStats.from_json(entry) for entry in report.get("logins", ())]
            end_ns = int(report["interval"]["end_ns"])
            incarnation = report.get("incarnation", "")
            if not isinstance(incarnation, str):
                raise TypeError("incarnation")
        except (KeyError, TypeError, ValueError, SchemaError):
            self.rejected += 1
            return "rejected"
        state = self.slaves.get(node)
        if state is None:
            state = self.slaves[node] = _SlaveState(incarnation=incarnation)
        if incarnation in state.retired:
            # A late report of an earlier incarnation (replayed from a spool): merged once.
            seen = state.retired[incarnation]
            if seq in seen:
                return self._duplicate(seen[seq])
            self._remember(seen, seq, False)
            state.earlier.setdefault(incarnation, []).append(seq)
        else:
            if incarnation != state.incarnation:
                self._restarted(node, state, incarnation)
            if seq in state.seen:
                return self._duplicate(state.seen[seq])
            if state.seen and seq <= state.last_seq - self.seen_window:
                return self._duplicate(False)
            if state.last_seq and seq > state.last_seq + 1:
                gap = range(state.last_seq + 1, seq)
                state.missing_count += len(gap)
                room = MAX_MISSING_LISTED - len(state.missing)
                state.missing.extend(list(gap)[: max(0, room)])
            self._remember(state.seen, seq, False)
            state.last_seq = max(state.last_seq, seq)
            state.reports.append(seq)
        state.last_report_ns = end_ns
        state.merged += 1
        state.gap_ns += int(report.get("capture", {}).get("capture_gap_ns", 0))
        if texts:
            for entry in entries:
                if not entry.template:
                    entry.template = texts.get(entry.key, "")
        merge_templates(self.templates, entries)
        for entry in entries:
            slot = self.by_slave.setdefault(entry.ident, {}).setdefault(node, [0, 0, 0])
            slot[0] += entry.count
            slot[1] += entry.latency_sum
            slot[2] += entry.error_count
        merge_templates(self.cumulative, entries)
        merge_logins(self.logins, logins)
        merge_totals(self.cumulative_totals, report.get("totals", {}))
        if not self.since_ns:
            self.since_ns = int(report["interval"].get("start_ns", end_ns))
        self.slow.merge(samples, int(report.get("slow_dropped", 0)))
        merge_totals(self.totals, report.get("totals", {}))
        merge_totals(state.totals, report.get("totals", {}))
        add_capture(self.capture, {k: v for k, v in report.get("capture", {}).items() if k != "connections_active"})
        for server, state in dict(report.get("heartbeat", {})).items():
            if isinstance(state, dict):
                self.heartbeat[str(server)] = {**state, "node": node}
        self.merged += 1
        return "merged"

    def _duplicate(self, by_predecessor: bool) -> str:
        self.duplicates += 1
        if by_predecessor:
            self.duplicates_published_by_predecessor += 1
        return "duplicate"

    def _remember(self, seen: Seen, seq: int, by_predecessor: bool) -> None:
        """Remember ``seq`` in a bounded window (a predecessor's mark is never undone)."""
        seen[seq] = by_predecessor or seen.get(seq, False)
        while len(seen) > self.seen_window:
            _, marked = seen.popitem(last=False)
            self.predecessor_seqs_forgotten += marked

    def _retire(self, state: _SlaveState, incarnation: str) -> None:
        """``incarnation`` is the slave's current one now; the old one's seqs are kept."""
        state.retired[state.incarnation] = state.seen
        if state.reports:
            state.earlier.setdefault(state.incarnation, []).extend(state.reports)
            state.reports = []
        while len(state.retired) > MAX_RETIRED_INCARNATIONS:
            _, seen = state.retired.popitem(last=False)
            self.predecessor_seqs_forgotten += sum(seen.values())
        state.retired.pop(incarnation, None)
        state.incarnation = incarnation
        state.seen = OrderedDict()
        state.last_seq = 0

    def learn_published(self, node: str, incarnation: str, seqs: list[int], *, current: bool = True) -> None:
        """A standby's lesson from the leader's feed: the leader published these reports of
        ``node`` (``current``: its latest incarnation, as a merged report's ``seqs`` say).
        Should this node lead next, the slave may offer them again: they are duplicates."""
        state = self.slaves.get(node)
        if state is None:
            state = self.slaves[node] = _SlaveState(incarnation=incarnation)
        if incarnation == state.incarnation:
            seen = state.seen
            state.last_seq = max([state.last_seq, *seqs])
        elif incarnation in state.retired:
            seen = state.retired[incarnation]
        elif current:
            self._retire(state, incarnation)  # restarted: the leader counted and showed it
            seen = state.seen
            state.last_seq = max([0, *seqs])
        else:
            seen = state.retired[incarnation] = OrderedDict()
        for seq in seqs:
            self.predecessor_seqs += 1
            self._remember(seen, seq, True)

    def successor(self) -> ReportMerger:
        """A merger for a new term of this node as master: nothing of its own earlier
        merges (unacknowledged, the slaves offer them again and they are merged afresh),
        only what it learned a predecessor published."""
        merger = ReportMerger(max_slow=self.max_slow, seen_window=self.seen_window)
        merger.predecessor_seqs = self.predecessor_seqs
        merger.predecessor_seqs_forgotten = self.predecessor_seqs_forgotten
        for node, state in self.slaves.items():
            seen = _marked(state.seen)
            retired = OrderedDict((inc, marks) for inc, seqs in state.retired.items() if (marks := _marked(seqs)))
            if seen or retired:
                merger.slaves[node] = _SlaveState(
                    last_seq=max(seen, default=0), seen=seen, incarnation=state.incarnation, retired=retired
                )
        return merger

    def _restarted(self, node: str, state: _SlaveState, incarnation: str) -> None:
        """``node`` reports under a new incarnation: it lost its state. Its numbering
        starts again; the old incarnation's sequence numbers are kept for late replays."""
        self._retire(state, incarnation)
        state.restarts += 1
        state.restarted.append(incarnation)
        self.restarts_without_state += 1
        log.warning(
            "slave %s restarted without its state (new incarnation %s); its reports are merged", node, incarnation
        )

    def drain(
        self,
        *,
        node: str,
        role: str,
        seq: int,
        epoch: int,
        start_ns: int,
        incarnation: str = "",
        end_ns: int,
        expected: list[str],
        states: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """The cluster report of the interval that ends; ``expected`` lists the slaves that
        should have reported (their state, if known, from ``states``)."""
        slaves = []
        for name in sorted(set(expected) | {n for n, s in self.slaves.items() if s.reports or s.earlier}):
            state = self.slaves.get(name, _SlaveState())
            slaves.append(
                {
                    "node": name,
                    "state": (states or {}).get(name, "reporting" if state.reports or state.earlier else "silent"),
                    "seqs": list(state.reports),  # of ``incarnation``
                    "earlier_seqs": {inc: list(seqs) for inc, seqs in state.earlier.items()},
                    "missing_seqs": list(state.missing),
                    "missing_count": state.missing_count,
                    "totals": dict(state.totals),
                    "incarnation": state.incarnation,
                    "restarted_without_state": list(state.restarted),
                    "restarts_without_state": state.restarts,
                }
            )
        ordered = sorted(self.templates.values(), key=lambda t: (-t.latency_sum, t.key))
        totals = dict(self.totals) or {"queries": 0, "commands": 0, "errors": 0, "coverage": 1.0}
        for name in ("queries", "commands", "errors", "packets", "bytes", "gaps", "resyncs"):
            totals.setdefault(name, 0)
        for name in ("encrypted_conns", "unparsed_packets", "responses_lost", "unread_exchanges", "incomplete"):
            totals.setdefault(name, 0)
        report = {
            "schema": SCHEMA_VERSION,
            "kind": "interval",
            "node": node,
            "role": role,
            "seq": seq,
            "incarnation": incarnation,
            "epoch": epoch,
            "interval": {"start_ns": start_ns, "end_ns": end_ns},
            "totals": totals,
            "capture": self.capture,
            "templates": [self._with_slaves(t) for t in ordered],
            "logins": ordered_logins(self.logins.values()),
            "slow": [s.to_json() for s in self.slow.worst_first()],
            "slow_dropped": self.slow.dropped,
            "slaves": slaves,
            "missing": [
                {"node": s["node"], "seqs": s["missing_seqs"], "count": s["missing_count"]}
                for s in slaves
                if s["missing_count"] or s["state"] != "reporting"
            ],
            "duplicates_dropped": self.duplicates,
            "duplicates_published_by_predecessor": self.duplicates_published_by_predecessor,
            "restarts_without_state": self.restarts_without_state,
            "heartbeat": self.heartbeat,
        }
        self._reset()
        return report

    def _with_slaves(self, stats: TemplateStats) -> dict[str, Any]:
        """A template's wire form with its per-slave breakdown (``slaves``)."""
        entry = stats.to_json()
        entry["slaves"] = {
            node: {"count": n, "latency_us_sum": total, "errors": errors}
            for node, (n, total, errors) in sorted(self.by_slave.get(stats.ident, {}).items())
        }
        return entry

    def forget(self, node: str) -> None:
        self.slaves.pop(node, None)

    # -- checkpoints ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to resume exactly: the interval so far, the cumulative totals
        and, per slave, the sequence numbers already merged."""

        def templates(stats: dict[TemplateIdent, TemplateStats]) -> list[dict[str, Any]]:
            return [t.to_json(quantiles=False) for t in stats.values()]

        return {
            "interval": {
                "templates": templates(self.templates),
                "logins": [entry.to_json() for entry in self.logins.values()],
                "slow": [s.to_json() for s in self.slow.worst_first()],
                "slow_dropped": self.slow.dropped,
                "totals": self.totals,
                "capture": self.capture,
                "heartbeat": self.heartbeat,
                "by_slave": [[*ident, slaves] for ident, slaves in self.by_slave.items()],
            },
            "cumulative": {
                "templates": templates(self.cumulative),
                "totals": self.cumulative_totals,
                "since_ns": self.since_ns,
            },
            "slaves": {
                name: {
                    "last_seq": state.last_seq,
                    "seen": list(state.seen),
                    "published_by_predecessor": [seq for seq, marked in state.seen.items() if marked],
                    "reports": state.reports,
                    "earlier": state.earlier,
                    "missing": state.missing,
                    "missing_count": state.missing_count,
                    "totals": state.totals,
                    "last_report_ns": state.last_report_ns,
                    "merged": state.merged,
                    "gap_ns": state.gap_ns,
                    "incarnation": state.incarnation,
                    "retired": {inc: list(seqs) for inc, seqs in state.retired.items()},
                    "retired_published_by_predecessor": {
                        inc: [seq for seq, marked in seqs.items() if marked] for inc, seqs in state.retired.items()
                    },
                    "restarts": state.restarts,
                    "restarted": state.restarted,
                }
                for name, state in self.slaves.items()
            },
            "counters": {
                "duplicates": self.duplicates,
                "merged": self.merged,
                "rejected": self.rejected,
                "restarts_without_state": self.restarts_without_state,
                "duplicates_published_by_predecessor": self.duplicates_published_by_predecessor,
                "predecessor_seqs": self.predecessor_seqs,
                "predecessor_seqs_forgotten": self.predecessor_seqs_forgotten,
            },
        }

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        interval = snapshot["interval"]
        self.templates = {}
        merge_templates(self.templates, [TemplateStats.from_json(t) for t in interval["templates"]])
        self.logins = {}
        merge_logins(self.logins, [LoginStats.from_json(entry) for entry in interval.get("logins", ())])
        self.slow = SlowSamples(self.max_slow)
        self.slow.merge([SlowQuery.from_json(s) for s in interval["slow"]], int(interval["slow_dropped"]))
        self.totals = dict(interval["totals"])
        self.capture = dict(interval["capture"])
        self.heartbeat = dict(interval.get("heartbeat", {}))
        self.by_slave = {}
        for row in interval.get("by_slave", []):
            *ident, slaves = row
            if len(ident) == 3:  # a checkpoint from before templates were split by user
                ident.insert(2, "")
            server, db, user, key = (str(part) for part in ident)
            self.by_slave[(server, db, user, key)] = {
                str(node): [int(v) for v in slot] for node, slot in slaves.items()
            }
        cumulative = snapshot["cumulative"]
        self.cumulative = {}
        merge_templates(self.cumulative, [TemplateStats.from_json(t) for t in cumulative["templates"]])
        self.cumulative_totals = dict(cumulative["totals"])
        self.since_ns = int(cumulative["since_ns"])
        self.slaves = {}
        for name, data in snapshot["slaves"].items():
            state = _SlaveState(
                last_seq=int(data["last_seq"]),
                reports=list(data["reports"]),
                earlier={str(inc): [int(seq) for seq in seqs] for inc, seqs in dict(data.get("earlier", {})).items()},
                missing=list(data["missing"]),
                missing_count=int(data["missing_count"]),
                totals=dict(data["totals"]),
                last_report_ns=int(data["last_report_ns"]),
                merged=int(data.get("merged", 0)),
                gap_ns=int(data.get("gap_ns", 0)),
                incarnation=str(data.get("incarnation", "")),
                restarts=int(data.get("restarts", 0)),
                restarted=[str(i) for i in data.get("restarted", [])],
            )
            state.seen = _restored(data["seen"], data.get("published_by_predecessor", ()))
            retired_marked = dict(data.get("retired_published_by_predecessor", {}))
            for inc, seqs in dict(data.get("retired", {})).items():
                state.retired[str(inc)] = _restored(seqs, retired_marked.get(inc, ()))
            self.slaves[name] = state
        counters = snapshot.get("counters", {})
        self.duplicates = int(counters.get("duplicates", 0))
        self.merged = int(counters.get("merged", 0))
        self.rejected = int(counters.get("rejected", 0))
        self.restarts_without_state = int(counters.get("restarts_without_state", 0))
        self.duplicates_published_by_predecessor = int(counters.get("duplicates_published_by_predecessor", 0))
        self.predecessor_seqs = int(counters.get("predecessor_seqs", 0))
        self.predecessor_seqs_forgotten = int(counters.get("predecessor_seqs_forgotten", 0))

    def cumulative_report(self) -> dict[str, Any]:
        ordered = sorted(self.cumulative.values(), key=lambda t: (-t.latency_sum, t.key))
        return {
            "since_ns": self.since_ns,
            "totals": self.cumulative_totals,
            "templates": [t.to_json() for t in ordered],
            "slaves": {
                name: {
                    "last_seq": s.last_seq,
                    "merged": s.merged,
                    "gap_ns": s.gap_ns,
                    "incarnation": s.incarnation,
                    "restarts_without_state": s.restarts,
                }
                for name, s in self.slaves.items()
            },
            "duplicates_dropped": self.duplicates,
            "duplicates_published_by_predecessor": self.duplicates_published_by_predecessor,
            "restarts_without_state": self.restarts_without_state,
        }


def _marked(seen: Seen) -> Seen:
    """Only the seqs a predecessor published, as ``successor`` keeps them."""
    return OrderedDict((seq, True) for seq, marked in seen.items() if marked)


def _restored(seqs: Any, marked: Any) -> Seen:
    """A checkpointed window of seqs, with the predecessor's marks put back."""
    published = {int(seq) for seq in marked}
    return OrderedDict((int(seq), int(seq) in published) for seq in seqs)
