"""Handshake and login: the server greeting, the client's HandshakeResponse41, the
authentication exchange up to its OK or ERR, and the switch to TLS.

Sources: MySQL "Connection Phase" (Protocol::Handshake, Protocol::HandshakeResponse41,
Protocol::SSLRequest) and MariaDB's "Connection" KB page.
"""

from __future__ import annotations

from probe.mysql import constants as c
from probe.mysql import packets as p
from probe.mysql.compression import Inflater
from probe.mysql.events import LoginFinished, LoginSeen, ServerGreeted
from probe.mysql.state import AUTH, CLOSED, COMMANDS, CONNECT, GREETING, LOGIN, ConnectionState, Request, admin_template


class Handshake(ConnectionState):
    """The connection phase, both directions."""

    __slots__ = ()

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
        login = Request(-1, CONNECT, c.Reply.AUTH, ts, self._c_packet_end, None, size, self.db)
        login.template = admin_template(CONNECT)
        self._login = login
        self.phase = AUTH

    def _login_packet(self, ts: int, payload: bytes, size: int) -> None:
        if (self.phase == GREETING or self.phase == LOGIN) and payload and payload[0] == c.ERR_HEADER:
            # Refused before any authentication: too many connections (1040), host blocked
            # (1129) instead of a greeting; a bad handshake (1043) or packets out of order
            # (1156) instead of the authentication exchange.
            err = p.parse_err(payload)
            login = Request(-1, CONNECT, c.Reply.AUTH, ts, 0, None, 0, self.db)
            login.template = admin_template(CONNECT)
            login.bytes_out = size
            login.first_ns = ts
            self._finish(login, ts, err, 0, 0, queued=False)
            self._login_finished(ts, err)
            self.phase = CLOSED
            return
        if self.phase == GREETING:
            try:
                greeting = p.parse_greeting(payload)
            except p.BAD_BYTES as exc:
                self.not_mysql = True  # the server's first bytes are not a greeting
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
            self._login_finished(ts, None)
        elif header == c.ERR_HEADER:
            self._login = None
            err = p.parse_err(payload)
            self._finish(login, ts, err, 0, 0, queued=False)
            self._login_finished(ts, err)
            self.phase = CLOSED

    def _login_finished(self, ts: int, err: p.Err | None) -> None:
        if err is None:
            self._events.append(LoginFinished(ts, self.user, self.client, self.server, 0, "", ""))
        else:
            self._events.append(
                LoginFinished(ts, self.user, self.client, self.server, err.code, err.sqlstate, err.message)
            )
