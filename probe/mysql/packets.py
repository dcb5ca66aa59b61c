"""Payload parsers for single MySQL packets: pure functions from bytes to values.

Owns the layouts of the server greeting (HandshakeV10), the client's HandshakeResponse41
and SSLRequest, OK / ERR / EOF packets, COM_STMT_PREPARE_OK and the binary parameters of
COM_STMT_EXECUTE. Every parser raises ``PacketError`` on a truncated or malformed payload;
the conversation counts that and resynchronises, it is never raised out of ``feed``.
"""

from __future__ import annotations

import struct
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

from probe.mysql import constants as c


class PacketError(ValueError):
    """The peer sent a payload that does not fit the layout expected here."""


#: Every exception a parser can raise on bytes that do not fit: ``PacketError`` from the
#: explicit checks, and what ``struct``/indexing raise on a payload cut short. The
#: conversation catches exactly these; anything else is a bug of ours and propagates.
BAD_BYTES = (ValueError, IndexError, struct.error, OverflowError)


_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")
_INTS: dict[int, tuple[struct.Struct, struct.Struct]] = {
    c.TYPE_TINY: (struct.Struct("<b"), struct.Struct("<B")),
    c.TYPE_SHORT: (struct.Struct("<h"), struct.Struct("<H")),
    c.TYPE_YEAR: (struct.Struct("<h"), struct.Struct("<H")),
    c.TYPE_LONG: (struct.Struct("<i"), struct.Struct("<I")),
    c.TYPE_INT24: (struct.Struct("<i"), struct.Struct("<I")),
    c.TYPE_LONGLONG: (struct.Struct("<q"), struct.Struct("<Q")),
}
#: Longest parameter value kept in a sample, in characters.
MAX_PARAM_CHARS = 256


def lenenc(buf: bytes, pos: int) -> tuple[int, int]:
    """Length-encoded integer at ``pos``: (value, position after it)."""
    if pos >= len(buf):
        raise PacketError("truncated length-encoded integer")
    first = buf[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFC:
        end = pos + 3
    elif first == 0xFD:
        end = pos + 4
    elif first == 0xFE:
        end = pos + 9
    else:
        raise PacketError(f"invalid length-encoded integer prefix 0x{first:02x}")
    if end > len(buf):
        raise PacketError("truncated length-encoded integer")
    return int.from_bytes(buf[pos + 1 : end], "little"), end


def lenenc_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    length, pos = lenenc(buf, pos)
    end = pos + length
    if end > len(buf):
        raise PacketError("truncated length-encoded string")
    return bytes(buf[pos:end]), end


def _nul_string(buf: bytes, pos: int) -> tuple[bytes, int]:
    end = buf.find(b"\0", pos)
    if end < 0:
        raise PacketError("unterminated string")
    return bytes(buf[pos:end]), end + 1


def text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


# -- handshake -------------------------------------------------------------------------------


class Greeting(NamedTuple):
    server_version: str
    conn_id: int
    capabilities: int  # MariaDB's extended capabilities at bits 32-63
    charset: int
    status: int
    auth_plugin: str
    mariadb: bool


def parse_greeting(payload: bytes) -> Greeting:
    """HandshakeV10 (protocol version 10)."""
    if len(payload) < 1 or payload[0] != 10:
        raise PacketError("not a protocol-10 server greeting")
    version, pos = _nul_string(payload, 1)
    if pos + 4 + 8 + 1 + 2 > len(payload):
        raise PacketError("truncated server greeting")
    conn_id = _U32.unpack_from(payload, pos)[0]
    pos += 4 + 8 + 1  # connection id, auth-plugin-data-part-1, filler
    caps = _U16.unpack_from(payload, pos)[0]
    pos += 2
    charset = status = 0
    plugin = ""
    server_version = text(version)
    mariadb = "mariadb" in server_version.lower()
    if pos + 16 <= len(payload):
        charset = payload[pos]
        status = _U16.unpack_from(payload, pos + 1)[0]
        caps |= _U16.unpack_from(payload, pos + 3)[0] << 16
        auth_len = payload[pos + 5]
        # MariaDB: the last 4 of the 10 reserved bytes carry extended capabilities when the
        # server clears CLIENT_MYSQL (bit 0).
        if not caps & c.CLIENT_LONG_PASSWORD:
            caps |= _U32.unpack_from(payload, pos + 12)[0] << 32
            mariadb = True
        pos += 16
        if caps & c.CLIENT_SECURE_CONNECTION:
            pos += max(13, auth_len - 8)
        if caps & c.CLIENT_PLUGIN_AUTH and pos < len(payload):
            end = payload.find(b"\0", pos)
            plugin = text(payload[pos : end if end >= 0 else len(payload)])
    return Greeting(server_version, conn_id, caps, charset, status, plugin, mariadb)


class HandshakeResponse(NamedTuple):
    capabilities: int
    user: str
    db: str
    auth_plugin: str
    ssl_request: bool


def parse_handshake_response(payload: bytes, server_caps: int | None) -> HandshakeResponse:
    """HandshakeResponse41 / 320, or the 32-byte SSLRequest that precedes TLS."""
    if len(payload) < 4:
        raise PacketError("truncated handshake response")
    caps = _U16.unpack_from(payload, 0)[0]
    if not caps & c.CLIENT_PROTOCOL_41:
        # HandshakeResponse320: capabilities int<2>, max packet int<3>, user, auth.
        if caps & c.CLIENT_SSL and len(payload) == 5:
            return HandshakeResponse(caps, "", "", "", True)
        user, _ = _nul_string(payload, 5)
        return HandshakeResponse(caps, text(user), "", "", False)
    if len(payload) < 32:
        raise PacketError("truncated handshake response")
    caps = _U32.unpack_from(payload, 0)[0]
    if not caps & c.CLIENT_LONG_PASSWORD and (server_caps is None or server_caps >> 32):
        caps |= _U32.unpack_from(payload, 28)[0] << 32
    if server_caps is not None:
        caps &= server_caps | 0xFFFF  # keep what both ends can do (low bits are advisory)
    if len(payload) == 32:
        if caps & c.CLIENT_SSL:
            return HandshakeResponse(caps, "", "", "", True)
        raise PacketError("32-byte handshake response without CLIENT_SSL")
    user, pos = _nul_string(payload, 32)
    if caps & c.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        _, pos = lenenc_bytes(payload, pos)
    elif caps & c.CLIENT_SECURE_CONNECTION:
        if pos >= len(payload):
            raise PacketError("truncated auth response")
        pos += 1 + payload[pos]
    else:
        _, pos = _nul_string(payload, pos)
    db = b""
    if caps & c.CLIENT_CONNECT_WITH_DB and pos < len(payload):
        db, pos = _nul_string(payload, pos)
    plugin = b""
    if caps & c.CLIENT_PLUGIN_AUTH and pos < len(payload):
        end = payload.find(b"\0", pos)
        plugin = payload[pos : end if end >= 0 else len(payload)]
    return HandshakeResponse(caps, text(user), text(db), text(plugin), False)


def parse_change_user(payload: bytes, caps: int) -> tuple[str, str]:
    """COM_CHANGE_USER: (user, database)."""
    user, pos = _nul_string(payload, 1)
    if caps & c.CLIENT_SECURE_CONNECTION:
        if pos >= len(payload):
            raise PacketError("truncated COM_CHANGE_USER")
        pos += 1 + payload[pos]
    else:
        _, pos = _nul_string(payload, pos)
    db = b""
    if pos < len(payload):
        db, _ = _nul_string(payload, pos)
    return text(user), text(db)


# -- generic responses ----------------------------------------------------------------------


class Ok(NamedTuple):
    affected_rows: int
    last_insert_id: int
    status: int
    warnings: int
    schema: str | None  # new default database, from the session state tracker


def parse_ok(payload: bytes, caps: int) -> Ok:
    """OK packet (header 0x00, or 0xFE when it ends a result set under DEPRECATE_EOF)."""
    affected, pos = lenenc(payload, 1)
    insert_id, pos = lenenc(payload, pos)
    status = warnings = 0
    if pos + 4 <= len(payload):
        status, warnings = _U16.unpack_from(payload, pos)[0], _U16.unpack_from(payload, pos + 2)[0]
        pos += 4
    schema = None
    if caps & c.CLIENT_SESSION_TRACK and status & c.SERVER_SESSION_STATE_CHANGED and pos < len(payload):
        schema = _tracked_schema(payload, pos)
    return Ok(affected, insert_id, status, warnings, schema)


def _tracked_schema(payload: bytes, pos: int) -> str | None:
    _, pos = lenenc_bytes(payload, pos)  # human-readable info
    if pos >= len(payload):
        return None
    changes, _ = lenenc_bytes(payload, pos)
    cursor = 0
    schema = None
    while cursor < len(changes):
        kind = changes[cursor]
        data, cursor = lenenc_bytes(changes, cursor + 1)
        if kind == c.SESSION_TRACK_SCHEMA:
            name, _ = lenenc_bytes(data, 0)
            schema = text(name)
    return schema


class Err(NamedTuple):
    code: int
    sqlstate: str
    message: str


def parse_err(payload: bytes) -> Err:
    if len(payload) < 3:
        raise PacketError("truncated ERR packet")
    code = _U16.unpack_from(payload, 1)[0]
    if len(payload) >= 9 and payload[3] == 0x23:  # '#'
        return Err(code, payload[4:9].decode("ascii", "replace"), text(payload[9:]))
    return Err(code, "", text(payload[3:]))


def parse_eof(payload: bytes) -> tuple[int, int]:
    """EOF packet: (warnings, status)."""
    if len(payload) >= 5:
        return _U16.unpack_from(payload, 1)[0], _U16.unpack_from(payload, 3)[0]
    return 0, 0


class PrepareOk(NamedTuple):
    stmt_id: int
    columns: int
    params: int
    warnings: int


def parse_prepare_ok(payload: bytes) -> PrepareOk:
    if len(payload) < 9:
        raise PacketError("truncated COM_STMT_PREPARE_OK")
    stmt_id = _U32.unpack_from(payload, 1)[0]
    columns = _U16.unpack_from(payload, 5)[0]
    params = _U16.unpack_from(payload, 7)[0]
    warnings = _U16.unpack_from(payload, 10)[0] if len(payload) >= 12 else 0
    return PrepareOk(stmt_id, columns, params, warnings)


# -- binary protocol values -------------------------------------------------------------------


def _sample_text(raw: bytes) -> str:
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        value = "0x" + raw[: MAX_PARAM_CHARS // 2].hex()
    if len(value) > MAX_PARAM_CHARS:
        value = value[:MAX_PARAM_CHARS] + "..."
    return value


def _temporal(kind: int, raw: bytes) -> Any:
    n = len(raw)
    if kind == c.TYPE_TIME:
        if n == 0:
            return "00:00:00"
        negative, days = raw[0], _U32.unpack_from(raw, 1)[0]
        micro = _U32.unpack_from(raw, 8)[0] if n >= 12 else 0
        delta = timedelta(days=days, hours=raw[5], minutes=raw[6], seconds=raw[7], microseconds=micro)
        return ("-" if negative else "") + str(delta)
    if n == 0:
        return "0000-00-00"
    year, month, day = _U16.unpack_from(raw, 0)[0], raw[2], raw[3]
    try:
        if n == 4:
            return date(year, month, day).isoformat()
        micro = _U32.unpack_from(raw, 7)[0] if n >= 11 else 0
        return datetime(year, month, day, raw[4], raw[5], raw[6], micro).isoformat(sep=" ")
    except ValueError:  # zero dates such as 0000-00-00 are legal in MySQL
        return f"{year:04d}-{month:02d}-{day:02d}"


def decode_params(
    payload: bytes,
    pos: int,
    count: int,
    types: list[int] | None,
    long_data: dict[int, bytes] | None = None,
) -> tuple[tuple[Any, ...], list[int] | None]:
    """Binary parameters of COM_STMT_EXECUTE starting at the NULL bitmap.

    ``types`` are the types bound by an earlier execute (sent only when the client rebinds).
    Parameters sent with COM_STMT_SEND_LONG_DATA are absent from the payload and taken from
    ``long_data``. Returns (values, types in force). Unsigned integers (type flag 0x80) stay
    unsigned: mysql-connector-python sets the flag and pt-query-digest aborts on it.
    """
    if count == 0:
        return (), types
    bitmap_len = (count + 7) // 8
    bitmap = payload[pos : pos + bitmap_len]
    pos += bitmap_len
    if pos >= len(payload):
        raise PacketError("truncated execute parameters")
    bound = payload[pos]
    pos += 1
    if bound:
        end = pos + 2 * count
        if end > len(payload):
            raise PacketError("truncated parameter types")
        types = [payload[i] | payload[i + 1] << 8 for i in range(pos, end, 2)]
        pos = end
    if types is None or len(types) != count:
        raise PacketError("parameter types unknown")
    values, _ = read_values(payload, pos, types, bitmap, long_data)
    return values, types


#: COM_STMT_BULK_EXECUTE flag: parameter types follow the flags.
BULK_SEND_TYPES = 128
#: COM_STMT_BULK_EXECUTE per-value indicators (MariaDB "COM_STMT_BULK_EXECUTE").
BULK_NONE, BULK_NULL, BULK_DEFAULT, BULK_IGNORE = 0, 1, 2, 3


def decode_bulk_first_row(
    payload: bytes, pos: int, count: int, types: list[int] | None
) -> tuple[tuple[Any, ...], list[int] | None]:
    """The first parameter row of MariaDB's COM_STMT_BULK_EXECUTE, for samples.

    Layout after the statement id (``pos``): int<2> flags; with ``BULK_SEND_TYPES`` one
    int<1> type and int<1> flag per parameter; then rows, each value preceded by an
    int<1> indicator (0 a value follows, 1 NULL, 2 DEFAULT, 3 IGNORE). Returns (values of
    the first row, types in force); DEFAULT and IGNORE read as None.
    """
    if pos + 2 > len(payload):
        raise PacketError("truncated bulk execute")
    flags = payload[pos] | payload[pos + 1] << 8
    pos += 2
    if flags & BULK_SEND_TYPES:
        end = pos + 2 * count
        if end > len(payload):
            raise PacketError("truncated bulk parameter types")
        types = [payload[i] | payload[i + 1] << 8 for i in range(pos, end, 2)]
        pos = end
    if count == 0:
        return (), types
    if types is None or len(types) != count:
        raise PacketError("parameter types unknown")
    values: list[Any] = []
    no_nulls = b"\0"
    for type_code in types:
        if pos >= len(payload):
            raise PacketError("truncated bulk row")
        indicator = payload[pos]
        pos += 1
        if indicator != BULK_NONE:
            values.append(None)
            continue
        value, pos = read_values(payload, pos, [type_code], no_nulls)
        values.append(value[0])
    return tuple(values), types


def read_values(
    payload: bytes,
    pos: int,
    types: list[int],
    null_bitmap: bytes,
    long_data: dict[int, bytes] | None = None,
) -> tuple[tuple[Any, ...], int]:
    """Binary-protocol values of the given types: (values, position after them)."""
    values: list[Any] = []
    for index, type_code in enumerate(types):
        if null_bitmap[index >> 3] & (1 << (index & 7)):
            values.append(None)
            continue
        if long_data is not None and index in long_data:
            values.append(_sample_text(long_data[index]))
            continue
        kind = type_code & 0xFF
        ints = _INTS.get(kind)
        if ints is not None:
            fmt = ints[1] if type_code >> 8 & c.UNSIGNED_FLAG else ints[0]
            if pos + fmt.size > len(payload):
                raise PacketError("truncated integer parameter")
            values.append(fmt.unpack_from(payload, pos)[0])
            pos += fmt.size
        elif kind == c.TYPE_DOUBLE or kind == c.TYPE_FLOAT:
            fmt = _DOUBLE if kind == c.TYPE_DOUBLE else _FLOAT
            if pos + fmt.size > len(payload):
                raise PacketError("truncated float parameter")
            values.append(fmt.unpack_from(payload, pos)[0])
            pos += fmt.size
        elif kind == c.TYPE_NULL:
            values.append(None)
        elif kind in (c.TYPE_DATE, c.TYPE_DATETIME, c.TYPE_TIMESTAMP, c.TYPE_TIME, c.TYPE_NEWDATE):
            if pos >= len(payload):
                raise PacketError("truncated temporal parameter")
            length = payload[pos]
            raw = payload[pos + 1 : pos + 1 + length]
            if len(raw) != length:
                raise PacketError("truncated temporal parameter")
            values.append(_temporal(kind, raw))
            pos += 1 + length
        else:
            raw, pos = lenenc_bytes(payload, pos)
            values.append(_sample_text(raw))
    return tuple(values), pos


def skip_query_attributes(body: bytes) -> int:
    """Length of the query-attribute block that starts a COM_QUERY under
    CLIENT_QUERY_ATTRIBUTES (MySQL 8.0.23+): counts, NULL bitmap, types, names, values."""
    count, pos = lenenc(body, 0)
    _, pos = lenenc(body, pos)  # parameter_set_count, always 1
    if count == 0:
        return pos
    bitmap = body[pos : pos + (count + 7) // 8]
    pos += len(bitmap)
    if pos >= len(body):
        raise PacketError("truncated query attributes")
    bound = body[pos]
    pos += 1
    if not bound:
        raise PacketError("query attributes without types")
    types: list[int] = []
    for _ in range(count):
        if pos + 2 > len(body):
            raise PacketError("truncated query attribute type")
        types.append(body[pos] | body[pos + 1] << 8)
        _, pos = lenenc_bytes(body, pos + 2)
    _, pos = read_values(body, pos, types, bitmap)
    return pos
