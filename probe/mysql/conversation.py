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
from probe.normalize import Normalizer, Template, split_statements, template_key

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
    """A request awaiting (or receiving) its response."""

    __slots__ = (
        "affected",
        "bytes_in",
        "bytes_out",
        "code",
        "complete",
        "cursor",
        "first_ns",
        "name",
        "params",
        "piece",
        "pieces",
        "prepared",
        "remaining",
        "remaining_columns",
        "reply",
        "req_end",
        "resp_start",
        "rows",
        "session_arg",
        "sql",
        "start_ns",
        "state",
        "template",
    )

    def __init__(self, code: int, name: str, reply: int, start_ns: int, req_end: int, resp_start: int | None):
        self.code = code
        self.name = name
        self.reply = reply
        self.state = R_FIRST
        self.start_ns = start_ns
        self.first_ns = 0
        self.req_end = req_end
        self.resp_start = resp_start
        self.bytes_in = 0
        self.bytes_out = 0
        self.rows = 0
        self.affected = 0
        self.remaining = 0
        self.remaining_columns = 0
        self.sql = ""
        self.template: Template | None = None
        self.params: tuple[Any, ...] | None = None
        self.pieces: list[str] | None = None
        self.piece = 0
        self.prepared: Any = None
        self.session_arg: Any = None
        self.complete = True
        self.cursor = False


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

    def feed(self, ts: int, direction: int, data: bytes, ack: int | None = None) -> list[Event]:
        """Bytes of one segment, in stream order. ``ack``: the sender's acknowledgement as an
        absolute offset into the other direction's stream, when known."""
        self._events = events = []
        if not data:
            return events
        if direction == TO_SERVER:
            start = self._c_off
            self._c_off += len(data)
            if self.phase < ENCRYPTED:
                self._client_segment(ts, data, start, ack)
            else:
                self.unparsed_segments += 1
        else:
            start = self._s_off
            self._s_off += len(data)
            self._s_last_ns = ts
            if ack is not None:
                self._server_ack = ack
            if self.phase < ENCRYPTED:
                self._server_segment(ts, data, start, ack)
            else:
                self.unparsed_segments += 1
        return events

    def gap(self, ts: int, direction: int, size: int) -> list[Event]:
        """``size`` bytes of ``direction`` were lost; parsing resumes at a boundary."""
        self._events = events = []
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
            while self.pending and (
                self.pending[0].resp_start is None or self.pending[0].resp_start < gap_end
            ):
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
        self._events = events = []
        while self.pending:
            cmd = self.pending[0]
            if cmd.reply == c.Reply.OPAQUE and cmd.first_ns:
                self._finish(cmd, self._s_last_ns, None, 0, 0)
            else:
                self._lose(ts, reason)
        self.phase = CLOSED
        return events

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
            except p.PacketError as exc:
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

    def _client_packet(
        self, ts: int, seq: int, payload: bytes, size: int, cut: bool, ack: int | None
    ) -> None:
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
        except p.PacketError as exc:
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
        login = _Command(-1, _CONNECT, c.Reply.AUTH, ts, self._c_packet_end, None)
        login.template = _admin_template(_CONNECT)
        login.bytes_in = size
        self._login = login
        self.phase = AUTH

    def _command(self, ts: int, payload: bytes, size: int, cut: bool, ack: int | None) -> None:
        code = payload[0]
        spec = c.COMMANDS.get(code)
        name, reply = (
            (spec.name, spec.reply) if spec is not None else (f"Unknown 0x{code:02x}", c.Reply.OPAQUE)
        )
        cmd = _Command(code, name, reply, ts, self._c_packet_end, ack)
        cmd.bytes_in = size
        cmd.complete = not cut
        pending = self.pending
        if pending:
            prev = pending[-1]
            if prev.reply == c.Reply.OPAQUE and prev.first_ns:
                # An unknown command's response ends where the next request begins.
                self._finish(prev, self._s_last_ns, None, 0, 0)
        try:
            self._describe(cmd, code, payload)
        except p.PacketError as exc:
            self._client_garbage(ts, str(exc))
            cmd.complete = False
        if reply == c.Reply.NONE:
            self._finish(cmd, ts, None, 0, 0, queued=False)
            if code == c.Command.QUIT:
                self.phase = CLOSED
            return
        if pending and pending[-1].start_ns > ts:
            cmd.start_ns = pending[-1].start_ns
        if len(pending) >= self.limits.max_pending:
            self._limit("max_pending")
            self._lose(ts, "too many pipelined requests")
        pending.append(cmd)

    def _describe(self, cmd: _Command, code: int, payload: bytes) -> None:
        """Fill the statement text, template and session effect of a request."""
        if code == c.Command.QUERY:
            body = payload[1:]
            if self.caps is None or self.caps & c.CLIENT_QUERY_ATTRIBUTES:
                body = _strip_query_attributes(body, known=self.caps is not None)
            sql = p.text(body)
            cmd.sql = sql
            if self.multi_statements and ";" in sql:
                pieces = split_statements(sql)
                if len(pieces) > 1:
                    cmd.pieces = pieces
                    sql = pieces[0]
            cmd.template = self.normalizer.normalize(sql)
            match = _USE.match(sql)
            if match is not None:
                cmd.session_arg = match.group(1)
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
            user_end = payload.find(b"\0", 1)
            if user_end > 0:
                cmd.session_arg = p.text(payload[1:user_end])
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

    def _server_segment(self, ts: int, data: bytes, start: int, ack: int | None) -> None:
        if self._s_desync:
            data = self._server_boundary(ts, data, start)
            if not data:
                self.unparsed_segments += 1
                return
        elif ack is not None and self.pending and not self._s_buf and not self._s_skip:
            head = self.pending[0]
            if ack < head.req_end and head.state != R_INFILE and not head.first_ns:
                # Sent before the server had read our request: an earlier, unseen response.
                self._events.append(Garbage(ts, TO_CLIENT, "response to an unseen request"))
                return
        if self._s_inflate is not None:
            try:
                data = self._s_inflate.feed(data)
            except p.PacketError as exc:
                self._server_garbage(ts, str(exc))
                return
        self._server_plain(ts, data)

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
        except p.PacketError:
            return False
        self.server_caps = greeting.capabilities
        self.conn_id = greeting.conn_id
        self.phase = LOGIN
        self._s_desync = False
        self._c_desync = False
        self._events.append(
            ServerGreeted(
                ts, greeting.server_version, greeting.conn_id, greeting.capabilities, greeting.mariadb
            )
        )
        return True

    def _server_plain(self, ts: int, data: bytes) -> None:
        buf = self._s_buf
        if buf:
            buf += data
            data = bytes(buf)
            buf.clear()
        pos = 0
        n = len(data)
        pending = self.pending
        while pos < n:
            skip = self._s_skip
            if skip:
                take = n - pos if skip > n - pos else skip
                pos += take
                self._s_skip = skip - take
                if self._s_skip:
                    return
                continue
            if n - pos < 4:
                break
            length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
            if self._s_cont:
                # Continuation of a payload of 16 MiB or more: nothing in it to interpret.
                self._s_cont = length == c.MAX_PACKET_LENGTH
                if pending:
                    pending[0].bytes_out += 4 + length
                pos += 4
                self._s_skip = length
                continue
            if not pending:
                if self.phase == COMMANDS or self.phase == UNSYNCED:
                    if not self._unsolicited(ts, data, pos, n, length):
                        return
                    pos += 4 + length
                    continue
                if self.phase == AUTH or self.phase == GREETING:
                    end = pos + 4 + length
                    if end > n:
                        break
                    self._login_packet(ts, data[pos + 4 : end], 4 + length)
                    pos = end
                    continue
                self._server_garbage(ts, "server bytes with no request pending")
                return
            cmd = pending[0]
            if not cmd.first_ns:
                cmd.first_ns = ts
            state = cmd.state
            if state == R_ROWS and n - pos > 4:
                first = data[pos + 4]
                if first < 0xFE or length == c.MAX_PACKET_LENGTH:
                    cmd.rows += 1
                    cmd.bytes_out += 4 + length
                    self._s_cont = length == c.MAX_PACKET_LENGTH
                    end = pos + 4 + length
                    if end > n:
                        self._s_skip = end - n
                        return
                    pos = end
                    continue
            elif state == R_COLDEFS or state == R_PREP_PARAMS or state == R_PREP_COLS:
                cmd.bytes_out += 4 + length
                end = pos + 4 + length
                cmd.remaining -= 1
                if cmd.remaining <= 0:
                    self._definitions_done(ts, cmd, data, end)
                if end > n:
                    self._s_skip = end - n
                    return
                pos = end
                continue
            elif state == R_OPAQUE:
                cmd.bytes_out += n - pos
                return
            end = pos + 4 + length
            if end > n:
                if length + 4 > self.limits.max_packet_buffer:
                    self._server_garbage(ts, f"control packet of {length} bytes")
                    return
                break
            payload = data[pos + 4 : end]
            pos = end
            cmd.bytes_out += 4 + length
            self._s_cont = length == c.MAX_PACKET_LENGTH
            try:
                self._response_packet(ts, cmd, payload, length)
            except p.PacketError as exc:
                self._server_garbage(ts, str(exc))
                return
            if self._s_desync or self.phase >= ENCRYPTED:
                return
        if pos < n:
            self._s_buf += data[pos:]

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
                login = _Command(-1, _CONNECT, c.Reply.AUTH, ts, 0, None)
                login.template = _admin_template(_CONNECT)
                login.bytes_out = size
                login.first_ns = ts
                self._finish(login, ts, err, 0, 0, queued=False)
                return
            try:
                greeting = p.parse_greeting(payload)
            except p.PacketError as exc:
                self._server_garbage(ts, str(exc))
                return
            self.server_caps = greeting.capabilities
            self.conn_id = greeting.conn_id
            self.phase = LOGIN
            self._events.append(
                ServerGreeted(
                    ts, greeting.server_version, greeting.conn_id, greeting.capabilities, greeting.mariadb
                )
            )
            return
        login = self._login
        if login is None:
            return
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
                self.user = cmd.session_arg or self.user
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
        if ok.schema is not None:
            self.db = ok.schema
        elif cmd.session_arg is not None:
            if cmd.code == c.Command.INIT_DB or cmd.code == c.Command.QUERY:
                self.db = str(cmd.session_arg)
            elif cmd.code == c.Command.SET_OPTION:
                self.multi_statements = cmd.session_arg == 0
        if cmd.code == c.Command.RESET_CONNECTION:
            self.prepared.clear()
        self._statement_end(ts, cmd, None, ok.status, ok.warnings, plain_ok=True)

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
        match = _USE.match(sql)
        cmd.session_arg = match.group(1) if match is not None else None
        cmd.start_ns = ts
        cmd.first_ns = 0
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
        self._events.append(
            CommandCompleted(
                cmd.name,
                template.key,
                template.text,
                sql,
                cmd.params,
                self.db,
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


def _strip_query_attributes(body: bytes, *, known: bool) -> bytes:
    """COM_QUERY under CLIENT_QUERY_ATTRIBUTES (MySQL 8): skip the attribute block.

    On a mid-stream attach the capability is unknown; the block is then recognised by its
    ``parameter_count=0, parameter_set_count=1`` prefix, which no SQL text starts with.
    """
    if not known:
        return body[2:] if body[:2] == b"\x00\x01" else body
    try:
        return body[p.skip_query_attributes(body) :]
    except p.PacketError:
        return body
