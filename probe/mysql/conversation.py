"""One MySQL connection watched from the wire: bytes of both directions in, events out.

Owns the connection's protocol state (handshake, login, commands, encrypted, replication),
its session (user, default database, capabilities, prepared statements) and the pairing
of every request with its response. It is sans-I/O: ``feed(ts_ns, direction, data, ack)``
takes the bytes of one TCP segment in stream order and returns events; ``gap()`` says that
bytes were lost; ``close()`` ends the connection. Nothing here reads a clock or a socket.

Pairing is exact, not positional. Each request remembers the client's TCP acknowledgement
(``ack``: how far the client had read the server's stream), which is where the response to
that request must begin; each server segment carries the server's acknowledgement, which
must cover the request it answers. A gap in the server stream therefore loses only the
responses it overlaps (reported as ``ResponseLost``), and parsing resumes exactly at the
next response; a gap in the client stream resumes at the next request the server acked.
Peers' bad bytes are reported (``Garbage``) and skipped, never raised.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any

from probe.mysql import constants as c
from probe.mysql import packets as p
from probe.mysql.compression import Inflater, looks_compressed
from probe.mysql.events import (
    TO_CLIENT,
    TO_SERVER,
    CommandCompleted,
    ConnectionEncrypted,
    Event,
    Garbage,
    LoginSeen,
    ReplicationStream,
    ResponseLost,
    Resynced,
    ServerGreeted,
)
from probe.normalize import Normalizer, Template, count_placeholders, split_statements, template_key

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
_TLS_RECORD = (0x14, 0x15, 0x16, 0x17)
_UNKNOWN_STMT = "EXECUTE <unknown prepared statement>"
_CONNECT = "Connect"
_new_event = tuple.__new__


@dataclass(frozen=True)
class ConversationLimits:
    """Per-connection bounds; ``LimitReached``-style counters say when one bites."""

    max_query_bytes: int = 1 << 20
    """SQL bytes kept per statement; longer text is cut (the template still forms)."""
    max_prepared: int = 1024
    """Prepared statements remembered per connection; the oldest is forgotten first."""
    max_pending: int = 64
    """Requests awaiting a response (pipelining); beyond it the oldest is dropped as lost."""
    max_packet_buffer: int = 1 << 20
    """Bytes buffered to complete a packet whose content is needed."""
    max_long_data: int = 4096
    """Bytes of COM_STMT_SEND_LONG_DATA kept per parameter, for samples."""


class _Prepared:
    __slots__ = ("complete", "long_data", "params", "sql", "template", "types")

    def __init__(self, template: Template, sql: str, params: int, complete: bool) -> None:
        self.template = template
        self.sql = sql
        self.params = params
        self.types: list[int] | None = None
        self.long_data: dict[int, bytes] = {}
        self.complete = complete


class _Command:
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


def _admin_template(name: str) -> Template:
    template = _ADMIN_TEMPLATES.get(name)
    if template is None:
        text = f"administrator command: {name}"
        template = _ADMIN_TEMPLATES[name] = Template(template_key(text), text)
    return template


class Conversation:
    """Protocol state of one client connection, fed by the TCP reassembler."""

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
        self.prepared: dict[int, _Prepared] = {}
        self.last_stmt_id: int | None = None
        self.pending: deque[_Command] = deque()
        self.limit_hits: dict[str, int] = {}
        self.unparsed_segments = 0  # segments skipped: encrypted, replication, or resyncing
        self._events: list[Event] = []
        # client -> server stream
        self._c_off = 0  # absolute offset of the next byte to arrive
        self._c_buf = bytearray()
        self._c_part: bytearray | None = None  # logical packet being assembled
        self._c_part_seq = 0
        self._c_part_size = 0
        self._c_part_cut = False
        self._c_skip = 0  # bytes of an over-long physical packet still to skip
        self._c_skip_last = False  # the skipped packet ends its logical packet
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
        self._login: _Command | None = None

    # -- public API ---------------------------------------------------------------------------

    @staticmethod
    def _new_events() -> list[Event]:
        return []

    def feed(self, ts: int, direction: int, data: bytes, ack: int | None = None) -> list[Event]:
        """Bytes of one segment, in stream order. ``ack``: the sender's acknowledgement as an
        absolute offset into the other direction's stream, when known."""
        self._events = events = self._new_events()
        size = len(data)
        if not size:
            return events
        if self.phase >= ENCRYPTED:
            if direction == TO_SERVER:
                self._c_off += size
            else:
                self._s_off += size
            self.unparsed_segments += 1
            return events
        if direction == TO_SERVER:
            start = self._c_off
            self._c_off = end = start + size
            if (
                size > 4
                and self.phase == COMMANDS
                and not self._c_desync
                and self._c_inflate is None
                and not self._c_buf
                and self._c_part is None
                and not self._c_skip
                and data[3] == 0
                and (data[0] | data[1] << 8 | data[2] << 16) + 4 == size
                and size < c.MAX_PACKET_LENGTH
                and (not self.pending or self.pending[0].state < R_INFILE)
            ):
                # The common case: a segment holding exactly one request.
                self._c_packet_end = end
                self._command(ts, data[4:], size, False, ack)
            else:
                self._client_segment(ts, data, start, ack)
        else:
            start = self._s_off
            self._s_off += size
            self._s_last_ns = ts
            if ack is not None:
                self._server_ack = ack
            if self._s_desync:
                self._server_resync(ts, data, start)
                return events
            pending = self.pending
            if ack is not None and pending and not self._s_buf and not self._s_skip:
                head = pending[0]
                if ack < head.req_end and not head.first_ns and head.state != R_INFILE:
                    # Sent before the server read our request: an earlier, unseen response.
                    self._events.append(Garbage(ts, TO_CLIENT, "response to an unseen request"))
                    return events
            if self._s_inflate is None:
                self._server_plain(ts, data)
            else:
                self._server_inflated(ts, data)
        return events

    def gap(self, ts: int, direction: int, size: int) -> list[Event]:
        """``size`` bytes of ``direction`` were lost; parsing resumes at a boundary."""
        self._events = events = self._new_events()
        if direction == TO_SERVER:
            self._c_off += size
            self._reset_client()
            if self.pending and self.pending[0].state == R_INFILE:
                self._lose(ts, "gap")
            self._c_desync = True
        else:
            self._s_off += size
            gap_end = self._s_off
            self._reset_server()
            while self.pending and (self.pending[0].resp_start is None or self.pending[0].resp_start < gap_end):
                self._lose(ts, "gap")
            if self._login is not None:
                self._login = None
                self._events.append(ResponseLost(ts, _CONNECT, "gap"))
            self._s_desync = True
        if self.phase in (GREETING, LOGIN, AUTH):
            self.phase = UNSYNCED
        return events

    def close(self, ts: int, reason: str = "closed") -> list[Event]:
        """The connection ended (FIN/RST) or was evicted: settle what is pending."""
        self._events = events = self._new_events()
        while self.pending:
            cmd = self.pending[0]
            if cmd.reply == c.Reply.OPAQUE and cmd.first_ns:
                self._finish(cmd, self._s_last_ns, None, 0, 0)
            else:
                self._lose(ts, reason)
        self.phase = CLOSED
        return events

    def assume_session(self, user: str, db: str, conn_id: int | None) -> bool:
        """Session facts learnt elsewhere (the server's process list) for a connection whose
        handshake was not seen; facts the wire already told are kept. Returns whether any
        was filled."""
        if self.user or self.phase in (GREETING, LOGIN, AUTH):
            return False
        self.user = user
        if not self.db:
            self.db = db
        if self.conn_id is None:
            self.conn_id = conn_id
        for cmd in self.pending:
            if not cmd.db:
                cmd.db = self.db
        return True

    def learn_prepared(self, stmt_id: int, sql: str) -> bool:
        """A statement prepared before this connection was seen (from a checkpoint, or the
        server's performance_schema): executes of ``stmt_id`` get its template."""
        if stmt_id in self.prepared:
            return False
        if len(self.prepared) >= self.limits.max_prepared:
            self._limit("max_prepared")
            return False
        inner = self.normalizer.normalize(sql)
        self.prepared[stmt_id] = _Prepared(inner, sql, count_placeholders(sql), True)
        return True

    def session_snapshot(self) -> tuple[str, str, int | None, dict[int, str]] | None:
        """What a restart cannot learn again from the wire: (user, db, connection id,
        prepared statements by id), or None when there is nothing."""
        if not self.user and not self.prepared:
            return None
        return self.user, self.db, self.conn_id, {sid: stmt.sql for sid, stmt in self.prepared.items()}

    # -- client side --------------------------------------------------------------------------

    def _client_segment(self, ts: int, data: bytes, start: int, ack: int | None) -> None:
        if self._c_desync:
            if not self._client_boundary(ts, data, start):
                self.unparsed_segments += 1
                return
            self._c_desync = False
            if self.phase == UNSYNCED:
                self.phase = COMMANDS
        if self._c_inflate is not None:
            try:
                data = self._c_inflate.feed(data)
            except p.BAD_BYTES as exc:
                self._client_garbage(ts, str(exc))
                return
        self._client_plain(ts, data, ack)

    def _client_boundary(self, ts: int, data: bytes, start: int) -> bool:
        """Whether a desynchronised client stream can restart at this segment."""
        first = data[0]
        if first in _TLS_RECORD and len(data) > 2 and data[1] == 3:
            self._encrypted(ts)
            return False
        acked = self._server_ack is None or self._server_ack == start
        if len(data) >= 5 and data[3] == 0 and data[4] in c.COMMANDS:
            length = data[0] | data[1] << 8 | data[2] << 16
            if length and (length + 4 == len(data) or (length + 4 > len(data) and acked)):
                if self.compressed:
                    self.compressed = False
                    self._c_inflate = self._s_inflate = None
                self._resynced(ts, TO_SERVER, "command boundary")
                return True
        if looks_compressed(data):
            if not self.compressed:
                self.compressed = True
                self._c_inflate, self._s_inflate = Inflater(), Inflater()
            else:
                assert self._c_inflate is not None
                self._c_inflate.reset()
            self._resynced(ts, TO_SERVER, "compressed command boundary")
            return True
        return False

    def _client_plain(self, ts: int, data: bytes, ack: int | None) -> None:
        buf = self._c_buf
        if buf:
            buf += data
            data = bytes(buf)
            buf.clear()
        pos = 0
        n = len(data)
        limits = self.limits
        # Absolute offset of data[0], for the request-end offsets the pairing checks use.
        base = None if self._c_inflate is not None else self._c_off - n
        while pos < n:
            if self._c_skip:
                take = min(self._c_skip, n - pos)
                pos += take
                self._c_skip -= take
                if self._c_skip:
                    break
                if self._c_skip_last:
                    self._c_packet_end = self._c_off if base is None else base + pos
                    self._client_logical_done(ts, ack)
                continue
            if n - pos < 4:
                break
            length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
            seq = data[pos + 3]
            end = pos + 4 + length
            last = length < c.MAX_PACKET_LENGTH
            if end <= n and self._c_part is None and last:
                self._c_packet_end = self._c_off if base is None else base + end
                self._client_packet(ts, seq, data[pos + 4 : end], 4 + length, False, ack)
                if self.phase >= ENCRYPTED:
                    return
                pos = end
                continue
            if end > n and length + 4 <= limits.max_packet_buffer and not self._c_part:
                break  # wait for the rest of a packet small enough to buffer
            # Part of a long logical packet: keep what the limit allows, skip the rest.
            if self._c_part is None:
                self._c_part = bytearray()
                self._c_part_seq = seq
                self._c_part_size = 0
                self._c_part_cut = False
            part = self._c_part
            room = limits.max_query_bytes - len(part)
            chunk_end = min(end, n)
            body = data[pos + 4 : chunk_end]
            if room > 0:
                part += body[:room]
            if len(body) > room:
                self._c_part_cut = True
            self._c_part_size += 4 + length
            pos = chunk_end
            if chunk_end < end:
                self._c_skip = end - chunk_end
                self._c_part_cut = self._c_part_cut or room < end - chunk_end
                self._c_skip_last = last
                break
            if last:
                self._c_packet_end = self._c_off if base is None else base + pos
                self._client_logical_done(ts, ack)
        if pos < n:
            self._c_buf += data[pos:]

    def _client_logical_done(self, ts: int, ack: int | None) -> None:
        part = self._c_part
        if part is None:
            return
        self._c_part = None
        self._client_packet(ts, self._c_part_seq, bytes(part), self._c_part_size, self._c_part_cut, ack)

    def _client_packet(self, ts: int, seq: int, payload: bytes, size: int, cut: bool, ack: int | None) -> None:
        phase = self.phase
        if phase == COMMANDS:
            head = self.pending[0] if self.pending else None
            if head is not None and head.state == R_INFILE:
                head.bytes_in += size
                if not payload:  # the empty packet ends the file
                    head.state = R_FIRST
                    head.reply = c.Reply.STATUS
                    head.start_ns = ts
                    head.req_end = self._c_packet_end
                return
            if head is not None and head.state == R_AUTH and seq != 0:
                head.bytes_in += size
                return
            if seq != 0 or not payload:
                self._client_garbage(ts, f"request with sequence id {seq}")
                return
            self._command(ts, payload, size, cut, ack)
        elif phase == LOGIN:
            self._handshake_response(ts, payload, size)
        elif phase == AUTH:
            if self._login is not None:
                self._login.bytes_in += size
        elif phase == UNSYNCED:
            self.phase = COMMANDS
            self._client_packet(ts, seq, payload, size, cut, ack)
        else:
            self._client_garbage(ts, "client bytes before the server greeting")

    def _handshake_response(self, ts: int, payload: bytes, size: int) -> None:
        try:
            response = p.parse_handshake_response(payload, self.server_caps)
        except p.BAD_BYTES as exc:
            self._client_garbage(ts, str(exc))
            return
        if response.ssl_request:
            self._encrypted(ts)
            return
        self.caps = response.capabilities
        self.user = response.user
        self.db = response.db
        self.deprecate_eof = bool(self.caps & c.CLIENT_DEPRECATE_EOF)
        self.multi_statements = bool(self.caps & c.CLIENT_MULTI_STATEMENTS)
        self._events.append(LoginSeen(ts, self.user, self.db, self.caps))
        login = _Command(-1, _CONNECT, c.Reply.AUTH, ts, self._c_packet_end, None, size, self.db)
        login.template = _admin_template(_CONNECT)
        self._login = login
        self.phase = AUTH

    def _command(self, ts: int, payload: bytes, size: int, cut: bool, ack: int | None) -> None:
        code = payload[0]
        pending = self.pending
        if pending:
            prev = pending[-1]
            if prev.reply == c.Reply.OPAQUE and prev.first_ns:
                # An unknown command's response ends where the next request begins.
                self._finish(prev, self._s_last_ns, None, 0, 0)
        if code == c.Command.QUERY and not cut and self.caps is not None and not self.caps & c.CLIENT_QUERY_ATTRIBUTES:
            # COM_QUERY, the common case, described inline.
            cmd = _Command(code, "Query", c.Reply.RESULT, ts, self._c_packet_end, ack, size, self.db)
            sql = payload[1:].decode("utf-8", "replace")
            cmd.sql = sql
            if ";" in sql and self.multi_statements:
                self._split(cmd, sql)
            else:
                template = cmd.template = self.normalizer.normalize(sql)
                if template.text.startswith("USE "):
                    cmd.session_arg = _used_db(sql)
        else:
            spec = c.COMMANDS.get(code)
            if spec is not None:
                cmd = _Command(code, spec.name, spec.reply, ts, self._c_packet_end, ack, size, self.db)
            else:
                cmd = _Command(
                    code, f"Unknown 0x{code:02x}", c.Reply.OPAQUE, ts, self._c_packet_end, ack, size, self.db
                )
            if cut:
                cmd.complete = False
            try:
                self._describe(cmd, code, payload)
            except p.BAD_BYTES as exc:
                self._client_garbage(ts, str(exc))
                cmd.complete = False
            if cmd.reply == c.Reply.NONE:
                self._finish(cmd, ts, None, 0, 0, queued=False)
                if code == c.Command.QUIT:
                    self.phase = CLOSED
                return
        if len(pending) >= self.limits.max_pending:
            self._limit("max_pending")
            self._lose(ts, "too many pipelined requests")
        pending.append(cmd)

    def _split(self, cmd: _Command, sql: str) -> None:
        """A query that may hold several statements: one event per statement executed."""
        pieces = split_statements(sql)
        if len(pieces) > 1:
            cmd.pieces = pieces
            sql = pieces[0]
        template = cmd.template = self.normalizer.normalize(sql)
        if template.text.startswith("USE "):
            cmd.session_arg = _used_db(sql)

    def _describe(self, cmd: _Command, code: int, payload: bytes) -> None:
        """Fill the statement text, template and session effect of a request."""
        if code == c.Command.QUERY:
            body = payload[1:]
            if self.caps is None or self.caps & c.CLIENT_QUERY_ATTRIBUTES:
                body = _strip_query_attributes(body, known=self.caps is not None)
            sql = p.text(body)
            cmd.sql = sql
            if ";" in sql and self.multi_statements:
                self._split(cmd, sql)
            else:
                cmd.template = self.normalizer.normalize(sql)
                if cmd.template.text.startswith("USE "):
                    cmd.session_arg = _used_db(sql)
        elif code == c.Command.STMT_EXECUTE or code == c.Command.STMT_BULK_EXECUTE:
            self._describe_execute(cmd, payload)
        elif code == c.Command.STMT_PREPARE:
            sql = p.text(payload[1:])
            cmd.sql = sql
            inner = self.normalizer.normalize(sql)
            text = "PREPARE " + inner.text
            cmd.template = Template(template_key(text), text)
            cmd.prepared = inner
        elif code == c.Command.INIT_DB:
            cmd.session_arg = p.text(payload[1:])
            cmd.template = _admin_template(cmd.name)
        elif code == c.Command.STMT_CLOSE or code == c.Command.STMT_RESET or code == c.Command.STMT_FETCH:
            cmd.template = _admin_template(cmd.name)
            if len(payload) >= 5:
                stmt_id = int.from_bytes(payload[1:5], "little")
                if code == c.Command.STMT_CLOSE:
                    self.prepared.pop(stmt_id, None)
                else:
                    stmt = self.prepared.get(stmt_id)
                    if stmt is not None:
                        stmt.long_data.clear()
        elif code == c.Command.STMT_SEND_LONG_DATA:
            cmd.template = _admin_template(cmd.name)
            if len(payload) >= 7:
                stmt = self.prepared.get(int.from_bytes(payload[1:5], "little"))
                if stmt is not None:
                    param = payload[5] | payload[6] << 8
                    kept = stmt.long_data.get(param, b"")
                    room = self.limits.max_long_data - len(kept)
                    if room > 0:
                        stmt.long_data[param] = kept + payload[7 : 7 + room]
        elif code == c.Command.SET_OPTION:
            cmd.template = _admin_template(cmd.name)
            if len(payload) >= 3:
                cmd.session_arg = payload[1] | payload[2] << 8
        elif code == c.Command.CHANGE_USER:
            cmd.template = _admin_template(cmd.name)
            cmd.state = R_AUTH
            cmd.session_arg = p.parse_change_user(payload, self.caps or c.CLIENT_SECURE_CONNECTION)
        else:
            cmd.template = _admin_template(cmd.name)

    def _describe_execute(self, cmd: _Command, payload: bytes) -> None:
        if len(payload) < 5:
            raise p.PacketError("truncated execute")
        stmt_id = int.from_bytes(payload[1:5], "little")
        if stmt_id == 0xFFFFFFFF and self.last_stmt_id is not None:
            stmt_id = self.last_stmt_id  # MariaDB: "the statement prepared last"
        stmt = self.prepared.get(stmt_id)
        if stmt is None:
            cmd.template = Template(template_key(_UNKNOWN_STMT), _UNKNOWN_STMT)
            cmd.complete = False
            return
        cmd.template = stmt.template
        cmd.sql = stmt.sql
        cmd.complete = cmd.complete and stmt.complete
        if cmd.code == c.Command.STMT_EXECUTE and len(payload) >= 10:
            cmd.cursor = payload[5] != 0
            params, stmt.types = p.decode_params(payload, 10, stmt.params, stmt.types, stmt.long_data)
            cmd.params = params
            stmt.long_data.clear()

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

    # -- server side --------------------------------------------------------------------------

    def _server_resync(self, ts: int, data: bytes, start: int) -> None:
        """A desynchronised server stream: skip to where a response starts, parse from there."""
        data = self._server_boundary(ts, data, start)
        if not data:
            self.unparsed_segments += 1
        elif self._s_inflate is None:
            self._server_plain(ts, data)
        else:
            self._server_inflated(ts, data)

    def _server_inflated(self, ts: int, data: bytes) -> None:
        assert self._s_inflate is not None
        try:
            plain = self._s_inflate.feed(data)
        except p.BAD_BYTES as exc:
            self._server_garbage(ts, str(exc))
            return
        self._server_plain(ts, plain)

    def _server_boundary(self, ts: int, data: bytes, start: int) -> bytes:
        """The part of ``data`` from which a desynchronised server stream can restart."""
        if self.phase in (UNSYNCED, GREETING) and not self.pending:
            if len(data) > 5 and data[3] == 0 and data[4] == 10 and self._greeting(ts, data):
                return b""
            if data[0] in _TLS_RECORD and len(data) > 2 and data[1] == 3:
                self._encrypted(ts)
            return b""
        if not self.pending:
            return b""
        head = self.pending[0]
        if head.resp_start is not None:
            if start + len(data) <= head.resp_start:
                return b""
            if start < head.resp_start:
                data = data[head.resp_start - start :]
            elif start > head.resp_start:
                self._lose(ts, "response start lost")
                return self._server_boundary(ts, data, start)
        elif not (len(data) >= 5 and data[3] == 1) and not self.compressed:
            return b""
        self._s_desync = False
        self._s_cont = False
        if self._s_inflate is not None:
            self._s_inflate.reset()
        self._resynced(ts, TO_CLIENT, "response boundary")
        return data

    def _greeting(self, ts: int, data: bytes) -> bool:
        length = data[0] | data[1] << 8 | data[2] << 16
        try:
            greeting = p.parse_greeting(data[4 : 4 + length])
        except p.BAD_BYTES:
            return False
        self.server_caps = greeting.capabilities
        self.conn_id = greeting.conn_id
        self.phase = LOGIN
        self._s_desync = False
        self._c_desync = False
        self._events.append(
            ServerGreeted(ts, greeting.server_version, greeting.conn_id, greeting.capabilities, greeting.mariadb)
        )
        return True

    def _server_plain(self, ts: int, data: bytes) -> None:
        """Walk the server's packets. Result sets, the bulk of the traffic, are parsed inline
        here (column count, definitions, EOFs, rows, simple OK packets); every other packet
        goes to ``_response_packet``."""
        buf = self._s_buf
        if buf:
            buf += data
            data = bytes(buf)
            buf.clear()
        n = len(data)
        pos = 0
        skip = self._s_skip
        if skip:
            if skip >= n:
                self._s_skip = skip - n
                return
            pos = skip
            self._s_skip = 0
        pending = self.pending
        cmd = pending[0] if pending else None
        if cmd is not None and not cmd.first_ns:
            cmd.first_ns = ts
        while n - pos >= 4:
            length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
            end = pos + 4 + length
            if self._s_cont or not length:
                # Continuation of a payload of 16 MiB or more: nothing in it to interpret.
                self._s_cont = length == 0xFFFFFF
                if cmd is not None:
                    cmd.bytes_out += 4 + length
                if end > n:
                    self._s_skip = end - n
                    return
                pos = end
                continue
            if n - pos < 5:
                break
            if cmd is None:
                if not self._no_request(ts, data, pos, n, length):
                    return
                if end > n:
                    break
                pos = end
                cmd = pending[0] if pending else None
                if cmd is not None:
                    cmd.first_ns = ts
                continue
            state = cmd.state
            first = data[pos + 4]
            if state == R_ROWS:
                if first < 0xFE or length == 0xFFFFFF:
                    # Rows: the hot loop. A row is a packet not starting with 0xFE/0xFF, or a
                    # 16 MiB one (a text row whose first value is longer than 16 MiB).
                    start = pos
                    rows = 1
                    limit = n - 5
                    while end <= limit and length != 0xFFFFFF:
                        pos = end
                        following = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
                        if following == length and end + 4 * (length + 4) <= n:
                            run = _equal_rows(data, pos, n, length)
                            if run > 1:
                                rows += run
                                end = pos + run * (length + 4)
                                pos = end - length - 4
                                continue
                        length = following
                        if data[pos + 4] >= 0xFE and length != 0xFFFFFF:
                            end = pos  # the terminator: left for the code below
                            break
                        end = pos + 4 + length
                        rows += 1
                    cmd.rows += rows
                    cmd.bytes_out += end - start
                    if end > n:
                        self._s_cont = length == 0xFFFFFF
                        self._s_skip = end - n
                        return
                    self._s_cont = end > pos and length == 0xFFFFFF
                    pos = end
                    continue
                if end > n:
                    break
                if first == 0xFE and length < 9 and cmd.pieces is None:
                    # EOF after the rows: the end of a plain result set.
                    warnings = data[pos + 5] | data[pos + 6] << 8 if length >= 5 else 0
                    status = data[pos + 7] | data[pos + 8] << 8 if length >= 5 else 0
                    if not status & c.SERVER_MORE_RESULTS_EXISTS:
                        cmd.bytes_out += 4 + length
                        pos = end
                        pending.popleft()
                        self._emit(cmd, ts, None, status, warnings)
                        cmd = self._next_command(ts)
                        continue
            elif state == R_COLDEFS or state == R_PREP_PARAMS or state == R_PREP_COLS:
                cmd.bytes_out += 4 + length
                cmd.remaining -= 1
                if cmd.remaining <= 0:
                    self._definitions_done(ts, cmd, data, end)
                    if not pending or pending[0] is not cmd:
                        cmd = self._next_command(ts)
                if end > n:
                    self._s_skip = end - n
                    return
                pos = end
                continue
            elif state == R_FIRST:
                if end > n:
                    if length + 4 > self.limits.max_packet_buffer:
                        self._server_garbage(ts, f"packet of {length} bytes where a reply starts")
                        return
                    break
                reply = cmd.reply
                if (
                    reply == c.Reply.RESULT
                    and 0 < first < 0xFB
                    and (length == 1 or (length == 2 and data[pos + 5] == 1))
                ):
                    # Column count of a result set (with MariaDB's "metadata follows" flag).
                    cmd.bytes_out += 4 + length
                    cmd.remaining = first
                    cmd.state = R_COLDEFS
                    pos = end
                    continue
                if (
                    first == 0
                    and length >= 7
                    and (reply == c.Reply.RESULT or reply == c.Reply.STATUS)
                    and data[pos + 5] < 0xFB
                    and data[pos + 6] < 0xFB
                    and cmd.session_arg is None
                    and cmd.code != c.Command.RESET_CONNECTION
                ):
                    status = data[pos + 7] | data[pos + 8] << 8
                    if not status & (c.SERVER_MORE_RESULTS_EXISTS | c.SERVER_SESSION_STATE_CHANGED):
                        # A plain OK packet: affected rows and last insert id of one byte each.
                        cmd.affected += data[pos + 5]
                        cmd.bytes_out += 4 + length
                        warnings = data[pos + 9] | data[pos + 10] << 8
                        pos = end
                        pending.popleft()
                        self._emit(cmd, ts, None, status, warnings)
                        cmd = self._next_command(ts)
                        continue
            elif state == R_COLS_END:
                if end > n:
                    break
                if first == 0xFE and length == 5 and not cmd.cursor:
                    self.deprecate_eof = False
                    cmd.bytes_out += 9
                    cmd.state = R_ROWS
                    pos = end
                    continue
            elif state == R_OPAQUE:
                cmd.bytes_out += n - pos
                return
            elif end > n:
                if length + 4 > self.limits.max_packet_buffer:
                    self._server_garbage(ts, f"control packet of {length} bytes")
                    return
                break
            if end > n:
                break
            payload = data[pos + 4 : end]
            pos = end
            cmd.bytes_out += 4 + length
            self._s_cont = length == 0xFFFFFF
            try:
                self._response_packet(ts, cmd, payload, length)
            except p.BAD_BYTES as exc:
                self._server_garbage(ts, str(exc))
                return
            if self._s_desync or self.phase >= ENCRYPTED:
                return
            if not pending or pending[0] is not cmd:
                cmd = self._next_command(ts)
        if pos < n:
            self._s_buf += data[pos:]

    def _next_command(self, ts: int) -> _Command | None:
        """After a response ended: the next pipelined request, whose execution starts now."""
        if not self.pending:
            return None
        cmd = self.pending[0]
        if cmd.start_ns < ts:
            cmd.start_ns = ts
        cmd.first_ns = ts
        return cmd

    def _no_request(self, ts: int, data: bytes, pos: int, n: int, length: int) -> bool:
        """Server packets while no request is pending: login exchange, or stray bytes.
        Returns whether parsing can go on after this packet."""
        end = pos + 4 + length
        phase = self.phase
        if phase == AUTH or phase == GREETING:
            if end <= n:
                self._login_packet(ts, data[pos + 4 : end], 4 + length)
            return True
        if phase == COMMANDS or phase == UNSYNCED:
            return self._unsolicited(ts, data, pos, n, length)
        self._server_garbage(ts, "server bytes with no request pending")
        return False

    def _unsolicited(self, ts: int, data: bytes, pos: int, n: int, length: int) -> bool:
        """Server bytes with nothing pending: an ERR before a disconnect, or stray bytes."""
        if pos + 4 + length <= n and length >= 3 and data[pos + 4] == c.ERR_HEADER:
            self._events.append(Garbage(ts, TO_CLIENT, "unsolicited error packet"))
            return True
        self._server_garbage(ts, "server bytes with no request pending")
        return False

    def _login_packet(self, ts: int, payload: bytes, size: int) -> None:
        if self.phase == GREETING:
            if payload and payload[0] == c.ERR_HEADER:
                err = p.parse_err(payload)
                login = _Command(-1, _CONNECT, c.Reply.AUTH, ts, 0, None, 0, self.db)
                login.template = _admin_template(_CONNECT)
                login.bytes_out = size
                login.first_ns = ts
                self._finish(login, ts, err, 0, 0, queued=False)
                return
            try:
                greeting = p.parse_greeting(payload)
            except p.BAD_BYTES as exc:
                self._server_garbage(ts, str(exc))
                return
            self.server_caps = greeting.capabilities
            self.conn_id = greeting.conn_id
            self.phase = LOGIN
            self._events.append(
                ServerGreeted(ts, greeting.server_version, greeting.conn_id, greeting.capabilities, greeting.mariadb)
            )
            return
        pending_login = self._login
        if pending_login is None:
            return
        login = pending_login
        login.bytes_out += size
        if not login.first_ns:
            login.first_ns = ts
        if not payload:
            return
        header = payload[0]
        if header == c.OK_HEADER:
            self._login = None
            ok = p.parse_ok(payload, self.caps or 0)
            if ok.schema is not None:
                self.db = ok.schema
            self.phase = COMMANDS
            if self.caps is not None and self.caps & c.CLIENT_COMPRESS:
                self.compressed = True
                self._c_inflate, self._s_inflate = Inflater(), Inflater()
            self._finish(login, ts, None, ok.status, ok.warnings, queued=False)
        elif header == c.ERR_HEADER:
            self._login = None
            self._finish(login, ts, p.parse_err(payload), 0, 0, queued=False)
            self.phase = CLOSED

    def _response_packet(self, ts: int, cmd: _Command, payload: bytes, length: int) -> None:
        """One complete server packet that needs reading (not a row or definition)."""
        header = payload[0] if payload else -1
        state = cmd.state
        if state == R_ROWS or state == R_FIELDS:
            if header == c.ERR_HEADER:
                self._finish(cmd, ts, p.parse_err(payload), 0, 0)
            elif header == c.EOF_HEADER:
                self._result_end(ts, cmd, payload, length)
            elif state == R_ROWS:
                cmd.rows += 1
            return
        if state == R_FIRST:
            reply = cmd.reply
            if header == c.ERR_HEADER:
                err = p.parse_err(payload)
                if err.code == c.PROGRESS_ERROR_CODE and self.caps and self.caps & c.MARIADB_CLIENT_PROGRESS:
                    cmd.first_ns = 0
                    return
                self._finish(cmd, ts, err, 0, 0)
                return
            if reply == c.Reply.RESULT:
                if header == c.OK_HEADER:
                    self._status_ok(ts, cmd, payload)
                elif header == c.LOCAL_INFILE_HEADER:
                    cmd.state = R_INFILE
                elif header == c.EOF_HEADER:
                    raise p.PacketError("EOF where a result set was expected")
                else:
                    self._column_count(ts, cmd, payload)
            elif reply == c.Reply.STATUS:
                if header == c.OK_HEADER:
                    self._status_ok(ts, cmd, payload)
                elif header == c.EOF_HEADER:
                    warnings, status = p.parse_eof(payload)
                    self._session_effect(cmd, None)
                    self._finish(cmd, ts, None, status, warnings)
                else:
                    raise p.PacketError(f"status reply with header 0x{header:02x}")
            elif reply == c.Reply.PREPARE:
                self._prepare_ok(ts, cmd, payload)
            elif reply == c.Reply.FIELDS:
                cmd.state = R_FIELDS
                self._response_packet(ts, cmd, payload, length)
            elif reply == c.Reply.ROWS:
                cmd.state = R_ROWS
                self._response_packet(ts, cmd, payload, length)
            elif reply == c.Reply.STRING:
                self._finish(cmd, ts, None, 0, 0)
            elif reply == c.Reply.STREAM:
                self.phase = REPLICATION
                self._events.append(ReplicationStream(ts))
                self.pending.clear()
            elif reply == c.Reply.OPAQUE:
                cmd.state = R_OPAQUE
            return
        if state == R_AUTH:
            if header == c.OK_HEADER:
                ok = p.parse_ok(payload, self.caps or 0)
                if cmd.session_arg is not None:
                    self.user, self.db = cmd.session_arg
                if ok.schema is not None:
                    self.db = ok.schema
                self.prepared.clear()
                self._finish(cmd, ts, None, ok.status, ok.warnings)
            elif header == c.ERR_HEADER:
                self._finish(cmd, ts, p.parse_err(payload), 0, 0)
            return
        if state == R_COLS_END or state == R_PREP_PARAMS_END or state == R_PREP_COLS_END:
            if header == c.EOF_HEADER and length < 9:
                self.deprecate_eof = False
                warnings, status = p.parse_eof(payload)
                if state == R_PREP_PARAMS_END:
                    self._prepare_columns(ts, cmd)
                elif state == R_PREP_COLS_END or (cmd.cursor and status & c.SERVER_STATUS_CURSOR_EXISTS):
                    self._finish(cmd, ts, None, status, warnings)
                else:
                    cmd.state = R_ROWS
                return
            if state != R_COLS_END:
                raise p.PacketError("definitions not followed by EOF")
            # Rows straight after the definitions: the client negotiated CLIENT_DEPRECATE_EOF.
            self.deprecate_eof = True
            cmd.state = R_ROWS
            self._response_packet(ts, cmd, payload, length)
            return
        if state == R_INFILE:
            raise p.PacketError("server bytes while the client sends a LOCAL INFILE")
        raise p.PacketError(f"unexpected packet in response state {state}")

    def _column_count(self, ts: int, cmd: _Command, payload: bytes) -> None:
        columns, pos = p.lenenc(payload, 0)
        if columns == 0 or columns > 4096:
            raise p.PacketError(f"implausible column count {columns}")
        metadata = True
        if pos < len(payload):
            # MariaDB cache-metadata / MySQL optional-metadata flag byte.
            metadata = payload[pos] != 0
        if metadata:
            cmd.remaining = columns
            cmd.state = R_COLDEFS
        else:
            cmd.state = R_COLS_END
            if self.deprecate_eof:
                cmd.state = R_ROWS

    def _definitions_done(self, ts: int, cmd: _Command, data: bytes, end: int) -> None:
        """The last column or parameter definition was read; ``data[end:]`` follows it."""
        deprecate = self.deprecate_eof
        if deprecate is None and cmd.state != R_COLDEFS:
            # Mid-stream attach: the capabilities are unknown. An EOF packet (5 bytes, 0xFE)
            # right behind the definitions says the EOF is in use; nothing behind them in
            # the same segment says the reply ended there.
            following = data[end + 4] if len(data) > end + 4 else -1
            deprecate = not (following == c.EOF_HEADER and (data[end] | data[end + 1] << 8) < 9)
        if cmd.state == R_COLDEFS:
            cmd.state = R_ROWS if deprecate else R_COLS_END
        elif cmd.state == R_PREP_PARAMS:
            if deprecate:
                self._prepare_columns(ts, cmd)
            else:
                cmd.state = R_PREP_PARAMS_END
        elif deprecate:
            self._finish(cmd, ts, None, 0, 0)
        else:
            cmd.state = R_PREP_COLS_END

    def _prepare_columns(self, ts: int, cmd: _Command) -> None:
        """Parameter definitions are done: column definitions follow, if any."""
        columns = cmd.remaining_columns
        if columns:
            cmd.remaining = columns
            cmd.remaining_columns = 0
            cmd.state = R_PREP_COLS
        else:
            self._finish(cmd, ts, None, 0, 0)

    def _prepare_ok(self, ts: int, cmd: _Command, payload: bytes) -> None:
        if not payload or payload[0] != c.OK_HEADER:
            raise p.PacketError("prepare reply is neither OK nor ERR")
        ok = p.parse_prepare_ok(payload)
        inner = cmd.prepared
        if isinstance(inner, Template):
            stmt = _Prepared(inner, cmd.sql, ok.params, cmd.complete)
            if ok.stmt_id not in self.prepared and len(self.prepared) >= self.limits.max_prepared:
                self._limit("max_prepared")
                del self.prepared[next(iter(self.prepared))]
            self.prepared[ok.stmt_id] = stmt
        self.last_stmt_id = ok.stmt_id
        cmd.remaining_columns = ok.columns
        if ok.params:
            cmd.remaining = ok.params
            cmd.state = R_PREP_PARAMS
        elif ok.columns:
            cmd.remaining = ok.columns
            cmd.remaining_columns = 0
            cmd.state = R_PREP_COLS
        else:
            self._finish(cmd, ts, None, 0, ok.warnings)

    def _status_ok(self, ts: int, cmd: _Command, payload: bytes) -> None:
        ok = p.parse_ok(payload, self.caps or 0)
        cmd.affected += ok.affected_rows
        self._session_effect(cmd, ok.schema)
        self._statement_end(ts, cmd, None, ok.status, ok.warnings, plain_ok=True)

    def _session_effect(self, cmd: _Command, schema: str | None) -> None:
        """What a successful command changes in the session."""
        if schema is not None:
            self.db = schema
        elif cmd.session_arg is not None:
            if cmd.code == c.Command.INIT_DB or cmd.code == c.Command.QUERY:
                self.db = str(cmd.session_arg)
            elif cmd.code == c.Command.SET_OPTION:
                self.multi_statements = cmd.session_arg == 0
        if cmd.code == c.Command.RESET_CONNECTION:
            self.prepared.clear()

    def _result_end(self, ts: int, cmd: _Command, payload: bytes, length: int) -> None:
        if length < 9:
            warnings, status = p.parse_eof(payload)
        else:
            ok = p.parse_ok(payload, self.caps or 0)
            warnings, status = ok.warnings, ok.status
            if ok.schema is not None:
                self.db = ok.schema
        self._statement_end(ts, cmd, None, status, warnings, plain_ok=False)

    def _statement_end(
        self, ts: int, cmd: _Command, err: p.Err | None, status: int, warnings: int, *, plain_ok: bool
    ) -> None:
        if not status & c.SERVER_MORE_RESULTS_EXISTS:
            self._finish(cmd, ts, err, status, warnings)
            return
        # More results follow: a multi-statement query, or a CALL returning result sets.
        cmd.state = R_FIRST
        cmd.reply = c.Reply.RESULT
        pieces = cmd.pieces
        calling = cmd.template is not None and cmd.template.text.startswith("CALL")
        if pieces is None or cmd.piece + 1 >= len(pieces) or (calling and not plain_ok):
            return  # the results belong to the same statement
        self._emit(cmd, ts, err, status, warnings)
        cmd.piece += 1
        sql = pieces[cmd.piece]
        cmd.template = self.normalizer.normalize(sql)
        cmd.session_arg = _used_db(sql) if cmd.template.text.startswith("USE ") else None
        cmd.start_ns = ts
        cmd.first_ns = 0
        cmd.db = self.db
        cmd.rows = cmd.affected = cmd.bytes_in = cmd.bytes_out = 0

    def _server_garbage(self, ts: int, reason: str) -> None:
        self._events.append(Garbage(ts, TO_CLIENT, reason))
        if self.pending:
            self._lose(ts, "unparsable response")
        self._reset_server()
        self._s_desync = True

    def _reset_server(self) -> None:
        self._s_buf.clear()
        self._s_skip = 0
        self._s_cont = False
        if self._s_inflate is not None:
            self._s_inflate.reset()

    # -- outcomes -------------------------------------------------------------------------

    def _finish(
        self, cmd: _Command, ts: int, err: p.Err | None, status: int, warnings: int, *, queued: bool = True
    ) -> None:
        if queued and self.pending and self.pending[0] is cmd:
            self.pending.popleft()
        self._emit(cmd, ts, err, status, warnings)

    def _emit(self, cmd: _Command, ts: int, err: p.Err | None, status: int, warnings: int) -> None:
        template = cmd.template
        if template is None:
            template = _admin_template(cmd.name)
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
        self._events.append(ResponseLost(ts, cmd.name, reason))

    def _resynced(self, ts: int, direction: int, reason: str) -> None:
        self._events.append(Resynced(ts, direction, 0, reason))

    def _encrypted(self, ts: int) -> None:
        self.phase = ENCRYPTED
        self.pending.clear()
        self._events.append(ConnectionEncrypted(ts))

    def _limit(self, name: str) -> None:
        self.limit_hits[name] = self.limit_hits.get(name, 0) + 1


def _equal_rows(data: bytes, pos: int, n: int, length: int) -> int:
    """How many whole row packets of payload ``length`` follow one another from ``pos``.

    Fixed-width result sets (CHAR columns, numbers) repeat one row length; stepped slices
    read every header of such a run in C, 8x faster than a Python loop over the rows. A
    run ends at a different length, at a packet starting with 0xFE/0xFF (the terminator),
    or at the end of the data.
    """
    stride = length + 4
    count = (n - pos) // stride
    if count < 2 or length >= 0xFFFFFF:
        return count if length < 0xFFFFFF else 0
    run = count - len(data[pos : pos + count * stride : stride].lstrip(bytes((length & 0xFF,))))
    if run > 1:
        run -= len(data[pos + 1 : pos + 1 + run * stride : stride].lstrip(bytes((length >> 8 & 0xFF,))))
    if run > 1:
        run -= len(data[pos + 2 : pos + 2 + run * stride : stride].lstrip(bytes((length >> 16,))))
    if run > 0:
        firsts = data[pos + 4 : pos + 4 + run * stride : stride]
        for marker in (b"\xfe", b"\xff"):
            found = firsts.find(marker)
            if 0 <= found < run:
                run = found
    return run


def _used_db(sql: str) -> str | None:
    match = _USE.match(sql)
    return match.group(1) if match is not None else None


def _strip_query_attributes(body: bytes, *, known: bool) -> bytes:
    """COM_QUERY under CLIENT_QUERY_ATTRIBUTES (MySQL 8): skip the attribute block.

    On a mid-stream attach the capability is unknown; the block is then recognised by its
    ``parameter_count=0, parameter_set_count=1`` prefix, which no SQL text starts with.
    """
    if not known:
        return body[2:] if body[:2] == b"\x00\x01" else body
    try:
        return body[p.skip_query_attributes(body) :]
    except p.BAD_BYTES:
        return body
