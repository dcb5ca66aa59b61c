"""Prepared statements: what a statement id means on this connection.

Owns COM_STMT_PREPARE (its template, and the COM_STMT_PREPARE_OK reply with its parameter
and column definitions), the statement ids an execute refers to, and the per-statement
state the other COM_STMT_* commands change (long data, close, reset).

Sources: MySQL "Prepared Statements" (COM_STMT_PREPARE, COM_STMT_PREPARE Response,
COM_STMT_EXECUTE, COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE, COM_STMT_RESET) and MariaDB's
"COM_STMT_EXECUTE" / "COM_STMT_BULK_EXECUTE" KB pages.
"""

from __future__ import annotations

from probe.mysql import constants as c
from probe.mysql import packets as p
from probe.mysql.handshake import Handshake
from probe.mysql.state import (
    LAST_PREPARED,
    R_PREP_COLS,
    R_PREP_PARAMS,
    UNKNOWN_STMT,
    PreparedStatement,
    Request,
    admin_template,
)
from probe.normalize import Template, count_placeholders, template_key


class PreparedStatements(Handshake):
    """Statement ids, their templates and the replies to COM_STMT_PREPARE."""

    __slots__ = ()

    def learn_prepared(self, stmt_id: int, sql: str) -> bool:
        """A statement prepared before this connection was seen (from a checkpoint, or the
        server's performance_schema): executes of ``stmt_id`` get its template."""
        if stmt_id in self.prepared:
            return False
        if len(self.prepared) >= self.limits.max_prepared:
            self._limit("max_prepared")
            return False
        inner = self.normalizer.normalize(sql)
        self._remember(stmt_id, PreparedStatement(inner, sql, count_placeholders(sql), True, stmt_id))
        return True

    def _statement(self, stmt_id: int) -> PreparedStatement | None:
        """The statement an id refers to; MariaDB's -1 is the most recent PREPARE request,
        whether or not its response has arrived yet (connectors send PREPARE and EXECUTE
        in one write)."""
        if stmt_id == LAST_PREPARED:
            return self.last_prepared
        return self.prepared.get(stmt_id)

    def _describe_prepare(self, cmd: Request, payload: bytes) -> None:
        sql = p.text(payload[1:])
        cmd.sql = sql
        inner = self.normalizer.normalize(sql)
        text = "PREPARE " + inner.text
        cmd.template = Template(template_key(text), text)
        # Known from the request already: the placeholder count stands in for the server's
        # parameter count until COM_STMT_PREPARE_OK says it.
        cmd.prepared = self.last_prepared = PreparedStatement(inner, sql, count_placeholders(sql), cmd.complete)

    def _describe_statement_command(self, cmd: Request, code: int, payload: bytes) -> None:
        cmd.template = admin_template(cmd.name)
        if len(payload) >= 5:
            stmt_id = int.from_bytes(payload[1:5], "little")
            stmt = self._statement(stmt_id)
            if stmt is None:
                return
            if code == c.Command.STMT_CLOSE:
                if stmt.stmt_id is not None and self.prepared.get(stmt.stmt_id) is stmt:
                    self._forget(self.prepared.pop(stmt.stmt_id))
            else:
                stmt.long_data.clear()

    def _describe_long_data(self, cmd: Request, payload: bytes) -> None:
        cmd.template = admin_template(cmd.name)
        if len(payload) >= 7:
            stmt = self._statement(int.from_bytes(payload[1:5], "little"))
            if stmt is not None:
                param = payload[5] | payload[6] << 8
                kept = stmt.long_data.get(param, b"")
                room = self.limits.max_long_data - len(kept)
                if room > 0:
                    stmt.long_data[param] = kept + payload[7 : 7 + room]

    def _describe_execute(self, cmd: Request, payload: bytes) -> None:
        """COM_STMT_EXECUTE and MariaDB's COM_STMT_BULK_EXECUTE: the statement's template,
        and the parameters (of the first row of a bulk) for samples. An execute of a
        statement whose PREPARE failed keeps that statement's template: the server's ERR
        lands there, not on an unrelated statement."""
        if len(payload) < 5:
            raise p.PacketError("truncated execute")
        stmt = self._statement(int.from_bytes(payload[1:5], "little"))
        if stmt is None:
            cmd.template = Template(template_key(UNKNOWN_STMT), UNKNOWN_STMT)
            cmd.complete = False
            return
        cmd.template = stmt.template
        cmd.sql = stmt.sql
        cmd.complete = cmd.complete and stmt.complete
        if stmt.failed:
            return
        try:
            if cmd.code == c.Command.STMT_EXECUTE:
                if len(payload) >= 10:
                    cmd.cursor = payload[5] != 0
                    cmd.params, stmt.types = p.decode_params(payload, 10, stmt.params, stmt.types, stmt.long_data)
                    stmt.long_data.clear()
            elif len(payload) >= 7:
                cmd.params, stmt.types = p.decode_bulk_first_row(payload, 5, stmt.params, stmt.types)
        except p.BAD_BYTES:
            # The packet's framing is intact: only the sample loses its parameters.
            stmt.long_data.clear()

    def _prepare_ok(self, ts: int, cmd: Request, payload: bytes) -> None:
        if not payload or payload[0] != c.OK_HEADER:
            raise p.PacketError("prepare reply is neither OK nor ERR")
        ok = p.parse_prepare_ok(payload)
        stmt = cmd.prepared
        if isinstance(stmt, PreparedStatement):
            if stmt.params != ok.params:
                stmt.params = ok.params
                stmt.types = None
            stmt.stmt_id = ok.stmt_id
            if ok.stmt_id not in self.prepared and len(self.prepared) >= self.limits.max_prepared:
                self._limit("max_prepared")
                self._forget(self.prepared.pop(next(iter(self.prepared))))
            self._remember(ok.stmt_id, stmt)
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

    def _prepare_failed(self, cmd: Request) -> None:
        """The server refused a COM_STMT_PREPARE: executes by -1 that follow it fail too."""
        stmt = cmd.prepared
        if isinstance(stmt, PreparedStatement):
            stmt.failed = True

    def _prepare_columns(self, ts: int, cmd: Request) -> None:
        """Parameter definitions are done: column definitions follow, if any."""
        columns = cmd.remaining_columns
        if columns:
            cmd.remaining = columns
            cmd.remaining_columns = 0
            cmd.state = R_PREP_COLS
        else:
            self._finish(cmd, ts, None, 0, 0)
