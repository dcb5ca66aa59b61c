"""Requests: the client's stream, framed into packets and turned into pending commands.

Owns the client -> server direction after the handshake: finding a command boundary when
the stream is out of sync, the compressed protocol's client half, logical packets of
16 MiB and more, LOCAL INFILE data, and the description of each command (its SQL text,
template and session effect). Each request is queued as a ``Request`` whose reply kind
comes from ``constants.COMMANDS``; ``responses`` completes it.

Sources: MySQL "Command Phase" and "Text Protocol" (COM_QUERY, COM_INIT_DB, ...) pages.
"""

from __future__ import annotations

from probe.mysql import constants as c
from probe.mysql import packets as p
from probe.mysql.compression import Inflater, looks_compressed
from probe.mysql.events import TO_SERVER
from probe.mysql.prepared import PreparedStatements
from probe.mysql.state import (
    AUTH,
    CLOSED,
    COMMANDS,
    ENCRYPTED,
    GREETING,
    LOGIN,
    PENDING_OVERHEAD,
    R_AUTH,
    R_FIRST,
    R_INFILE,
    TLS_RECORD,
    UNSYNCED,
    Request,
    admin_template,
    used_db,
)
from probe.normalize import split_statements


class Requests(PreparedStatements):
    """The client -> server direction."""

    __slots__ = ()

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
        if first in TLS_RECORD and len(data) > 2 and data[1] == 3:
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
                # The rest of a long physical packet: keep what the limit allows.
                take = min(self._c_skip, n - pos)
                part = self._c_part
                if part is not None:
                    room = limits.max_query_bytes - len(part)
                    if room > 0:
                        part += data[pos : pos + min(take, room)]
                    if take > room:
                        self._c_part_cut = True
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
                self._c_skip = end - chunk_end  # the rest comes in later segments
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
            if (seq != 0 and not self.compressed) or not payload:
                # Under the compressed protocol the frame's own sequence id marks the command
                # boundary and MariaDB does not check the inner one: Connector/J sends the
                # COM_STMT_EXECUTE that follows COM_STMT_SEND_LONG_DATA with inner id 1.
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
            if phase == GREETING:
                self.not_mysql = True  # MySQL clients never speak first (HTTP, TLS, ...)
            self._client_garbage(ts, "client bytes before the server greeting")

    def _command(self, ts: int, payload: bytes, size: int, cut: bool, ack: int | None) -> None:
        code = payload[0]
        limits = self.limits
        if len(payload) > limits.max_query_bytes and (code == c.Command.QUERY or code == c.Command.STMT_PREPARE):
            # SQL text is kept up to the limit however the packet arrived (one segment or many).
            payload = payload[: limits.max_query_bytes]
            cut = True
        pending = self.pending
        if pending:
            prev = pending[-1]
            if prev.reply == c.Reply.OPAQUE and prev.first_ns:
                # An unknown command's response ends where the next request begins.
                self._finish(prev, self._s_last_ns, None, 0, 0)
        if code == c.Command.QUERY and not cut and self.caps is not None and not self.caps & c.CLIENT_QUERY_ATTRIBUTES:
            # COM_QUERY, the common case, described inline.
            cmd = Request(code, "Query", c.Reply.RESULT, ts, self._c_packet_end, ack, size, self.db)
            sql = payload[1:].decode("utf-8", "replace")
            cmd.sql = sql
            if ";" in sql and self.multi_statements:
                self._split(cmd, sql)
            else:
                template = cmd.template = self.normalizer.normalize(sql)
                if template.text.startswith("USE "):
                    cmd.session_arg = used_db(sql)
        else:
            spec = c.COMMANDS.get(code)
            if spec is not None:
                cmd = Request(code, spec.name, spec.reply, ts, self._c_packet_end, ack, size, self.db)
            else:
                cmd = Request(code, f"Unknown 0x{code:02x}", c.Reply.OPAQUE, ts, self._c_packet_end, ack, size, self.db)
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
        cmd.cost = cost = PENDING_OVERHEAD + (size if size < limits.max_query_bytes else limits.max_query_bytes)
        self.pending_bytes += cost
        while self.pending_bytes > limits.max_pending_bytes and pending:
            self._limit("max_pending_bytes")
            self._lose(ts, "too many pipelined requests")
        pending.append(cmd)

    def _split(self, cmd: Request, sql: str) -> None:
        """A query that may hold several statements: one event per statement executed."""
        pieces = split_statements(sql)
        if len(pieces) > 1:
            cmd.pieces = pieces
            sql = pieces[0]
        template = cmd.template = self.normalizer.normalize(sql)
        if template.text.startswith("USE "):
            cmd.session_arg = used_db(sql)

    def _describe(self, cmd: Request, code: int, payload: bytes) -> None:
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
                    cmd.session_arg = used_db(sql)
        elif code == c.Command.STMT_EXECUTE or code == c.Command.STMT_BULK_EXECUTE:
            self._describe_execute(cmd, payload)
        elif code == c.Command.STMT_PREPARE:
            self._describe_prepare(cmd, payload)
        elif code == c.Command.INIT_DB:
            cmd.session_arg = p.text(payload[1:])
            cmd.template = admin_template(cmd.name)
        elif code == c.Command.STMT_CLOSE or code == c.Command.STMT_RESET or code == c.Command.STMT_FETCH:
            self._describe_statement_command(cmd, code, payload)
        elif code == c.Command.STMT_SEND_LONG_DATA:
            self._describe_long_data(cmd, payload)
        elif code == c.Command.SET_OPTION:
            cmd.template = admin_template(cmd.name)
            if len(payload) >= 3:
                cmd.session_arg = payload[1] | payload[2] << 8
        elif code == c.Command.CHANGE_USER:
            cmd.template = admin_template(cmd.name)
            cmd.state = R_AUTH
            cmd.session_arg = p.parse_change_user(payload, self.caps or c.CLIENT_SECURE_CONNECTION)
        else:
            cmd.template = admin_template(cmd.name)


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
