"""The client stream (probe/mysql/requests.py): long packets whatever their segmentation,
and pipelined batches bounded by bytes, not by a small count."""

from __future__ import annotations

import random
import struct

import pytest

from probe.mysql import constants as c
from probe.mysql.conversation import Conversation, ConversationLimits
from probe.mysql.events import TO_CLIENT, TO_SERVER, CommandCompleted, Event, Garbage, ResponseLost
from probe.normalize import Normalizer
from tests.probe.mysql.test_conversation import completed, run
from tests.support import mysqlwire as w

T0 = 1_700_000_000_000_000_000


def logged_in(limits: ConversationLimits | None = None) -> Conversation:
    _, conv = run(w.Script().login(), limits=limits)
    return conv


def feed_pieces(conv: Conversation, ts: int, direction: int, pieces: list[bytes]) -> list[Event]:
    events: list[Event] = []
    for i, piece in enumerate(pieces):
        events += conv.feed(ts + i, direction, piece)
    return events


def segments(data: bytes, how: str, seed: int = 0) -> list[bytes]:
    """The ways clients and kernels cut a long request: the 4-byte header alone then 16 KiB
    segments (mysql2, the mariadb CLI), byte by byte, or at random."""
    if how == "header_alone":
        return [data[:4]] + [data[i : i + 16384] for i in range(4, len(data), 16384)]
    if how == "bytes":
        return [data[i : i + 1] for i in range(len(data))]
    if how == "whole":
        return [data]
    rng = random.Random(seed)
    out = []
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 3, 4, 5, 700, 16384, 65536])
        out.append(data[pos : pos + step])
        pos += step
    return out


def big_insert(size: int) -> str:
    rows = []
    total = 0
    i = 0
    while total < size:
        row = f"({i},'{'x' * 40}',{i * 7})"
        rows.append(row)
        total += len(row) + 1
        i += 1
    return "INSERT INTO big (id, pad, n) VALUES " + ",".join(rows)


@pytest.mark.parametrize("how", ["header_alone", "whole", "bytes", "random"])
def test_long_query_keeps_its_text_up_to_the_limit(how: str) -> None:
    # 200 KB over a 16 KiB packet buffer and a 64 KiB text limit: the same shape as the
    # mariadb CLI's 1.4 MB query against the 1 MiB defaults, small enough to feed bytewise.
    limits = ConversationLimits(max_query_bytes=1 << 16, max_packet_buffer=1 << 14)
    sql = big_insert(200_000)
    conv = logged_in(limits)
    events = feed_pieces(conv, T0, TO_SERVER, segments(w.query(sql), how, seed=3))
    events += conv.feed(T0 + 10**6, TO_CLIENT, w.framed([w.ok(affected=4000)], 1))
    done = completed(events)
    assert len(done) == 1 and not [e for e in events if isinstance(e, Garbage)]
    kept = sql[: (1 << 16) - 1]  # the limit counts the payload: command byte and SQL
    assert done[0].sql == kept and not done[0].complete
    assert done[0].template == Normalizer().normalize(kept).text == "INSERT INTO big(id, pad, n) VALUES (...)"
    assert done[0].rows_affected == 4000 and done[0].bytes_in == len(w.query(sql))


@pytest.mark.parametrize("how", ["header_alone", "random"])
def test_request_of_16_mib_and_more_with_a_short_first_segment(how: str) -> None:
    sql = big_insert(0xFFFFFF + 300_000)
    request = w.query(sql)
    assert request[:3] == b"\xff\xff\xff"  # split over two packets by the protocol
    conv = logged_in()
    events = feed_pieces(conv, T0, TO_SERVER, segments(request, how, seed=5))
    events += conv.feed(T0 + 10**9, TO_CLIENT, w.framed([w.ok(affected=5)], 2))
    events += conv.feed(T0 + 10**9 + 1, TO_SERVER, w.query("SELECT 1"))
    events += conv.feed(T0 + 10**9 + 2, TO_CLIENT, w.result_set(["1"], [[b"1"]]))
    done = completed(events)
    assert [e.command for e in done] == ["Query", "Query"]
    big, one = done
    assert big.sql == sql[: ConversationLimits().max_query_bytes - 1]
    assert big.template.startswith("INSERT INTO big(id, pad, n) VALUES")
    assert big.rows_affected == 5 and big.bytes_in == len(request)
    assert one.rows_sent == 1 and not [e for e in events if isinstance(e, Garbage)]


def test_pipelined_batch_of_thousands_is_kept_whole() -> None:
    """Connector/J's ``executeBatch`` with server-side prepares: every execute written
    before any response is read."""
    conv = logged_in()
    conv.feed(T0, TO_SERVER, w.prepare("UPDATE acct SET bal = bal + ? WHERE id = ?"))
    conv.feed(T0 + 1, TO_CLIENT, w.prepare_ok(4, columns=0, params=2))
    batch = 5000
    params = [(c.TYPE_LONGLONG, struct.pack("<q", 10)), (c.TYPE_LONG, struct.pack("<i", 1))]
    requests = b"".join(w.execute(4, params) for _ in range(batch))
    replies = b"".join(w.framed([w.ok(affected=1 + i % 2)], 1) for i in range(batch))
    events: list[Event] = []
    rng = random.Random(1)
    for stream, direction in ((requests, TO_SERVER), (replies, TO_CLIENT)):
        pos = 0
        while pos < len(stream):
            step = rng.randint(1, 9000)
            events += conv.feed(T0 + 10 + pos, direction, stream[pos : pos + step])
            pos += step
    executes = [e for e in completed(events) if e.command == "Execute"]
    assert len(executes) == batch
    assert sum(e.rows_affected for e in executes) == batch + batch // 2
    assert not [e for e in events if isinstance(e, ResponseLost)] and not conv.limit_hits
    assert conv.pending_bytes == 0 and not conv.pending


def test_pending_bound_bites_by_bytes_and_is_counted() -> None:
    limits = ConversationLimits(max_pending_bytes=20_000)
    conv = logged_in(limits)
    events = conv.feed(T0, TO_SERVER, b"".join(w.query(f"SELECT {i}, '{'p' * 900}'") for i in range(40)))
    lost = [e for e in events if isinstance(e, ResponseLost)]
    assert lost and conv.limit_hits["max_pending_bytes"] == len(lost)
    assert conv.pending_bytes <= limits.max_pending_bytes
    assert conv.pending_bytes == sum(cmd.cost for cmd in conv.pending)
    assert len(conv.pending) + len(lost) == 40
    assert all(isinstance(e, CommandCompleted) is False for e in lost)
