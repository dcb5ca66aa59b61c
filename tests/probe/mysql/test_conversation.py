"""The MySQL conversation, fed bytes directly (sans-I/O): every case of DESIGN.md's coverage."""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest

from probe.mysql import constants as c
from probe.mysql.conversation import Conversation, ConversationLimits
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
    ServerGreeted,
)
from probe.normalize import Normalizer
from tests.support import mysqlwire as w


def run(
    script: w.Script,
    *,
    from_start: bool = True,
    split: str = "whole",
    seed: int = 1,
    limits: ConversationLimits | None = None,
) -> tuple[list[Event], Conversation]:
    conv = Conversation("10.0.0.7:51000", "10.0.0.1:3306", Normalizer(), from_start=from_start, limits=limits)
    rng = random.Random(seed)
    events: list[Event] = []
    for ts, direction, data in script.timed():
        if split == "whole":
            pieces = [data]
        elif split == "bytes":
            pieces = [data[i : i + 1] for i in range(len(data))]
        else:
            pieces = []
            pos = 0
            while pos < len(data):
                step = rng.randint(1, max(1, len(data) // 3))
                pieces.append(data[pos : pos + step])
                pos += step
        for piece in pieces:
            events += conv.feed(ts, direction, piece)
    return events, conv


def completed(events: list[Event]) -> list[CommandCompleted]:
    return [e for e in events if isinstance(e, CommandCompleted)]


def shape(event: CommandCompleted) -> tuple[Any, ...]:
    """The fields that must not depend on how bytes were split."""
    return (
        event.command,
        event.key,
        event.template,
        event.sql,
        event.params,
        event.db,
        event.user,
        event.conn_id,
        event.error_code,
        event.sqlstate,
        event.error_message,
        event.rows_sent,
        event.rows_affected,
        event.bytes_in,
        event.bytes_out,
        event.status_flags,
        event.complete,
    )


def basic_script(deprecate_eof: bool = False) -> w.Script:
    return (
        w.Script()
        .login(deprecate_eof=deprecate_eof)
        .client(w.query("SELECT name FROM items WHERE id = 7"))
        .server(w.result_set(["name"], [[b"apple"]], deprecate_eof=deprecate_eof), after_us=250)
        .client(w.query("UPDATE items SET qty = 3 WHERE id < 10"))
        .server(w.framed([w.ok(affected=9)], 1), after_us=400)
        .client(w.query("SELECT * FROM nope"))
        .server(w.framed([w.err(1146, "42S02", "Table 'shop.nope' doesn't exist")], 1))
    )


def test_login_query_result_error() -> None:
    events, conv = run(basic_script())
    greeted = [e for e in events if isinstance(e, ServerGreeted)]
    assert greeted and greeted[0].conn_id == 42 and greeted[0].mariadb
    assert greeted[0].capabilities >> 32 & (c.MARIADB_CLIENT_PROGRESS >> 32)
    login = [e for e in events if isinstance(e, LoginSeen)]
    assert login[0].user == "app" and login[0].db == "shop"
    done = completed(events)
    assert [e.command for e in done] == ["Connect", "Query", "Query", "Query"]
    select, update, failed = done[1:]
    assert select.template == "SELECT name FROM items WHERE id = ?"
    assert (select.rows_sent, select.db, select.user, select.conn_id) == (1, "shop", "app", 42)
    assert select.latency_us == 250 and select.ttfb_us == 250
    assert select.client == "10.0.0.7:51000" and select.server == "10.0.0.1:3306"
    assert update.rows_affected == 9 and update.latency_us == 400
    assert (failed.error_code, failed.sqlstate) == (1146, "42S02")
    assert "doesn't exist" in failed.error_message
    assert select.bytes_in == 4 + 1 + len("SELECT name FROM items WHERE id = 7")
    assert not conv.pending


@pytest.mark.parametrize("deprecate_eof", [False, True])
@pytest.mark.parametrize("split", ["bytes", "random"])
def test_splits_do_not_change_events(deprecate_eof: bool, split: str) -> None:
    whole = [shape(e) for e in completed(run(basic_script(deprecate_eof))[0])]
    for seed in range(3):
        parts = [shape(e) for e in completed(run(basic_script(deprecate_eof), split=split, seed=seed)[0])]
        assert parts == whole


def test_trailing_bytes_wait_for_the_rest() -> None:
    script = w.Script().login().client(w.query("SELECT 1"))
    response = w.result_set(["1"], [[b"1"]])
    events, conv = run(script)
    assert len(completed(events)) == 1
    assert not completed(conv.feed(10**18, TO_CLIENT, response[:-3]))
    assert [e.rows_sent for e in completed(conv.feed(10**18 + 1, TO_CLIENT, response[-3:]))] == [1]


def test_deprecate_eof_and_mariadb_metadata_flag() -> None:
    script = (
        w.Script()
        .login(deprecate_eof=True)
        .client(w.query("SELECT a, b FROM t"))
        .server(w.result_set(["a", "b"], [[b"1", None], [b"2", b"x"]], deprecate_eof=True, metadata_flag=True))
        .client(w.query("SELECT a FROM t WHERE 0"))
        .server(w.result_set(["a"], [], deprecate_eof=True))
    )
    done = completed(run(script)[0])
    assert [e.rows_sent for e in done[1:]] == [2, 0]


def test_row_starting_with_0xfe_byte_is_still_a_row() -> None:
    # A text row whose first value is 0xFE... as a 1-byte string: lenenc 0x01 then 0xFE.
    script = w.Script().login().client(w.query("SELECT x FROM t")).server(w.result_set(["x"], [[b"\xfe"], [b"\xff"]]))
    assert completed(run(script)[0])[-1].rows_sent == 2


def test_sequence_ids_wrap_past_255() -> None:
    rows = [[str(i).encode()] for i in range(700)]
    script = w.Script().login().client(w.query("SELECT id FROM big")).server(w.result_set(["id"], rows))
    assert completed(run(script)[0])[-1].rows_sent == 700


def test_equal_length_rows_are_counted_exactly() -> None:
    rows = [[b"x" * 120] for _ in range(250)] + [[b"y" * 3]] + [[b"z" * 120] for _ in range(40)]
    script = w.Script().login().client(w.query("SELECT c FROM t")).server(w.result_set(["c"], rows))
    for split in ("whole", "random", "bytes"):
        assert completed(run(script, split=split)[0])[-1].rows_sent == 291


def test_session_tracked_schema_changes_db() -> None:
    script = (
        w.Script()
        .login()
        .client(w.query("USE other"))
        .server(w.framed([w.ok(schema="other")], 1))
        .client(w.query("SELECT 1"))
        .server(w.result_set(["1"], [[b"1"]]))
    )
    done = completed(run(script)[0])
    assert done[1].db == "shop" and done[2].db == "other"


def test_use_and_init_db_change_db() -> None:
    script = (
        w.Script()
        .login()
        .client(w.query("use `analytics`"))
        .server(w.framed([w.ok()], 1))
        .client(w.query("SELECT 1"))
        .server(w.result_set(["1"], [[b"1"]]))
        .client(w.command(c.Command.INIT_DB, b"billing"))
        .server(w.framed([w.ok()], 1))
        .client(w.query("SELECT 2"))
        .server(w.result_set(["2"], [[b"2"]]))
    )
    done = completed(run(script)[0])
    assert [e.db for e in done] == ["shop", "shop", "analytics", "analytics", "billing"]
    assert done[3].template == "administrator command: Init DB"


MORE = c.SERVER_STATUS_AUTOCOMMIT | c.SERVER_MORE_RESULTS_EXISTS


def test_multi_statement_gives_one_event_per_statement() -> None:
    response = (
        w.result_set(["1"], [[b"1"]], status=MORE)
        + w.framed([w.ok(affected=4, status=MORE)], 5)
        + w.result_set(["id"], [[b"1"], [b"2"]], seq=6)
    )
    script = w.Script().login().client(w.query("SELECT 1; UPDATE t SET a = 1; SELECT id FROM t")).server(response)
    done = completed(run(script)[0])[1:]
    assert [e.template for e in done] == ["SELECT ?", "UPDATE t SET a = ?", "SELECT id FROM t"]
    assert [e.rows_sent for e in done] == [1, 0, 2]
    assert [e.rows_affected for e in done] == [0, 4, 0]
    assert [e.sql.strip() for e in done] == ["SELECT 1", "UPDATE t SET a = 1", "SELECT id FROM t"]


def test_multi_statement_stops_at_error() -> None:
    response = w.result_set(["1"], [[b"1"]], status=MORE) + w.framed([w.err(1064, "42000", "syntax")], 5)
    script = w.Script().login().client(w.query("SELECT 1; SELEC 2; SELECT 3")).server(response)
    done = completed(run(script)[0])[1:]
    assert [(e.template, e.error_code) for e in done] == [("SELECT ?", 0), ("SELEC ?", 1064)]


def test_call_with_result_sets_is_one_statement() -> None:
    response = (
        w.result_set(["id"], [[b"1"], [b"2"]], status=MORE)
        + w.result_set(["n"], [[b"9"]], status=MORE, seq=6)
        + w.framed([w.ok(affected=0)], 10)
    )
    script = w.Script().login().client(w.query("CALL two_results(2)")).server(response)
    done = completed(run(script)[0])[1:]
    assert len(done) == 1 and done[0].template == "CALL two_results(?)" and done[0].rows_sent == 3


def test_local_infile() -> None:
    script = (
        w.Script()
        .login()
        .client(w.query("LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t"))
        .server(w.framed([b"\xfb/tmp/x"], 1))
        .client(w.framed([b"a\t1\n" * 100, b"b\t2\n", b""], 2), after_us=50)
        .server(w.framed([w.ok(affected=101)], 5), after_us=300)
        .client(w.query("SELECT 1"))
        .server(w.result_set(["1"], [[b"1"]]))
    )
    done = completed(run(script)[0])[1:]
    assert [e.template for e in done] == ["LOAD DATA LOCAL INFILE ? INTO TABLE t", "SELECT ?"]
    assert done[0].rows_affected == 101 and done[0].bytes_in > 400


def test_mariadb_progress_reports_are_not_errors() -> None:
    progress = b"\xff\xff\xff" + b"\x01\x01\x00\x00\x10\x00" + b"\x05stage"
    caps = w.CLIENT_CAPS & ~c.CLIENT_LONG_PASSWORD  # a MariaDB client: extended capabilities follow
    script = (
        w.Script()
        .server(w.framed([w.greeting()]))
        .client(w.framed([w.handshake_response(caps=caps, extended=c.MARIADB_CLIENT_PROGRESS >> 32)], 1))
        .server(w.framed([w.ok()], 2))
        .client(w.query("ALTER TABLE t ADD COLUMN z INT"))
        .server(w.framed([progress], 1), after_us=400)
        .server(w.framed([w.ok()], 2), after_us=900)
    )
    events, conv = run(script)
    assert conv.caps is not None and conv.caps & c.MARIADB_CLIENT_PROGRESS
    done = completed(events)[1:]
    assert [(e.error_code, e.latency_us) for e in done] == [(0, 1300)]


def unsigned(kind: int) -> int:
    return kind | c.UNSIGNED_FLAG << 8


def test_prepared_statements_binary_protocol() -> None:
    big = 2**63 + 5
    params = [
        (unsigned(c.TYPE_LONGLONG), struct.pack("<Q", big)),
        (c.TYPE_VAR_STRING, w.lenenc_str("héllo".encode())),
        (c.TYPE_NULL, None),
        (c.TYPE_DOUBLE, struct.pack("<d", 1.5)),
        (c.TYPE_DATETIME, b"\x07" + struct.pack("<HBBBBB", 2024, 2, 29, 13, 45, 6)),
        (c.TYPE_TINY, b"\xff"),
    ]
    script = (
        w.Script()
        .login()
        .client(w.framed([bytes([c.Command.STMT_PREPARE]) + b"SELECT a FROM t WHERE b=? AND c=? AND d=? AND e=?"]))
        .server(w.prepare_ok(7, columns=1, params=6))
        .client(w.execute(7, params))
        .server(w.result_set(["a"], [[b"1"]]))
        .client(w.execute(7, [(k, v) for k, v in params], bind=False))
        .server(w.result_set(["a"], []))
        .client(w.framed([bytes([c.Command.STMT_CLOSE]) + struct.pack("<I", 7)]))
        .client(w.execute(7, params))
        .server(w.framed([w.err(1243, "HY000", "Unknown prepared statement handler")], 1))
    )
    done = completed(run(script)[0])[1:]
    assert [e.command for e in done] == ["Prepare", "Execute", "Execute", "Close stmt", "Execute"]
    prepare, first, second, close, unknown = done
    assert prepare.template == "PREPARE SELECT a FROM t WHERE b = ? AND c = ? AND d = ? AND e = ?"
    assert first.template == "SELECT a FROM t WHERE b = ? AND c = ? AND d = ? AND e = ?"
    assert first.params == (big, "héllo", None, 1.5, "2024-02-29 13:45:06", -1)
    assert first.rows_sent == 1 and second.rows_sent == 0
    assert second.params == first.params  # types remembered from the first execute
    assert close.latency_us == 0
    assert unknown.template == "EXECUTE <unknown prepared statement>" and not unknown.complete


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_prepare_response_layouts(deprecate_eof: bool) -> None:
    script = (
        w.Script()
        .login(deprecate_eof=deprecate_eof)
        .client(w.framed([bytes([c.Command.STMT_PREPARE]) + b"INSERT INTO t VALUES (?, ?)"]))
        .server(w.prepare_ok(1, columns=0, params=2, deprecate_eof=deprecate_eof))
        .client(w.framed([bytes([c.Command.STMT_PREPARE]) + b"SELECT a, b FROM t"]))
        .server(w.prepare_ok(2, columns=2, params=0, deprecate_eof=deprecate_eof))
        .client(w.query("SELECT 1"))
        .server(w.result_set(["1"], [[b"1"]], deprecate_eof=deprecate_eof))
    )
    done = completed(run(script)[0])[1:]
    assert [e.command for e in done] == ["Prepare", "Prepare", "Query"]
    assert done[2].rows_sent == 1


def test_long_data_goes_into_the_sample() -> None:
    long_data = bytes([c.Command.STMT_SEND_LONG_DATA]) + struct.pack("<IH", 3, 0)
    script = (
        w.Script()
        .login()
        .client(w.framed([bytes([c.Command.STMT_PREPARE]) + b"UPDATE t SET blob_col = ? WHERE id = ?"]))
        .server(w.prepare_ok(3, columns=0, params=2))
        .client(w.framed([long_data + b"part1-"]))
        .client(w.framed([long_data + b"part2"]))
        .client(w.execute(3, [(c.TYPE_BLOB, b""), (c.TYPE_LONG, struct.pack("<i", 9))]))
        .server(w.framed([w.ok(affected=1)], 1))
    )
    done = completed(run(script)[0])
    execute = done[-1]
    assert execute.params == ("part1-part2", 9)
    assert [e.command for e in done[1:]] == ["Prepare", "Long Data", "Long Data", "Execute"]


def test_payloads_of_16_mib_and_more() -> None:
    big_sql = "INSERT INTO t VALUES " + ",".join(f"({i},'{'x' * 40}')" for i in range(400_000))
    assert len(big_sql) > 0xFFFFFF
    big_value = b"v" * (0xFFFFFF + 1000)
    script = (
        w.Script()
        .login()
        .client(w.query(big_sql))
        .server(w.framed([w.ok(affected=400_000)], 1))
        .client(w.query("SELECT doc FROM t"))
        .server(w.result_set(["doc"], [[big_value], [b"small"]]))
        .client(w.query("SELECT 1"))
        .server(w.result_set(["1"], [[b"1"]]))
    )
    limits = ConversationLimits(max_query_bytes=1 << 16)
    for split in ("whole", "random"):
        done = completed(run(script, split=split, limits=limits)[0])[1:]
        insert, select, one = done
        assert insert.template == "INSERT INTO t VALUES (...)"
        assert insert.rows_affected == 400_000 and not insert.complete
        assert insert.bytes_in == len(w.query(big_sql))
        assert select.rows_sent == 2 and select.complete
        assert one.rows_sent == 1


def test_compressed_protocol() -> None:
    caps = w.CLIENT_CAPS | c.CLIENT_COMPRESS
    script = (
        w.Script()
        .server(w.framed([w.greeting()]))
        .client(w.framed([w.handshake_response(caps=caps)], 1))
        .server(w.framed([w.ok()], 2))
        .client(w.compress_stream(w.query("SELECT name FROM items WHERE id = 1")))
        .server(w.compress_stream(w.result_set(["name"], [[b"n" * 200]] * 30)))
        .client(w.compress_stream(w.query("SELECT 2")))
        .server(w.compress_stream(w.result_set(["2"], [[b"2"]])))
    )
    for split in ("whole", "random"):
        done = completed(run(script, split=split)[0])[1:]
        assert [(e.template, e.rows_sent) for e in done] == [
            ("SELECT name FROM items WHERE id = ?", 30),
            ("SELECT ?", 1),
        ]


def test_compressed_command_with_an_inner_sequence_id_other_than_zero() -> None:
    # Connector/J with useCompression: after COM_STMT_SEND_LONG_DATA (no reply) the execute's
    # inner packet has sequence id 1; MariaDB runs it, so it is a command like any other.
    caps = w.CLIENT_CAPS | c.CLIENT_COMPRESS
    long_data = bytes([c.Command.STMT_SEND_LONG_DATA]) + struct.pack("<IH", 1, 0) + b"x" * 300
    execute = w.execute(1, [(c.TYPE_LONG_BLOB, None)], bind=True)
    script = (
        w.Script()
        .server(w.framed([w.greeting()]))
        .client(w.framed([w.handshake_response(caps=caps)], 1))
        .server(w.framed([w.ok()], 2))
        .client(w.compress_stream(w.prepare("INSERT INTO t(b) VALUES (?)")))
        .server(w.compress_stream(w.prepare_ok(1, 0, 1)))
        .client(w.compress_stream(w.framed([long_data])))
        .client(w.compress_stream(execute[:3] + b"\x01" + execute[4:]))
        .server(w.compress_stream(w.framed([w.ok(affected=1)], 1)))
        .client(w.compress_stream(w.query("SELECT 2")))
        .server(w.compress_stream(w.result_set(["2"], [[b"2"]])))
    )
    for split in ("whole", "random"):
        events = run(script, split=split)[0]
        done = completed(events)[1:]
        assert [(e.command, e.template, e.rows_affected) for e in done] == [
            ("Prepare", "PREPARE INSERT INTO t(b) VALUES (...)", 0),
            ("Long Data", "administrator command: Long Data", 0),
            ("Execute", "INSERT INTO t(b) VALUES (...)", 1),
            ("Query", "SELECT ?", 0),
        ]
        assert not any(isinstance(e, Garbage) for e in events)


def test_ssl_request_marks_the_connection_encrypted() -> None:
    script = (
        w.Script()
        .server(w.framed([w.greeting()]))
        .client(w.framed([w.ssl_request()], 1))
        .client(b"\x16\x03\x01\x00\x05hello")
        .server(b"\x16\x03\x03\x00\x05world")
        .client(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
    )
    events, conv = run(script)
    assert any(isinstance(e, ConnectionEncrypted) for e in events)
    assert not completed(events) and not any(isinstance(e, Garbage) for e in events)
    assert conv.unparsed_segments == 3


def test_tls_seen_mid_stream_is_counted() -> None:
    events, _ = run(w.Script().client(b"\x17\x03\x03\x00\x20" + b"\x00" * 32), from_start=False)
    assert any(isinstance(e, ConnectionEncrypted) for e in events)


def test_mid_stream_attach_resyncs_on_the_next_command() -> None:
    tail = w.result_set(["x"], [[b"old"]] * 5)[30:]  # the end of a response we never saw begin
    script = (
        w.Script()
        .server(tail)
        .client(w.query("SELECT c FROM t WHERE id = 5"))
        .server(w.result_set(["c"], [[b"v"]]))
        .client(w.query("SELECT 2"))
        .server(w.result_set(["2"], [[b"2"]]))
    )
    events, _conv = run(script, from_start=False)
    done = completed(events)
    assert [(e.template, e.rows_sent, e.db, e.conn_id) for e in done] == [
        ("SELECT c FROM t WHERE id = ?", 1, "", None),
        ("SELECT ?", 1, "", None),
    ]


def test_mid_stream_attach_to_a_compressed_connection() -> None:
    script = (
        w.Script()
        .client(w.compress_stream(w.query("SELECT name FROM items WHERE id = 1"), threshold=10))
        .server(w.compress_stream(w.result_set(["name"], [[b"n" * 200]] * 3)))
    )
    done = completed(run(script, from_start=False)[0])
    assert [(e.template, e.rows_sent) for e in done] == [("SELECT name FROM items WHERE id = ?", 3)]


def test_gap_in_the_response_loses_only_that_command() -> None:
    script = w.Script().login().client(w.query("SELECT a FROM t"))
    _events, conv = run(script)
    response = w.result_set(["a"], [[b"x" * 50]] * 10)
    start = conv._s_off
    conv.feed(10**18, TO_CLIENT, response[:40])
    lost = conv.gap(10**18 + 1, TO_CLIENT, 100)
    conv.feed(10**18 + 2, TO_CLIENT, response[140:])
    assert any(isinstance(e, ResponseLost) for e in lost)
    # The next request carries the client's ack: where its response starts.
    ack = start + len(response)
    out = conv.feed(10**18 + 3, TO_SERVER, w.query("SELECT 2"), ack=ack)
    out += conv.feed(10**18 + 4, TO_CLIENT, w.result_set(["2"], [[b"2"]]))
    assert [(e.template, e.rows_sent) for e in completed(out)] == [("SELECT ?", 1)]


def test_response_sent_before_the_request_was_read_is_not_credited() -> None:
    _events, conv = run(w.Script().login())
    request = w.query("SELECT 1")
    conv.feed(10**18, TO_SERVER, request)
    request_end = conv._c_off
    # A stale response: the server's ack shows it had not read our request yet.
    stale = conv.feed(10**18 + 1, TO_CLIENT, w.result_set(["9"], [[b"9"]]), ack=request_end - len(request))
    assert not completed(stale) and any(isinstance(e, Garbage) for e in stale)
    fresh = conv.feed(10**18 + 2, TO_CLIENT, w.result_set(["1"], [[b"1"]]), ack=request_end)
    assert [e.rows_sent for e in completed(fresh)] == [1]


def test_pipelined_requests() -> None:
    script = (
        w.Script()
        .login()
        .client(w.query("SELECT 1") + w.query("SELECT 2"))
        .server(w.result_set(["1"], [[b"1"]]), after_us=100)
        .server(w.result_set(["2"], [[b"2"], [b"3"]]), after_us=100)
    )
    done = completed(run(script)[0])[1:]
    assert [e.rows_sent for e in done] == [1, 2]
    assert [e.latency_us for e in done] == [100, 100]


def test_admin_commands_and_quit() -> None:
    script = (
        w.Script()
        .login()
        .client(w.command(c.Command.PING))
        .server(w.framed([w.ok()], 1))
        .client(w.command(c.Command.STATISTICS))
        .server(w.framed([b"Uptime: 10  Threads: 1"], 1))
        .client(w.command(c.Command.SET_OPTION, b"\x01\x00"))
        .server(w.framed([w.eof()], 1))
        .client(w.command(c.Command.RESET_CONNECTION))
        .server(w.framed([w.ok()], 1))
        .client(w.command(c.Command.QUIT))
    )
    events, conv = run(script)
    done = completed(events)[1:]
    assert [e.template for e in done] == [
        "administrator command: Ping",
        "administrator command: Statistics",
        "administrator command: Set option",
        "administrator command: Reset Connection",
        "administrator command: Quit",
    ]
    assert not conv.multi_statements


def test_change_user() -> None:
    body = b"other\0" + b"\x14" + b"p" * 20 + b"shop\0" + b"\x2d\x00" + b"mysql_native_password\0"
    script = (
        w.Script()
        .login()
        .client(w.command(c.Command.CHANGE_USER, body))
        .server(w.framed([b"\xfemysql_native_password\0" + b"s" * 20], 1))
        .client(w.framed([b"r" * 20], 2))
        .server(w.framed([w.ok()], 3))
        .client(w.query("SELECT 1"))
        .server(w.result_set(["1"], [[b"1"]]))
    )
    done = completed(run(script)[0])
    assert [e.command for e in done[1:]] == ["Change user", "Query"]
    assert done[-1].user == "other"


def test_login_failure_and_server_refusal() -> None:
    script = (
        w.Script()
        .server(w.framed([w.greeting()]))
        .client(w.framed([w.handshake_response()], 1))
        .server(w.framed([w.err(1045, "28000", "Access denied for user 'app'")], 2))
    )
    done = completed(run(script)[0])
    assert [(e.command, e.error_code) for e in done] == [("Connect", 1045)]
    refused = completed(run(w.Script().server(w.framed([w.err(1040, "08004", "Too many connections")])))[0])
    assert [(e.command, e.error_code) for e in refused] == [("Connect", 1040)]


def test_mysql_greeting_without_extended_capabilities() -> None:
    script = w.Script().server(w.framed([w.greeting(version="8.0.36", mariadb=False)]))
    greeted = [e for e in run(script)[0] if isinstance(e, ServerGreeted)]
    assert greeted[0].server_version == "8.0.36" and not greeted[0].mariadb


def test_binlog_dump_is_a_replication_stream() -> None:
    script = (
        w.Script()
        .login()
        .client(w.command(c.Command.BINLOG_DUMP, b"\x04\x00\x00\x00\x00\x00\x02\x00\x00\x00"))
        .server(w.framed([b"\x00" + b"e" * 100], 1))
        .server(w.framed([b"\x00" + b"f" * 100], 2))
    )
    events, _conv = run(script)
    assert any(isinstance(e, ReplicationStream) for e in events)
    assert not any(isinstance(e, Garbage) for e in events)


def test_unknown_command_ends_at_the_next_request() -> None:
    script = (
        w.Script()
        .login()
        .client(w.command(0x99, b"xyz"))
        .server(w.framed([b"\x42whatever"], 1), after_us=300)
        .client(w.query("SELECT 1"), after_us=50)
        .server(w.result_set(["1"], [[b"1"]]))
    )
    done = completed(run(script)[0])[1:]
    assert [e.command for e in done] == ["Unknown 0x99", "Query"]
    assert done[0].latency_us == 300


def test_garbage_is_counted_and_parsing_resumes() -> None:
    script = (
        w.Script()
        .login()
        .client(b"\x05\x00\x00\x07junk!")
        .client(w.query("SELECT 1"))
        .server(w.result_set(["1"], [[b"1"]]))
    )
    events, _ = run(script)
    assert any(isinstance(e, Garbage) for e in events)
    assert [e.template for e in completed(events)[1:]] == ["SELECT ?"]


def test_prepared_statement_bound_is_counted() -> None:
    script = w.Script().login()
    for stmt_id in range(1, 6):
        script.client(w.framed([bytes([c.Command.STMT_PREPARE]) + f"SELECT {stmt_id}".encode()]))
        script.server(w.prepare_ok(stmt_id, columns=1, params=0))
    _, conv = run(script, limits=ConversationLimits(max_prepared=3))
    assert sorted(conv.prepared) == [3, 4, 5]
    assert conv.limit_hits["max_prepared"] == 2


def test_close_settles_pending_requests() -> None:
    _events, conv = run(w.Script().login().client(w.query("SELECT SLEEP(100)")))
    out = conv.close(10**19, "reset")
    assert [e.reason for e in out if isinstance(e, ResponseLost)] == ["reset"]
