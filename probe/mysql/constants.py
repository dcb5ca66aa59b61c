"""MySQL/MariaDB wire constants and the command table.

Owns the numbers of the client/server protocol (capability and status flags, command
bytes, column types) and, as data, what each command expects back from the server: the
``COMMANDS`` table is the transition table of the response parser, in the spirit of
h11's ``_state.py``. A command byte missing from the table is answered by the opaque
reader (the response ends where the next request begins), never by a guess.

Sources: MySQL "Client/Server Protocol" pages (Capabilities Flags, SERVER_STATUS_flags_enum,
Text Protocol, Prepared Statements) and MariaDB's "Client/Server Protocol" KB pages.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

# -- capability flags (int<4> in the handshake; MariaDB adds int<4> more at bit 32) -------
CLIENT_LONG_PASSWORD = 1 << 0  # MariaDB clears it to say "I am MariaDB" (CLIENT_MYSQL)
CLIENT_CONNECT_WITH_DB = 1 << 3
CLIENT_COMPRESS = 1 << 5
CLIENT_LOCAL_FILES = 1 << 7
CLIENT_PROTOCOL_41 = 1 << 9
CLIENT_SSL = 1 << 11
CLIENT_SECURE_CONNECTION = 1 << 15
CLIENT_MULTI_STATEMENTS = 1 << 16
CLIENT_MULTI_RESULTS = 1 << 17
CLIENT_PLUGIN_AUTH = 1 << 19
CLIENT_CONNECT_ATTRS = 1 << 20
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
CLIENT_SESSION_TRACK = 1 << 23
CLIENT_DEPRECATE_EOF = 1 << 24
CLIENT_OPTIONAL_RESULTSET_METADATA = 1 << 25
CLIENT_ZSTD_COMPRESSION = 1 << 26
CLIENT_QUERY_ATTRIBUTES = 1 << 27
MARIADB_CLIENT_PROGRESS = 1 << 32
MARIADB_CLIENT_STMT_BULK_OPERATIONS = 1 << 34
MARIADB_CLIENT_EXTENDED_METADATA = 1 << 35
MARIADB_CLIENT_CACHE_METADATA = 1 << 36

# -- server status flags (OK and EOF packets) --------------------------------------------
SERVER_STATUS_IN_TRANS = 0x0001
SERVER_STATUS_AUTOCOMMIT = 0x0002
SERVER_MORE_RESULTS_EXISTS = 0x0008
SERVER_QUERY_NO_GOOD_INDEX_USED = 0x0010
SERVER_QUERY_NO_INDEX_USED = 0x0020
SERVER_STATUS_CURSOR_EXISTS = 0x0040
SERVER_STATUS_LAST_ROW_SENT = 0x0080
SERVER_SESSION_STATE_CHANGED = 0x4000

# Session state tracker types (OK packet, CLIENT_SESSION_TRACK).
SESSION_TRACK_SCHEMA = 0x01

# -- packet headers ------------------------------------------------------------------------
OK_HEADER = 0x00
EOF_HEADER = 0xFE
ERR_HEADER = 0xFF
LOCAL_INFILE_HEADER = 0xFB
AUTH_MORE_DATA_HEADER = 0x01
MAX_PACKET_LENGTH = 0xFFFFFF  # a payload this long continues in the next packet
PROGRESS_ERROR_CODE = 0xFFFF  # MariaDB progress report sent as an ERR packet

# -- column types (binary protocol) ---------------------------------------------------------
TYPE_DECIMAL = 0x00
TYPE_TINY = 0x01
TYPE_SHORT = 0x02
TYPE_LONG = 0x03
TYPE_FLOAT = 0x04
TYPE_DOUBLE = 0x05
TYPE_NULL = 0x06
TYPE_TIMESTAMP = 0x07
TYPE_LONGLONG = 0x08
TYPE_INT24 = 0x09
TYPE_DATE = 0x0A
TYPE_TIME = 0x0B
TYPE_DATETIME = 0x0C
TYPE_YEAR = 0x0D
TYPE_NEWDATE = 0x0E
TYPE_VARCHAR = 0x0F
TYPE_BIT = 0x10
TYPE_TIMESTAMP2 = 0x11
TYPE_DATETIME2 = 0x12
TYPE_TIME2 = 0x13
TYPE_JSON = 0xF5
TYPE_NEWDECIMAL = 0xF6
TYPE_ENUM = 0xF7
TYPE_SET = 0xF8
TYPE_TINY_BLOB = 0xF9
TYPE_MEDIUM_BLOB = 0xFA
TYPE_LONG_BLOB = 0xFB
TYPE_BLOB = 0xFC
TYPE_VAR_STRING = 0xFD
TYPE_STRING = 0xFE
TYPE_GEOMETRY = 0xFF
UNSIGNED_FLAG = 0x80  # second byte of a parameter type


class Command(IntEnum):
    SLEEP = 0x00
    QUIT = 0x01
    INIT_DB = 0x02
    QUERY = 0x03
    FIELD_LIST = 0x04
    CREATE_DB = 0x05
    DROP_DB = 0x06
    REFRESH = 0x07
    SHUTDOWN = 0x08
    STATISTICS = 0x09
    PROCESS_INFO = 0x0A
    CONNECT = 0x0B
    PROCESS_KILL = 0x0C
    DEBUG = 0x0D
    PING = 0x0E
    TIME = 0x0F
    DELAYED_INSERT = 0x10
    CHANGE_USER = 0x11
    BINLOG_DUMP = 0x12
    TABLE_DUMP = 0x13
    CONNECT_OUT = 0x14
    REGISTER_SLAVE = 0x15
    STMT_PREPARE = 0x16
    STMT_EXECUTE = 0x17
    STMT_SEND_LONG_DATA = 0x18
    STMT_CLOSE = 0x19
    STMT_RESET = 0x1A
    SET_OPTION = 0x1B
    STMT_FETCH = 0x1C
    DAEMON = 0x1D
    BINLOG_DUMP_GTID = 0x1E
    RESET_CONNECTION = 0x1F
    STMT_BULK_EXECUTE = 0xFA  # MariaDB


class Reply(IntEnum):
    """What the server sends back for a command: the response parser's entry state."""

    NONE = 0  # no response at all (QUIT, STMT_CLOSE, SEND_LONG_DATA)
    STATUS = 1  # one OK, EOF or ERR packet
    RESULT = 2  # OK, ERR, LOCAL INFILE request, or one or more result sets
    PREPARE = 3  # COM_STMT_PREPARE_OK with parameter and column definitions, or ERR
    FIELDS = 4  # column definitions until EOF, or ERR (COM_FIELD_LIST)
    ROWS = 5  # binary rows until EOF, or ERR (COM_STMT_FETCH)
    STRING = 6  # one packet of text (COM_STATISTICS)
    AUTH = 7  # authentication exchange ending in OK or ERR (COM_CHANGE_USER)
    STREAM = 8  # endless event stream (binlog dump): the connection is replication
    OPAQUE = 9  # unknown: everything until the next request


class CommandSpec(NamedTuple):
    name: str  # as performance_schema's statement/com/<name> and pt-query-digest say it
    reply: Reply


COMMANDS: dict[int, CommandSpec] = {
    Command.SLEEP: CommandSpec("Sleep", Reply.STATUS),
    Command.QUIT: CommandSpec("Quit", Reply.NONE),
    Command.INIT_DB: CommandSpec("Init DB", Reply.STATUS),
    Command.QUERY: CommandSpec("Query", Reply.RESULT),
    Command.FIELD_LIST: CommandSpec("Field List", Reply.FIELDS),
    Command.CREATE_DB: CommandSpec("Create DB", Reply.STATUS),
    Command.DROP_DB: CommandSpec("Drop DB", Reply.STATUS),
    Command.REFRESH: CommandSpec("Refresh", Reply.STATUS),
    Command.SHUTDOWN: CommandSpec("Shutdown", Reply.STATUS),
    Command.STATISTICS: CommandSpec("Statistics", Reply.STRING),
    Command.PROCESS_INFO: CommandSpec("Processlist", Reply.RESULT),
    Command.PROCESS_KILL: CommandSpec("Kill", Reply.STATUS),
    Command.DEBUG: CommandSpec("Debug", Reply.STATUS),
    Command.PING: CommandSpec("Ping", Reply.STATUS),
    Command.CHANGE_USER: CommandSpec("Change user", Reply.AUTH),
    Command.BINLOG_DUMP: CommandSpec("Binlog Dump", Reply.STREAM),
    Command.TABLE_DUMP: CommandSpec("Table Dump", Reply.STREAM),
    Command.REGISTER_SLAVE: CommandSpec("Register Slave", Reply.STATUS),
    Command.STMT_PREPARE: CommandSpec("Prepare", Reply.PREPARE),
    Command.STMT_EXECUTE: CommandSpec("Execute", Reply.RESULT),
    Command.STMT_SEND_LONG_DATA: CommandSpec("Long Data", Reply.NONE),
    Command.STMT_CLOSE: CommandSpec("Close stmt", Reply.NONE),
    Command.STMT_RESET: CommandSpec("Reset stmt", Reply.STATUS),
    Command.SET_OPTION: CommandSpec("Set option", Reply.STATUS),
    Command.STMT_FETCH: CommandSpec("Fetch", Reply.ROWS),
    Command.BINLOG_DUMP_GTID: CommandSpec("Binlog Dump GTID", Reply.STREAM),
    Command.RESET_CONNECTION: CommandSpec("Reset Connection", Reply.STATUS),
    Command.STMT_BULK_EXECUTE: CommandSpec("Bulk_execute", Reply.RESULT),
}

#: Commands whose event carries a SQL template of their own.
STATEMENT_COMMANDS = frozenset({Command.QUERY, Command.STMT_EXECUTE, Command.STMT_BULK_EXECUTE})
