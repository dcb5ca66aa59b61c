"""Per-interval aggregation of completed commands: events in, report parts out.

Owns the per (server, db, user, template key) statistics of the current interval, the slow
samples (bounded, worst first, with raw SQL or a redacted form) and the interval's command
counters. Bounded: at most ``max_templates`` entries per interval; statements of further
templates are still counted, in one overflow entry, and ``templates_overflowed`` says so.
Sans-I/O: it never reads a clock, the caller says when an interval ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from message.logins import LoginStats, LoginTable
from message.report import OVERFLOW_KEY, OVERFLOW_TEMPLATE, SlowQuery, SlowSamples, TemplateIdent, TemplateStats
from probe.mysql.constants import SERVER_QUERY_NO_GOOD_INDEX_USED, SERVER_QUERY_NO_INDEX_USED
from probe.mysql.events import CommandCompleted, LoginFinished, ServerError
from probe.redact import redact_message

#: Default bound on templates per interval and on slow samples per interval.
DEFAULT_MAX_TEMPLATES = 5000
DEFAULT_MAX_SLOW = 100


@dataclass
class Interval:
    """What one interval produced, ready to merge or to serialise."""

    templates: list[TemplateStats]
    slow: list[SlowQuery]
    slow_dropped: int
    counters: dict[str, int]
    logins: list[LoginStats] = field(default_factory=list)


class Aggregator:
    def __init__(
        self,
        *,
        slow_threshold_us: int = 1_000_000,
        max_slow: int = DEFAULT_MAX_SLOW,
        max_templates: int = DEFAULT_MAX_TEMPLATES,
        redact: bool = False,
    ) -> None:
        self.slow_threshold_us = slow_threshold_us
        self.max_slow = max_slow
        self.max_templates = max_templates
        self.redact = redact
        self._reset()

    def _reset(self) -> None:
        self.templates: dict[TemplateIdent, TemplateStats] = {}
        self.slow = SlowSamples(self.max_slow)
        self.commands = 0
        self.errors = 0
        self.incomplete = 0
        self.templates_overflowed = 0
        self.logins = LoginTable()

    def add(self, event: CommandCompleted) -> None:
        (
            command,
            key,
            template,
            sql,
            params,
            db,
            user,
            client,
            server,
            conn_id,
            start_ns,
            end_ns,
            latency,
            ttfb,
            error_code,
            sqlstate,
            error_message,
            rows_sent,
            rows_affected,
            bytes_in,
            bytes_out,
            status,
            warnings,
            complete,
        ) = event
        ident = (server, db, user, key)
        stats = self.templates.get(ident)
        if stats is None:
            if len(self.templates) >= self.max_templates:
                self.templates_overflowed += 1
                ident = (server, db, "", OVERFLOW_KEY)
                stats = self.templates.get(ident)
                if stats is None:
                    stats = self.templates[ident] = TemplateStats(server, db, OVERFLOW_KEY, OVERFLOW_TEMPLATE)
            else:
                stats = self.templates[ident] = TemplateStats(server, db, key, template, user)
        if stats.count:
            if latency < stats.latency_min:
                stats.latency_min = latency
            elif latency > stats.latency_max:
                stats.latency_max = latency
            # Statements end in another order than they start (connections interleave):
            # first_seen is the earliest start, whatever the order events come in.
            if start_ns < stats.first_seen_ns:
                stats.first_seen_ns = start_ns
        else:
            stats.latency_min = stats.latency_max = latency
            stats.first_seen_ns = start_ns
        stats.count += 1
        commands = stats.commands
        commands[command] = commands.get(command, 0) + 1
        stats.latency_sum += latency
        stats.ttfb_sum += ttfb
        stats.sketch.add(latency)
        stats.rows_sent += rows_sent
        stats.rows_affected += rows_affected
        stats.bytes_in += bytes_in
        stats.bytes_out += bytes_out
        if end_ns > stats.last_seen_ns:
            stats.last_seen_ns = end_ns
        if status & SERVER_QUERY_NO_INDEX_USED:
            stats.no_index_used += 1
        if status & SERVER_QUERY_NO_GOOD_INDEX_USED:
            stats.no_good_index_used += 1
        if warnings:
            stats.warnings += warnings
        self.commands += 1
        if not complete:
            stats.incomplete += 1
            self.incomplete += 1
        if error_code:
            code = str(error_code)
            stats.errors[code] = stats.errors.get(code, 0) + 1
            self.errors += 1
        if latency >= self.slow_threshold_us and self.slow.would_keep(latency):
            self.slow.offer(
                SlowQuery(
                    latency_us=latency,
                    start_ns=start_ns,
                    key=key,
                    sql=template if self.redact else sql,
                    params=None if self.redact or params is None else list(params),
                    db=db,
                    user=user,
                    client=client,
                    server=server,
                    conn_id=conn_id,
                    error={
                        "code": error_code,
                        "sqlstate": sqlstate,
                        "message": redact_message(error_message) if self.redact else error_message,
                    }
                    if error_code
                    else None,
                    rows_sent=rows_sent,
                    rows_affected=rows_affected,
                )
            )
        elif latency >= self.slow_threshold_us:
            self.slow.dropped += 1

    def fold(self, rows: list[tuple[Any, ...]]) -> None:
        """Statements the compiled path counted (``probe._cflows.InOrder.fold``), each row
        the sums of ``add`` over complete, fast commands of one name ("Query", "Execute")
        and (server, db, user, key) that already has its entry this interval, those answered
        by an ERR counted by code (``{str(code): count}``, the last field): merged into that
        entry as any other partial statistics are (``TemplateStats.merge``)."""
        for (
            server,
            db,
            user,
            key,
            command,
            count,
            latency_sum,
            latency_min,
            latency_max,
            ttfb_sum,
            first_ns,
            last_ns,
            rows_sent,
            rows_affected,
            bytes_in,
            bytes_out,
            no_index,
            no_good_index,
            warnings,
            zero,
            bins,
            errors,
        ) in rows:
            stats = self.templates[(server, db, user, key)]
            part = TemplateStats(server, db, key, stats.template, user)
            part.count = count
            part.commands[command] = count
            part.latency_sum, part.latency_min, part.latency_max = latency_sum, latency_min, latency_max
            part.ttfb_sum = ttfb_sum
            part.first_seen_ns, part.last_seen_ns = first_ns, last_ns
            part.sketch.zero, part.sketch.bins = zero, bins
            part.rows_sent, part.rows_affected = rows_sent, rows_affected
            part.bytes_in, part.bytes_out = bytes_in, bytes_out
            part.no_index_used, part.no_good_index_used = no_index, no_good_index
            part.warnings = warnings
            part.errors = errors
            stats.merge(part)
            self.commands += count
            self.errors += sum(errors.values())

    def add_login(self, event: LoginFinished) -> None:
        self.logins.login(event.ts_ns, event.server, event.user, event.client, event.error_code)

    def add_server_error(self, event: ServerError) -> None:
        self.logins.session_error(event.ts_ns, event.server, event.user, event.client, event.error_code)

    def drain(self) -> Interval:
        """Everything of the interval that just ended; the next one starts empty."""
        interval = Interval(
            templates=list(self.templates.values()),
            slow=self.slow.worst_first(),
            slow_dropped=self.slow.dropped,
            counters={
                "commands": self.commands,
                "errors": self.errors,
                "incomplete": self.incomplete,
                "templates_overflowed": self.templates_overflowed,
                "logins_overflowed": self.logins.overflowed,
            },
            logins=list(self.logins.entries.values()),
        )
        self._reset()
        return interval
