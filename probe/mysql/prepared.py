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

    def learn_prepared(self, stmt_id: int, sql: str) -> bool:
        """A statement prepared before this connection was seen (from a checkpoint, or the
        server's performance_schema): executes of ``stmt_id`` get its template."""
        if stmt_id in self.prepared:
            return False
        if len(self.prepared) >= self.limits.max_prepared:
            self._limit("max_prepared")
            return False
        inner = self.normalizer.normalize(sql)
        self.prepared[stmt_id] = PreparedStatement(inner, sql, count_placeholders(sql), True)
        return True

    def _describe_prepare(self, cmd: Request, payload: bytes) -> None:
        sql = p.text(payload[1:])
        cmd.sql = sql
        inner = self.normalizer.normalize(sql)
        text = "PREPARE " + inner.text
        cmd.template = Template(template_key(text), text)
        cmd.prepared = inner

    def _describe_statement_command(self, cmd: Request, code: int, payload: bytes) -> None:
        cmd.template = admin_template(cmd.name)
        if len(payload) >= 5:
            stmt_id = int.from_bytes(payload[1:5], "little")
            if code == c.Command.STMT_CLOSE:
                self.prepared.pop(stmt_id, None)
            else:
                stmt = self.prepared.get(stmt_id)
                if stmt is not None:
                    stmt.long_data.clear()

    def _describe_long_data(self, cmd: Request, payload: bytes) -> None:
        cmd.template = admin_template(cmd.name)
        if len(payload) >= 7:
            stmt = self.prepared.get(int.from_bytes(payload[1:5], "little"))
            if stmt is not None:
                param = payload[5] | payload[6] << 8
                kept = stmt.long_data.get(param, b"")
                room = self.limits.max_long_data - len(kept)
                if room > 0:
                    stmt.long_data[param] = kept + payload[7 : 7 + room]

    def _describe_execute(self, cmd: Request, payload: bytes) -> None:
        if len(payload) < 5:
            raise p.PacketError("truncated execute")
        stmt_id = int.from_bytes(payload[1:5], "little")
        if stmt_id == 0xFFFFFFFF and self.last_stmt_id is not None:
            stmt_id = self.last_stmt_id  # MariaDB: "the statement prepared last"
        stmt = self.prepared.get(stmt_id)
        if stmt is None:
            cmd.template = Template(template_key(UNKNOWN_STMT), UNKNOWN_STMT)
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

    def _prepare_ok(self, ts: int, cmd: Request, payload: bytes) -> None:
        if not payload or payload[0] != c.OK_HEADER:
            raise p.PacketError("prepare reply is neither OK nor ERR")
        ok = p.parse_prepare_ok(payload)
        inner = cmd.prepared
        if isinstance(inner, Template):
            stmt = PreparedStatement(inner, cmd.sql, ok.params, cmd.complete)
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

    def _prepare_columns(self, ts: int, cmd: Request) -> None:
        """Parameter definitions are done: column definitions follow, if any."""
        columns = cmd.remaining_columns
        if columns:
            cmd.remaining = columns
            cmd.remaining_columns = 0
            cmd.state = R_PREP_COLS
        else:
            self._finish(cmd, ts, None, 0, 0)
