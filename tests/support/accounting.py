"""The server's own accounting of a workload, as the reference the probe's report must equal.

``Accounting`` reads performance_schema over one connection opened before the workload:
per template (our key) and command, the statements the server ran, their errors by code,
rows sent and rows affected. Text statements come from
``events_statements_history_long`` (top level only: statements nested in stored programs
never crossed the wire; their rows are charged to the CALL that sent them). Commands
without SQL text (``statement/com/*``) are charged to our ``administrator command: X``
template, except Prepare and Execute: performance_schema does not say which statement
they ran, so the server's general log (``log_output=TABLE``) names the SQL of each, in
the same order per connection as performance_schema records them.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from probe.mysql import ConversationLimits
from probe.normalize import Normalizer, split_statements, template_key
from tests.support.mariadb import MariaDB

#: What MariaDB answers to an execute of a statement id it does not know.
UNKNOWN_STMT_HANDLER = 1243
UNKNOWN_STMT = "EXECUTE <unknown prepared statement>"
#: Where failed prepares are pooled: the server logs no text for them.
FAILED_PREPARE = "PREPARE <failed>"
#: Our template of a command that carries no SQL.
ADMIN = "administrator command: {}"
#: mysql.general_log.argument is a MEDIUMTEXT: longer texts are cut there.
GENERAL_LOG_ARGUMENT_BYTES = (1 << 24) - 1
#: SQL the probe keeps per statement (its default ``max_query_bytes``).
_SQL_KEPT = ConversationLimits().max_query_bytes
#: Commands without a template of their own in the report (logins).
LOGIN_COMMANDS = frozenset({"Connect"})


@dataclass
class Tally:
    """What one template did: commands by name, errors by code, rows."""

    template: str = ""
    commands: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    rows_sent: int = 0
    rows_affected: int = 0

    def add(self, command: str, errno: int, rows_sent: int, rows_affected: int) -> None:
        self.commands[command] += 1
        if errno:
            self.errors[str(errno)] += 1
        self.rows_sent += rows_sent
        self.rows_affected += rows_affected

    def as_dict(self) -> dict[str, Any]:
        return {
            "commands": dict(sorted(self.commands.items())),
            "errors": dict(sorted(self.errors.items())),
            "rows_sent": self.rows_sent,
            "rows_affected": self.rows_affected,
        }


def logged_execute_of(prepared_sql: str, logged: str) -> bool:
    """Whether the general log's text of an execute comes from ``prepared_sql``.

    MariaDB logs an execute as the prepared text with each ``?`` replaced by its value:
    the pieces between the placeholders appear in order, the first at the start and the
    last at the end (unless the log cut the text: then only what it kept is checked).
    """
    cut = len(logged.encode()) >= GENERAL_LOG_ARGUMENT_BYTES
    pieces = prepared_sql.split("?")
    if len(pieces) == 1:
        return logged == prepared_sql or (cut and prepared_sql.startswith(logged))
    if not logged.startswith(pieces[0]):
        return False
    if cut:
        return True
    if not logged.endswith(pieces[-1]):
        return False
    at = len(pieces[0])
    for piece in pieces[1:-1]:
        found = logged.find(piece, at)
        if found < 0:
            return False
        at = found + len(piece)
    return at <= len(logged) - len(pieces[-1])


class Accounting:
    """The server's own statement accounting, read over one connection opened up front.

    Open it before ``reset()`` and before the capture starts: its own statements then stay
    out of what it reports (TRUNCATEs are filtered, its reads come after the snapshot, and
    ``statements()`` leaves out this connection altogether).
    """

    def __init__(self, server: MariaDB, normalizer: Normalizer | None = None) -> None:
        self.server = server
        self.norm = normalizer or Normalizer()
        self.conn = server.connect(autocommit=True)
        row = self._query(
            "SELECT THREAD_ID, PROCESSLIST_ID FROM performance_schema.threads WHERE PROCESSLIST_ID = CONNECTION_ID()"
        )
        self.thread_id, self.conn_id = int(row[0][0]), int(row[0][1])

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())

    def _status(self) -> Counter[str]:
        rows = self._query(
            "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS"
            " WHERE VARIABLE_NAME IN ('CONNECTIONS', 'ACCESS_DENIED_ERRORS')"
        )
        return Counter({str(name).lower(): int(value) for name, value in rows})

    def logins(self) -> dict[str, int]:
        """Since ``reset()``: connection attempts and logins refused for a bad user or password."""
        delta = self._status()
        delta.subtract(self._status_before)
        return {"connections": delta["connections"], "access_denied": delta["access_denied_errors"]}

    def reset(self) -> None:
        self._status_before = self._status()
        if self._query("SELECT @@general_log")[0][0]:
            self._query("TRUNCATE mysql.general_log")
        for table in (
            "events_statements_summary_by_digest",
            "events_statements_history_long",
            "events_statements_summary_global_by_event_name",
        ):
            self._query(f"TRUNCATE performance_schema.{table}")

    def close(self) -> None:
        self.conn.close()

    def key(self, sql: str) -> str:
        # A statement of a multi-statement query is recorded with the rest of the text.
        return self.norm.normalize(split_statements(sql)[0]).key

    def expectations(self, schema: str | None = None) -> dict[str, list[int]]:
        """Per our template key: [statements, errors] the server accounted.

        Counts come from events_statements_summary_by_digest (read first). Each digest is
        mapped to our template through the SQL texts of its statements in
        events_statements_history_long, which holds every statement since ``reset()``;
        statements nested in stored programs never crossed the wire and are subtracted;
        statements the parser rejected have no digest and are taken from the history.
        """
        schema_filter = f" AND SCHEMA_NAME = '{schema}'" if schema else ""
        summary = self._query(
            "SELECT DIGEST, DIGEST_TEXT, COUNT_STAR, SUM_ERRORS"
            " FROM performance_schema.events_statements_summary_by_digest"
            " WHERE DIGEST IS NOT NULL AND DIGEST_TEXT NOT LIKE 'TRUNCATE `performance_schema`%'" + schema_filter
        )
        history = self._query(
            "SELECT DIGEST, SQL_TEXT, NESTING_EVENT_LEVEL, ERRORS, EVENT_NAME"
            " FROM performance_schema.events_statements_history_long"
            + (f" WHERE CURRENT_SCHEMA = '{schema}'" if schema else "")
        )
        top_keys: dict[str, Counter[str]] = {}
        nested: Counter[str] = Counter()
        nested_errors: Counter[str] = Counter()
        expected: dict[str, list[int]] = {}
        for digest, sql, level, errors, event in history:
            if digest is None:
                if not level and sql is not None and event.startswith("statement/sql/"):
                    entry = expected.setdefault(self.key(sql), [0, 0])
                    entry[0] += 1
                    entry[1] += int(errors)
            elif level:
                nested[digest] += 1
                nested_errors[digest] += int(errors)
            elif sql is not None:
                top_keys.setdefault(digest, Counter())[self.key(sql)] += 1
        for digest, text, count, errors in summary:
            top = int(count) - nested[digest]
            if top <= 0:
                continue
            keys = top_keys.get(digest)
            if not keys:
                raise AssertionError(f"digest {digest} ({text}) has {top} top-level statements but no SQL text")
            if len(keys) > 1:
                raise AssertionError(f"digest {digest} ({text}) maps to several templates: {keys}")
            entry = expected.setdefault(next(iter(keys)), [0, 0])
            entry[0] += top
            entry[1] += int(errors) - nested_errors[digest]
        return expected

    def commands(self) -> dict[str, int]:
        """statement/com/* counts (Prepare, Execute, Ping, ...) since ``reset()``."""
        return {
            name.rsplit("/", 1)[1]: int(n)
            for name, n in self._query(
                "SELECT EVENT_NAME, COUNT_STAR"
                " FROM performance_schema.events_statements_summary_global_by_event_name"
                " WHERE EVENT_NAME LIKE 'statement/com/%' AND COUNT_STAR > 0"
            )
        }

    def statements(self, bulk_affected: dict[str, list[int]] | None = None) -> dict[str, Tally]:
        """Per our template key, every command of every client since ``reset()``.

        performance_schema records 0 rows affected for a bulk execute (MariaDB 10.11), so
        ``bulk_affected`` gives, per prepared SQL, what each of its bulk executes affected
        in order, as the driver read it from the server's OK.

        Needs the server started with ``general_log`` to a table (``log_output=TABLE``)
        to name the statement of each Prepare and Execute. Raises when the history did not
        hold every statement or the general log and performance_schema disagree.
        """
        totals = self._query(
            "SELECT SUM(COUNT_STAR) FROM performance_schema.events_statements_summary_global_by_event_name"
        )
        history = self._query(
            "SELECT THREAD_ID, EVENT_ID, EVENT_NAME, SQL_TEXT, NESTING_EVENT_ID, NESTING_EVENT_LEVEL,"
            " MYSQL_ERRNO, ERRORS, ROWS_SENT, ROWS_AFFECTED"
            " FROM performance_schema.events_statements_history_long ORDER BY THREAD_ID, EVENT_ID"
        )
        summarized = int(totals[0][0] or 0)
        if len(history) < summarized:
            raise AssertionError(f"history_long holds {len(history)} of {summarized} statements: enlarge it")
        nested_rows: Counter[tuple[int, int]] = Counter()
        per_thread: dict[int, list[Event]] = defaultdict(list)
        for thread, event_id, name, sql, parent, level, errno, errors, sent, affected in history:
            if level:
                if parent is not None:
                    nested_rows[(int(thread), int(parent))] += int(sent)
            elif int(thread) != self.thread_id:
                error = int(errno or 0) if int(errors) else 0
                per_thread[int(thread)].append(Event(int(event_id), name, sql, error, int(sent), int(affected)))
        bulk = {sql: list(counts) for sql, counts in (bulk_affected or {}).items()}
        result: dict[str, Tally] = {}
        for thread, statement_sql in self._pair(per_thread).items():
            for event in per_thread[thread]:
                _, kind, command = event.name.split("/", 2)
                if kind == "sql":
                    if event.sql is None:
                        raise AssertionError(f"thread {thread}: {event.name} without SQL text")
                    template = self.norm.normalize(split_statements(event.sql)[0])
                    key, text, command = template.key, template.text, "Query"
                elif command == "Prepare" and event.error:
                    key, text = template_key(FAILED_PREPARE), FAILED_PREPARE
                elif event.event_id in statement_sql:
                    # the probe forms a template from the text it keeps: the same prefix
                    kept = statement_sql[event.event_id].encode()[:_SQL_KEPT].decode(errors="ignore")
                    inner = self.norm.normalize(kept)
                    text = "PREPARE " + inner.text if command == "Prepare" else inner.text
                    key = template_key(text)
                elif command in STATEMENT_COMMANDS:
                    key, text = template_key(UNKNOWN_STMT), UNKNOWN_STMT
                else:
                    text = ADMIN.format(command)
                    key = template_key(text)
                tally = result.setdefault(key, Tally(text))
                rows_sent = event.rows_sent + nested_rows[(thread, event.event_id)]
                affected = event.rows_affected
                if command == "Bulk_execute" and not affected and not event.error:
                    counts = bulk.get(statement_sql[event.event_id])
                    if not counts:
                        raise AssertionError(f"no rows affected reported for {statement_sql[event.event_id]!r}")
                    affected = counts.pop(0)
                tally.add(command, event.error, rows_sent, affected)
        return result

    def _general_log(self) -> dict[int, list[tuple[str, str]]]:
        """Per connection id: (command, SQL) of each COM_STMT_PREPARE and _EXECUTE, in order.

        The log also writes a Prepare or Execute line right after the Query line of an SQL
        ``PREPARE`` or ``EXECUTE``; those are left out.
        """
        rows = self._query(
            "SELECT thread_id, command_type, CONVERT(argument USING utf8mb4) FROM mysql.general_log"
            " WHERE command_type IN ('Prepare', 'Execute', 'Query')"
        )
        log: dict[int, list[tuple[str, str]]] = defaultdict(list)
        previous: dict[int, str] = {}
        for conn, command, argument in rows:
            conn, command, argument = int(conn), str(command), str(argument)
            after_sql_statement = _SQL_PREPARED.match(previous.get(conn, ""))
            previous[conn] = argument if command == "Query" else ""
            if conn != self.conn_id and command != "Query" and not after_sql_statement:
                log[conn].append((command, argument))
        return log

    def _pair(self, per_thread: dict[int, list[Event]]) -> dict[int, dict[int, str]]:
        """Per thread: the prepared SQL each of its Prepare and Execute events ran, by event id.

        Threads and connection ids are both handed out in connection order, so the n-th
        thread that prepared anything is the n-th connection the general log saw preparing.
        The general log has one entry per Prepare and per Execute, in order, except that a
        failed prepare and an execute of an unknown statement id are not logged and a bulk
        execute is logged once per row (or once), with its text unexpanded.
        """
        log = self._general_log()
        threads = [t for t, events in sorted(per_thread.items()) if any(e.name in _PREPARED for e in events)]
        conns = sorted(c for c, entries in log.items() if any(cmd == "Prepare" for cmd, _ in entries))
        if len(threads) != len(conns):
            raise AssertionError(f"{len(threads)} threads prepared statements, the general log shows {len(conns)}")
        paired: dict[int, dict[int, str]] = {t: {} for t in per_thread}
        for thread, conn in zip(threads, conns, strict=True):
            entries = log[conn]
            at = 0
            open_sql: list[str] = []
            for event in per_thread[thread]:
                command = event.name.rsplit("/", 1)[1]
                unlogged = command == "Prepare" or event.error == UNKNOWN_STMT_HANDLER
                if event.name not in _PREPARED or (event.error and unlogged):
                    continue  # neither a failed prepare nor an execute of an unknown id is logged
                if at >= len(entries):
                    raise AssertionError(f"thread {thread}: the general log of connection {conn} ends before {command}")
                logged, argument = entries[at]
                at += 1
                if (logged == "Prepare") != (command == "Prepare"):
                    raise AssertionError(f"thread {thread} event {event.event_id}: {command} logged as {logged}")
                if logged == "Prepare":
                    open_sql.append(argument)
                    paired[thread][event.event_id] = argument
                    continue
                for prepared in reversed(open_sql):
                    if logged_execute_of(prepared, argument):
                        paired[thread][event.event_id] = prepared
                        break
                else:
                    raise AssertionError(f"execute {argument[:200]!r} matches no statement prepared before it")
                if command == "Bulk_execute":
                    while at < len(entries) and entries[at] == ("Execute", paired[thread][event.event_id]):
                        at += 1
            if at != len(entries):
                raise AssertionError(f"connection {conn}: {len(entries) - at} general log entries left unmatched")
        return paired


@dataclass
class Event:
    """One top-level statement event of performance_schema."""

    event_id: int
    name: str
    sql: str | None
    error: int
    rows_sent: int
    rows_affected: int


_SQL_PREPARED = re.compile(r"\s*(?:PREPARE|EXECUTE)\s", re.IGNORECASE)
_PREPARED = frozenset({"statement/com/Prepare", "statement/com/Execute", "statement/com/Bulk_execute"})
#: performance_schema's names of the commands that run a prepared statement.
STATEMENT_COMMANDS = frozenset({"Execute", "Bulk_execute"})
