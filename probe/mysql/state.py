"""The state every part of a watched MySQL connection shares, and how outcomes leave it.

Owns the connection phases and response-parser states (the names the other modules of
``probe.mysql`` switch on), the per-connection limits, the request and prepared-statement
records, and ``ConnectionState``: the fields of one connection plus the few steps every
phase ends in (emit a completed command, lose a response, count garbage and resync, mark
the connection encrypted). The phases build on it one module each, as h11 splits its
protocol: ``handshake`` (greeting, login), ``prepared`` (statement ids and templates),
``requests`` (client stream), ``responses`` (server stream); ``conversation`` is the
public face. Which reply each command expects is data, in ``constants.COMMANDS``.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any

from probe import native
from probe.mysql import packets as p
from probe.mysql.compression import Inflater
from probe.mysql.events import (
    TO_CLIENT,
    TO_SERVER,
    CommandCompleted,
    ConnectionEncrypted,
    Event,
    Garbage,
    ResponseLost,
    Resynced,
)
from probe.normalize import Normalizer, Template, template_key

# Connection phases.
UNSYNCED = 0  # attached mid-stream: waiting for a command boundary
GREETING = 1  # SYN seen: waiting for the server greeting
LOGIN = 2  # waiting for the client's handshake response
AUTH = 3  # authentication exchange until OK or ERR
COMMANDS = 4
ENCRYPTED = 5  # TLS: counted, not parsed
REPLICATION = 6  # binlog stream: not parsed
CLOSED = 7

# Response parser states.
R_FIRST = 0
R_COLDEFS = 1
R_COLS_END = 2
R_ROWS = 3
R_PREP_PARAMS = 4
R_PREP_PARAMS_END = 5
R_PREP_COLS = 6
R_PREP_COLS_END = 7
R_INFILE = 8
R_AUTH = 9
R_FIELDS = 10
R_OPAQUE = 11

_USE = re.compile(r"\s*USE\s+`?([^`\s;]+)`?", re.IGNORECASE)
TLS_RECORD = (0x14, 0x15, 0x16, 0x17)
UNKNOWN_STMT = "EXECUTE <unknown prepared statement>"
#: Bytes a pending request costs besides its own (the ``Request`` object and its fields).
PENDING_OVERHEAD = 384  # measured: ~410 bytes per pending COM_STMT_EXECUTE of two parameters
LAST_PREPARED = 0xFFFFFFFF  # MariaDB statement id: "the statement of the last PREPARE"
CONNECT = "Connect"
_new_event = tuple.__new__


@dataclass(frozen=True)
class ConversationLimits:
    """Per-connection bounds; ``LimitReached``-style counters say when one bites."""

    max_query_bytes: int = 1 << 20
    """SQL bytes kept per statement; longer text is cut (the template still forms)."""
    max_prepared: int = 1024
    """Prepared statements remembered per connection; the oldest is forgotten first."""
    max_pending_bytes: int = 16 << 20
    """Memory of requests awaiting a response (pipelined batches). Each costs its kept
    request bytes (SQL text, parameters) plus ``PENDING_OVERHEAD``; beyond the bound the
    oldest is dropped as lost and ``max_pending_bytes`` is counted. The default holds
    ~40,000 pipelined executes: a JDBC or bulk batch of thousands fits. It is a memory
    guard, not an operating point: responses that still come for dropped requests are
    paired by position with the requests after them (same template in a batch)."""
    max_packet_buffer: int = 1 << 20
    """Bytes buffered to complete a packet whose content is needed."""
    max_long_data: int = 4096
    """Bytes of COM_STMT_SEND_LONG_DATA kept per parameter, for samples."""


#: Bytes of prepared-statement SQL one worker keeps over all its connections.
DEFAULT_MAX_PREPARED_BYTES = 64 << 20


class PreparedBudget:
    """The SQL bytes of the prepared statements all connections of one worker remember,
    shared by their conversations: past ``max_bytes`` a newly prepared statement keeps
    only its template (executes still get it; samples show the template instead of the
    SQL) and ``max_prepared_bytes`` is counted. A statement gives its bytes back when it
    is closed, evicted, reset or its connection ends."""

    __slots__ = ("max_bytes", "used")

    def __init__(self, max_bytes: int = DEFAULT_MAX_PREPARED_BYTES) -> None:
        self.max_bytes = max_bytes
        self.used = 0


class PreparedStatement:
    """A statement prepared on the connection: known from its COM_STMT_PREPARE request,
    given an id by the server's COM_STMT_PREPARE_OK (``stmt_id``), or refused (``failed``)."""

    __slots__ = ("charged", "complete", "failed", "long_data", "params", "sql", "stmt_id", "template", "types")

    def __init__(self, template: Template, sql: str, params: int, complete: bool, stmt_id: int | None = None) -> None:
        self.template = template
        self.sql = sql
        self.params = params
        self.types: list[int] | None = None
        self.long_data: dict[int, bytes] = {}
        self.complete = complete
        self.stmt_id = stmt_id
        self.failed = False
        self.charged = 0  # bytes of ``sql`` counted against the worker's PreparedBudget


class Request:
    """A request awaiting (or receiving) its response.

    No ``__slots__``: one is built per request, and class-level defaults let ``__init__``
    set only what every request has (3x cheaper than setting 23 slots).
    """

    state = R_FIRST
    first_ns = 0
    bytes_out = 0
    rows = 0
    affected = 0
    remaining = 0
    remaining_columns = 0
    sql = ""
    template: Template | None = None
    params: tuple[Any, ...] | None = None
    pieces: list[str] | None = None
    piece = 0
    prepared: Any = None
    session_arg: Any = None
    complete = True
    cursor = False
    cost = 0  # bytes it counts against ``max_pending_bytes`` while pending

    def __init__(
        self,
        code: int,
        name: str,
        reply: int,
        start_ns: int,
        req_end: int,
        resp_start: int | None,
        size: int,
        db: str,
    ) -> None:
        self.code = code
        self.db = db  # the default database the statement ran in
        self.name = name
        self.reply = reply
        self.start_ns = start_ns
        self.req_end = req_end
        self.resp_start = resp_start
        self.bytes_in = size


_ADMIN_TEMPLATES: dict[str, Template] = {}


def admin_template(name: str) -> Template:
    template = _ADMIN_TEMPLATES.get(name)
    if template is None:
        text = f"administrator command: {name}"
        template = _ADMIN_TEMPLATES[name] = Template(template_key(text), text)
    return template


def used_db(sql: str) -> str | None:
    match = _USE.match(sql)
    return match.group(1) if match is not None else None


class ConnectionState:
    """Fields of one client connection and the outcomes every phase shares.

    Every field is a slot, set in ``__init__`` (so none is ever unset on a constructed
    object), and the phase classes built on this one add none: a conversation has no
    ``__dict__``. probe/_cexchange.c reads and writes some of these slots at the offsets of
    their member descriptors (found once, at ``InOrder.attach``). ``__slots__`` lists every
    field (tests that compare two engines walk it).
    """

    # Sorted (as CPython lays them out); what each holds is said where __init__ sets it.
    __slots__ = (
        "_c_buf",
        "_c_desync",
        "_c_inflate",
        "_c_off",
        "_c_packet_end",
        "_c_part",
        "_c_part_cut",
        "_c_part_seq",
        "_c_part_size",
        "_c_skip",
        "_c_skip_last",
        "_events",
        "_login",
        "_s_buf",
        "_s_cont",
        "_s_desync",
        "_s_inflate",
        "_s_last_ns",
        "_s_off",
        "_s_skip",
        "_server_ack",
        "_turn_mark",
        "_walk",
        "budget",
        "caps",
        "client",
        "compressed",
        "conn_id",
        "db",
        "deprecate_eof",
        "last_prepared",
        "limit_hits",
        "limits",
        "midstream",
        "multi_statements",
        "normalizer",
        "not_mysql",
        "pending",
        "pending_bytes",
        "phase",
        "prepared",
        "prepared_bytes",
        "server",
        "server_caps",
        "unparsed_segments",
        "unread_exchanges",
        "user",
    )

    def __init__(
        self,
        client: str,
        server: str,
        normalizer: Normalizer,
        *,
        from_start: bool,
        limits: ConversationLimits | None = None,
    ) -> None:
        self.client = client
        self.server = server
        self.normalizer = normalizer
        self.limits = limits or ConversationLimits()
        self.phase = GREETING if from_start else UNSYNCED
        self.midstream = not from_start  # the handshake was not seen
        self.user = ""
        self.db = ""
        self.conn_id: int | None = None
        self.server_caps: int | None = None
        self.caps: int | None = None  # negotiated; None while unknown (mid-stream attach)
        self.deprecate_eof: bool | None = None
        self.compressed = False
        self.multi_statements = True  # assumed until the handshake says otherwise
        self.prepared: dict[int, PreparedStatement] = {}
        self.budget: PreparedBudget | None = None  # the worker's, set by its flow table
        self.prepared_bytes = 0  # what this connection's statements hold of it
        # The statement of the most recent COM_STMT_PREPARE request, answered or not: what
        # MariaDB's statement id -1 ("the statement just prepared") refers to.
        self.last_prepared: PreparedStatement | None = None
        self.pending: deque[Request] = deque()
        self.pending_bytes = 0  # sum of the pending requests' ``cost``
        self.limit_hits: dict[str, int] = {}
        self.unparsed_segments = 0  # segments skipped: encrypted, replication, or resyncing
        # Exchanges (client bytes answered by server bytes) that could not be read: encrypted,
        # unparsable, or not MySQL at all. Commands the server proved it ran, not analysed.
        self.unread_exchanges = 0
        self._turn_mark = 0  # client stream offset up to which exchanges are accounted for
        self.not_mysql = False  # the peer's first bytes were not the MySQL protocol
        self._events: list[Event] = []
        # client -> server stream
        self._c_off = 0  # absolute offset of the next byte to arrive
        self._c_buf = bytearray()
        self._c_part: bytearray | None = None  # logical packet being assembled
        self._c_part_seq = 0
        self._c_part_size = 0
        self._c_part_cut = False
        self._c_skip = 0  # bytes of an over-long physical packet still to come (kept up to the limit)
        self._c_skip_last = False  # that packet ends its logical packet
        self._c_desync = not from_start
        self._c_inflate: Inflater | None = None
        self._c_packet_end = 0  # absolute offset just past the packet being dispatched
        # server -> client stream
        self._s_off = 0
        self._s_buf = bytearray()
        self._s_skip = 0
        self._s_cont = False  # the previous packet was 0xFFFFFF long: this one continues it
        self._s_desync = not from_start
        self._s_last_ns = 0
        self._s_inflate: Inflater | None = None
        self._server_ack: int | None = None  # how far the server has read the client stream
        self._login: Request | None = None
        # The compiled walker of the server packets ``Responses._server_plain`` parses
        # inline, or None: the pure engine (tests set it per connection to run both).
        self._walk = native.server_walker

    @staticmethod
    def _new_events() -> list[Event]:
        return []

    def _client_garbage(self, ts: int, reason: str) -> None:
        self._events.append(Garbage(ts, TO_SERVER, reason))
        self._reset_client()
        self._c_desync = True

    def _reset_client(self) -> None:
        self._c_buf.clear()
        self._c_part = None
        self._c_skip = 0
        if self._c_inflate is not None:
            self._c_inflate.reset()

    def _server_garbage(self, ts: int, reason: str) -> None:
        self._events.append(Garbage(ts, TO_CLIENT, reason))
        if self.pending:
            self._lose(ts, "unparsable response")
        else:
            self._unread_exchange()
        self._turn_mark = self._c_off
        self._reset_server()
        self._s_desync = True

    def _unread_exchange(self) -> None:
        """Server bytes that could not be read answer client bytes sent since the last
        exchange accounted for: count one exchange the probe could not analyse."""
        if self._c_off > self._turn_mark:
            self.unread_exchanges += 1
            self._turn_mark = self._c_off

    def _reset_server(self) -> None:
        self._s_buf.clear()
        self._s_skip = 0
        self._s_cont = False
        if self._s_inflate is not None:
            self._s_inflate.reset()

    def _finish(
        self, cmd: Request, ts: int, err: p.Err | None, status: int, warnings: int, *, queued: bool = True
    ) -> None:
        if queued and self.pending and self.pending[0] is cmd:
            self.pending.popleft()
            self.pending_bytes -= cmd.cost
        self._emit(cmd, ts, err, status, warnings)

    def _emit(self, cmd: Request, ts: int, err: p.Err | None, status: int, warnings: int) -> None:
        template = cmd.template
        if template is None:
            template = admin_template(cmd.name)
        sql = cmd.pieces[cmd.piece] if cmd.pieces is not None else cmd.sql
        start = cmd.start_ns
        first = cmd.first_ns or ts
        # tuple.__new__ skips the named tuple's Python-level constructor (3x cheaper).
        self._events.append(
            _new_event(
                CommandCompleted,
                (
                    cmd.name,
                    template.key,
                    template.text,
                    sql,
                    cmd.params,
                    cmd.db,
                    self.user,
                    self.client,
                    self.server,
                    self.conn_id,
                    start,
                    ts,
                    (ts - start) // 1000 if ts > start else 0,
                    (first - start) // 1000 if first > start else 0,
                    err.code if err is not None else 0,
                    err.sqlstate if err is not None else "",
                    err.message if err is not None else "",
                    cmd.rows,
                    cmd.affected,
                    cmd.bytes_in,
                    cmd.bytes_out,
                    status,
                    warnings,
                    cmd.complete,
                ),
            )
        )

    def _lose(self, ts: int, reason: str) -> None:
        cmd = self.pending.popleft()
        self.pending_bytes -= cmd.cost
        self._events.append(ResponseLost(ts, cmd.name, reason))

    def _resynced(self, ts: int, direction: int, reason: str) -> None:
        self._events.append(Resynced(ts, direction, 0, reason))

    def _encrypted(self, ts: int) -> None:
        self.phase = ENCRYPTED
        self._turn_mark = self._c_off  # the SSLRequest or ClientHello is not a command
        self.pending.clear()
        self.pending_bytes = 0
        self._events.append(ConnectionEncrypted(ts))

    def _limit(self, name: str) -> None:
        self.limit_hits[name] = self.limit_hits.get(name, 0) + 1

    def _remember(self, stmt_id: int, stmt: PreparedStatement) -> None:
        """Keep ``stmt`` under ``stmt_id``, its SQL charged to the worker's budget (past the
        budget only its template is kept, counted)."""
        old = self.prepared.get(stmt_id)
        if old is not None and old is not stmt:
            self._forget(old)
        self.prepared[stmt_id] = stmt
        budget = self.budget
        if budget is None or stmt.charged:
            return
        cost = len(stmt.sql)
        if budget.used + cost > budget.max_bytes:
            self._limit("max_prepared_bytes")
            stmt.sql = stmt.template.text  # shared with the normalizer's cache
            return
        budget.used += cost
        self.prepared_bytes += cost
        stmt.charged = cost

    def _forget(self, stmt: PreparedStatement) -> None:
        """Give a statement's bytes back to the budget (it is closed, evicted or reset)."""
        if stmt.charged and self.budget is not None:
            self.budget.used -= stmt.charged
            self.prepared_bytes -= stmt.charged
        stmt.charged = 0

    def _clear_prepared(self) -> None:
        for stmt in self.prepared.values():
            self._forget(stmt)
        self.prepared.clear()
        self.last_prepared = None

    def release_budget(self) -> None:
        """The connection ends: everything it held goes back to the budget."""
        if self.budget is not None:
            self.budget.used -= self.prepared_bytes
        self.prepared_bytes = 0
        for stmt in self.prepared.values():
            stmt.charged = 0
