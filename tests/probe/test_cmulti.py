"""Multi-result responses (a CALL's result sets, then its last result) completed in C
(probe/_cwire.c reads the results, probe/_cexchange.c keeps the server segments of one
response until its last).

Each case is one connection fed whole to a pure and a compiled flow table
(``tests.probe.test_cexchange.run``: same events, conversation state and intervals after
every segment); the case then says how many exchanges C completed, how many of them came
in several server segments, and checks rows, affected rows, warnings and errors per
template against the pure engine's, so that a regression that sends every CALL to Python,
or ends one at a result with more to come, shows.
"""

from __future__ import annotations

import struct
from typing import Any

from probe.mysql import constants as c
from tests.probe.test_cexchange import STATUS, Side, binary_result, run, whole_chunks
from tests.support import mysqlwire as w

MORE = c.SERVER_MORE_RESULTS_EXISTS
PS_OUT_PARAMS = 0x1000  # SERVER_PS_OUT_PARAMS: the OUT parameters of a prepared CALL
DEADLOCK = 1213


def totals(side: Side) -> dict[str, tuple[Any, ...]]:
    """(count, rows, affected, warnings, no index, errors, latency sum, ttfb sum) by template
    text over the drained intervals."""
    out: dict[str, tuple[Any, ...]] = {}
    for interval in side.intervals:
        for t in interval.templates:
            count, rows, affected, warnings, no_index, errors, latency, ttfb = out.get(
                t.template, (0, 0, 0, 0, 0, {}, 0, 0)
            )
            merged = dict(errors)
            for code, n in t.errors.items():
                merged[code] = merged.get(code, 0) + n
            out[t.template] = (
                count + t.count,
                rows + t.rows_sent,
                affected + t.rows_affected,
                warnings + t.warnings,
                no_index + t.no_index_used,
                merged,
                latency + t.latency_sum,
                ttfb + t.ttfb_sum,
            )
    return out


def fast(side: Side) -> tuple[int, int, int]:
    entry = side.entry
    return int(entry.fast_exchanges), int(entry.fast_multi_segments), int(entry.fast_replayed)


def text_result(rows: int, *, deprecate: bool, more: bool = True, status: int = STATUS) -> list[bytes]:
    """The payloads of a one-column text result set of ``rows`` rows."""
    status |= MORE if more else 0
    head = [w.lenenc_int(1), w.column_def("v")] + ([] if deprecate else [w.eof(status)])
    end = w.ok(status=status, header=0xFE) if deprecate else w.eof(status, warnings=1)
    return [*head, *[w.text_row(b"r%d" % i) for i in range(rows)], end]


def call(results: list[list[bytes]], split: bool) -> list[bytes]:
    """A CALL's response: its results framed in turn, each its own chunk (``split``, as
    MariaDB flushes after each) or all in one."""
    chunks, seq = [], 1
    for payloads in results:
        chunks.append(w.framed(payloads, seq))
        seq += len(payloads)
    return chunks if split else [b"".join(chunks)]


def serve(script: w.Script, chunks: list[bytes]) -> None:
    for chunk in chunks:
        script.server(chunk)


def test_text_calls_take_the_fast_path() -> None:
    """CALLs answered by one to three result sets with MORE_RESULTS, then the final OK (with
    affected rows, warnings, an index flag), with and without DEPRECATE_EOF, in one segment
    or one per result: all C's but the first of each template; rows add up over the result
    sets, the status and warnings are the final OK's, ttfb is the first segment's."""
    for deprecate in (False, True):
        for split in (False, True):
            script = w.Script().login(deprecate_eof=deprecate)
            for i in range(5):
                results = [text_result(k + i, deprecate=deprecate) for k in range(i % 3 + 1)]
                final = w.ok(affected=i, warnings=i % 2, status=STATUS | (i % 2) * c.SERVER_QUERY_NO_INDEX_USED)
                script.client(w.query(f"CALL report({i}, 'x{i}')"))
                serve(script, call([*results, [final]], split))
            pure, compiled = run(whole_chunks(script))
            assert fast(compiled) == (4, 4 if split else 0, 0), (deprecate, split)
            assert totals(compiled) == totals(pure)
            count, rows, affected, warnings, no_index, errors, latency, ttfb = totals(pure)["CALL report(?, ?)"]
            assert (count, rows, affected, warnings, no_index, errors) == (5, 24, 10, 2, 2, {})
            assert ttfb < latency if split else ttfb == latency


def test_oks_with_more_results_add_their_affected_rows() -> None:
    """Intermediate OKs (a procedure's statements) add their affected rows; a final result
    set (no OK after it) ends the statement with its EOF's status."""
    script = w.Script().login()
    for i in range(4):
        first = w.ok(affected=2, warnings=7, status=STATUS | MORE)
        script.client(w.query(f"CALL upsert({i})"))
        serve(
            script,
            call(
                [[first], [w.ok(affected=300, status=STATUS | MORE)], text_result(i, deprecate=False, more=False)],
                i % 2 == 0,
            ),
        )
    pure, compiled = run(whole_chunks(script))
    assert fast(compiled) == (3, 1, 0)
    assert totals(compiled) == totals(pure)
    assert totals(pure)["CALL upsert(?)"][:5] == (4, 6, 4 * 302, 4, 0)


def test_an_err_after_a_first_result_is_counted_in_c() -> None:
    """A CALL whose second statement failed: the rows of the first result and the ERR's code
    are the statement's, status and warnings 0; in one segment or two."""
    script = w.Script().login()
    for i in range(5):
        script.client(w.query(f"CALL transfer({i})"))
        err = w.err(DEADLOCK, "40001", "Deadlock found") if i % 2 else w.err(1146, "42S02", "no table")
        serve(script, call([text_result(2, deprecate=False), [err]], i >= 2))
    pure, compiled = run(whole_chunks(script))
    assert fast(compiled) == (4, 3, 0)
    assert totals(compiled) == totals(pure)
    assert totals(pure)["CALL transfer(?)"][:6] == (5, 10, 0, 0, 0, {"1146": 3, "1213": 2})


def test_prepared_calls_with_out_parameters() -> None:
    """Executes of a prepared CALL: a binary result set (with and without definitions),
    the OUT parameters' result set (SERVER_PS_OUT_PARAMS, which Python reads as any), the
    final OK; with and without DEPRECATE_EOF, split or not."""
    for deprecate in (False, True):
        script = w.Script().login(deprecate_eof=deprecate)
        script.client(w.prepare("CALL stock(?, @out)"))
        script.server(w.prepare_ok(3, 0, 1, deprecate_eof=deprecate))
        for i in range(6):
            script.client(w.execute(3, [(c.TYPE_LONG, struct.pack("<i", i))], bind=i == 0))
            rows = binary_result(2, [[struct.pack("<i", i), None]] * i, deprecate=deprecate, status=STATUS | MORE)
            out = binary_result(
                1, [[struct.pack("<i", 7)]], deprecate=deprecate, metadata=i % 2, status=STATUS | MORE | PS_OUT_PARAMS
            )
            final = w.framed([w.ok(warnings=1)], 99)
            serve(script, [rows + out, final] if i % 2 else [rows, out, final])
        pure, compiled = run(whole_chunks(script))
        assert fast(compiled) == (5, 5, 0), deprecate
        assert totals(compiled) == totals(pure)
        assert totals(pure)["CALL stock(?, @out)"][:4] == (6, 15 + 6, 0, 6)


def test_calls_python_keeps() -> None:
    """A session change in the final OK, an ERR of MariaDB's progress code after a result,
    a result cut inside a packet, a response slower than the threshold over its segments, a
    request pipelined before the last result, a multi-statement text and a connection
    closed before the last result: all Python's; the held segments are replayed in order."""
    script = w.Script().login()
    script.client(w.query("CALL p(0)"))
    serve(script, call([text_result(1, deprecate=False), [w.ok()]], True))  # the template's first
    script.client(w.query("CALL p(1)"))
    serve(script, call([text_result(1, deprecate=False), [w.ok(schema="other")]], True))
    script.client(w.query("CALL p(2)"))
    serve(script, call([text_result(1, deprecate=False), [w.err(0xFFFF, "HY000", "progress")], [w.ok()]], True))
    script.client(w.query("CALL p(3)"))
    whole = b"".join(call([text_result(3, deprecate=False), [w.ok()]], True))
    script.server(whole[:20]).server(whole[20:])
    script.client(w.query("CALL p(4)"))
    serve(script, call([text_result(1, deprecate=False)] * 6 + [[w.ok()]], True))  # 7 x 50 µs: slow
    script.client(w.query("CALL p(5)"))
    first, last = call([text_result(1, deprecate=False), [w.ok()]], True)
    script.server(first).client(w.query("SELECT 1")).server(last).server(w.result_set(["1"], [[b"1"]]))
    script.client(w.query("SELECT 1; CALL p(6)"))
    serve(script, call([[w.ok(status=STATUS | MORE)], text_result(1, deprecate=False), [w.ok()]], True))
    script.client(w.query("CALL p(7)"))
    serve(script, call([text_result(1, deprecate=False)], True))
    pure, compiled = run(whole_chunks(script))  # close_all at the end settles CALL p(7)
    assert fast(compiled) == (0, 0, 6)
    assert totals(compiled) == totals(pure)


def test_a_call_left_open_is_replayed_at_teardown() -> None:
    """The capture ends after a CALL's first result: held request and result are fed to
    Python (close_all), which files the statement as lost, as without the fast path."""
    script = w.Script().login(deprecate_eof=True)
    for i in range(3):
        script.client(w.query(f"CALL p({i})"))
        serve(script, call([text_result(i, deprecate=True), [w.ok()]], True)[: 1 if i == 2 else 2])
    pure, compiled = run(whole_chunks(script))
    assert fast(compiled) == (1, 1, 1)
    assert totals(compiled) == totals(pure)


def test_results_kept_for_one_call_are_bounded_by_bytes() -> None:
    """A CALL's server segments are kept until its last result, at most 256 KiB of them: a
    CALL whose earlier results hold more is Python's (replayed in order), the same
    procedure's smaller answers before and after stay C's."""

    def results(row_bytes: int) -> list[list[bytes]]:
        head = [w.lenenc_int(1), w.column_def("v"), w.eof(STATUS | MORE)]
        one = [*head, w.text_row(b"x" * row_bytes), w.eof(STATUS | MORE)]
        return [one, one, one, [w.ok()]]

    script = w.Script().login()
    for i, row_bytes in enumerate((10_000, 10_000, 100_000, 10_000)):
        script.client(w.query(f"CALL dump({i})"))
        serve(script, call(results(row_bytes), True))
    pure, compiled = run(whole_chunks(script))
    # The first is the template's first (Python's); the third keeps ~200 KB in two
    # segments and declines at the third.
    assert fast(compiled) == (2, 2, 1)
    assert totals(compiled) == totals(pure)
    assert totals(pure)["CALL dump(?)"][:2] == (4, 12)
