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

from probe.mysql import constants as c
from probe.mysql.events import TO_CLIENT, TO_SERVER, Event, Garbage, ResponseLost
from probe.mysql.responses import Responses
from probe.mysql.state import (
    AUTH,
    CLOSED,
    COMMANDS,
    CONNECT,
    DEFAULT_MAX_PREPARED_BYTES,
    ENCRYPTED,
    GREETING,
    LOGIN,
    R_INFILE,
    UNSYNCED,
    ConversationLimits,
    PreparedBudget,
)

__all__ = ["DEFAULT_MAX_PREPARED_BYTES", "Conversation", "ConversationLimits", "PreparedBudget"]


class Conversation(Responses):
    """Protocol state of one client connection, fed by the TCP reassembler.

    The phases live in modules of their own, each a layer of this class: ``state``
    (fields and outcomes), ``handshake``, ``prepared``, ``requests``, ``responses``.
    """

    __slots__ = ()

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
                if self.phase == ENCRYPTED:
                    self._unread_exchange()
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
            lost = False
            while self.pending and (self.pending[0].resp_start is None or self.pending[0].resp_start < gap_end):
                self._lose(ts, "gap")
                lost = True
            if not lost and not self.pending:
                self._unread_exchange()
            self._turn_mark = self._c_off
            if self._login is not None:
                self._login = None
                self._events.append(ResponseLost(ts, CONNECT, "gap"))
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

    def session_snapshot(self) -> tuple[str, str, int | None, dict[int, str]] | None:
        """What a restart cannot learn again from the wire: (user, db, connection id,
        prepared statements by id), or None when there is nothing."""
        if not self.user and not self.prepared:
            return None
        return self.user, self.db, self.conn_id, {sid: stmt.sql for sid, stmt in self.prepared.items()}
