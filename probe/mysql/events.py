"""Events the MySQL conversation emits: what a passive observer learns from the wire.

Owns the event types of ``probe.mysql``. They are immutable ``NamedTuple``s rather than
frozen dataclasses: ``CommandCompleted`` is built once per statement on the hot path, and
a 22-field named tuple is built 3x faster than a frozen dataclass of the same fields.
Timestamps are packet timestamps in nanoseconds; durations are microseconds.
"""

from __future__ import annotations

from typing import Any, NamedTuple

#: Direction of bytes within one connection.
TO_SERVER = 0
TO_CLIENT = 1


class CommandCompleted(NamedTuple):
    """One command (or one statement of a multi-statement query) and its outcome."""

    command: str  # "Query", "Execute", "Prepare", "Ping", "Connect", ...
    key: str  # template key: first 16 hex digits of md5(template)
    template: str
    sql: str  # raw statement text (possibly cut at the capture limit); "" if none
    params: tuple[Any, ...] | None  # decoded binary parameters of an Execute
    db: str
    user: str
    client: str  # "ip:port"
    server: str  # "ip:port"
    conn_id: int | None  # from the server greeting, when it was seen
    start_ns: int  # timestamp of the last request byte
    end_ns: int  # timestamp of the last response byte
    latency_us: int  # last request byte -> last response byte
    ttfb_us: int  # last request byte -> first response byte
    error_code: int  # 0 when the command succeeded
    sqlstate: str
    error_message: str
    rows_sent: int
    rows_affected: int
    bytes_in: int  # request bytes, packet headers included
    bytes_out: int  # response bytes, packet headers included
    status_flags: int  # server status of the final OK/EOF packet
    warnings: int
    complete: bool  # False when the SQL text was cut or the template is unknown


class ServerGreeted(NamedTuple):
    ts_ns: int
    server_version: str
    conn_id: int
    capabilities: int
    mariadb: bool


class LoginSeen(NamedTuple):
    ts_ns: int
    user: str
    db: str
    capabilities: int


class LoginFinished(NamedTuple):
    """How a login attempt ended: accepted (``error_code`` 0) or refused by the server's ERR
    (1045 wrong password, 1040 too many connections, 1129 host blocked, 1156 packets out of
    order, ...), whether the refusal came before, during or after the authentication."""

    ts_ns: int
    user: str  # "" when the server refused before the client said who it is
    client: str  # "ip:port"
    server: str
    error_code: int
    sqlstate: str
    error_message: str


class ServerError(NamedTuple):
    """An ERR packet no request asked for (connection killed, idle timeout, shutdown):
    reported, never dropped."""

    ts_ns: int
    user: str
    client: str
    server: str
    error_code: int
    sqlstate: str
    error_message: str


class ConnectionEncrypted(NamedTuple):
    """The client asked for TLS (SSLRequest) or TLS records were seen: not parsed further."""

    ts_ns: int


class ReplicationStream(NamedTuple):
    """A replica is reading the binlog on this connection: the rest is not parsed."""

    ts_ns: int


class ResponseLost(NamedTuple):
    """A command whose response could not be paired exactly (gap, close, eviction).

    It is counted, never credited with another command's response.
    """

    ts_ns: int
    command: str
    reason: str


class Resynced(NamedTuple):
    """Parsing of one direction restarted at a command boundary after skipping bytes."""

    ts_ns: int
    direction: int
    skipped_bytes: int
    reason: str


class Garbage(NamedTuple):
    """Bytes that are not valid MySQL protocol at a point where a packet was expected."""

    ts_ns: int
    direction: int
    reason: str


Event = (
    CommandCompleted
    | ServerGreeted
    | LoginSeen
    | LoginFinished
    | ServerError
    | ConnectionEncrypted
    | ReplicationStream
    | ResponseLost
    | Resynced
    | Garbage
)
