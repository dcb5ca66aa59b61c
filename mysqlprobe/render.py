"""Human-readable replay and history reports: a profile sorted by total time, like pt-query-digest's.

Owns the text layout only. Templates are cut to the terminal width in the profile; the
details of the top templates are pretty-printed with sqlparse, once per template (it costs
~460 µs a statement, which is why it never runs on the hot path).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlparse

from message.report import OVERFLOW_KEY


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.3f}"


def _count(n: int) -> str:
    return f"{n:,}"


def profile(doc: dict[str, Any], *, top: int, width: int, details: int = 3) -> str:
    totals = doc["totals"]
    interval = doc["interval"]
    span_s = max(0, interval["end_ns"] - interval["start_ns"]) / 1e9
    lines = [
        f"# mysqlprobe replay of {doc['source']['file']}",
        f"# {_count(totals['queries'])} queries, {_count(totals['commands'])} commands, "
        f"{_count(totals['errors'])} errors in {span_s:.1f} s of traffic; "
        f"{_count(totals['packets'])} packets, {_count(totals['bytes'])} bytes",
        f"# coverage {totals['coverage'] * 100:.2f}%: {_count(totals['gaps'])} gaps, "
        f"{_count(totals['resyncs'])} resyncs, {_count(totals['responses_lost'])} responses lost, "
        f"{_count(totals['encrypted_conns'])} encrypted connections, "
        f"{_count(totals.get('unread_exchanges', 0))} exchanges unread, "
        f"{_count(totals.get('non_mysql_conns', 0))} connections not MySQL, "
        f"{_count(totals['unparsed_packets'])} unparsed packets",
        f"# analysed in {doc['analysis']['elapsed_s']:.2f} s with {doc['analysis']['workers']} worker(s), "
        f"{doc['analysis'].get('engine', 'pure')} engine",
    ]
    logins = doc.get("logins") or []
    if logins:
        refused: dict[str, int] = {}
        session: dict[str, int] = {}
        for entry in logins:
            for code, n in entry["errors"].items():
                refused[code] = refused.get(code, 0) + n
            for code, n in entry["session_errors"].items():
                session[code] = session.get(code, 0) + n
        by_code = ", ".join(f"{code} x{n:,}" for code, n in sorted(refused.items(), key=lambda item: -item[1]))
        lines.append(
            f"# logins: {_count(sum(e['count'] for e in logins))} attempts, {_count(sum(refused.values()))} refused"
            + (f" ({by_code})" if by_code else "")
            + (f"; {_count(sum(session.values()))} server errors in sessions" if session else "")
        )
    folded = doc.get("folded") or {}
    if folded.get("templates"):
        kept = sum(1 for t in doc["templates"] if t["key"] != OVERFLOW_KEY)
        lines.append(
            f"# {_count(folded['templates'])} lighter templates folded into one entry per database "
            f"({_count(folded['statements'])} statements, {folded['latency_us_sum'] / 1e6:.3f} s): "
            f"the {_count(kept)} heaviest by total time are kept"
        )
    if doc["source"].get("error"):
        lines.append(f"# input error: {doc['source']['error']}")
    lines += template_table(doc["templates"], top=top, width=width, details=details)
    return "\n".join(lines) + "\n"


def template_table(templates: list[dict[str, Any]], *, top: int, width: int, details: int) -> list[str]:
    """The profile table and the details of the first templates (replay and history)."""
    lines: list[str] = []
    grand_total = sum(t["latency_us"]["sum"] for t in templates) or 1
    header = (
        f"{'Rank':>4} {'Key':<16} {'Calls':>9} {'Total s':>9} {'%':>5} {'Avg ms':>9} "
        f"{'p95 ms':>9} {'p99 ms':>9} {'Errors':>7} {'Rows/call':>9}  Template"
    )
    lines += ["", header, "=" * min(width, len(header) + 20)]
    room = max(20, width - len(header) + len("Template"))
    for rank, entry in enumerate(templates[:top], 1):
        latency = entry["latency_us"]
        count = entry["count"] or 1
        text = " ".join(entry["template"].split())
        scope = entry["db"] + (f", user {entry['user']}" if entry.get("user") else "")
        if scope:
            text = f"[{scope}] {text}"
        if len(text) > room:
            text = text[: room - 3] + "..."
        errors = sum(entry["errors"].values())
        lines.append(
            f"{rank:>4} {entry['key']:<16} {entry['count']:>9,} {latency['sum'] / 1e6:>9.3f} "
            f"{latency['sum'] * 100 / grand_total:>5.1f} {latency['sum'] / count / 1000:>9.3f} "
            f"{_ms(latency['p95']):>9} {_ms(latency['p99']):>9} {errors:>7,} "
            f"{entry['rows_sent'] / count:>9.1f}  {text}"
        )
    if len(templates) > top:
        rest = templates[top:]
        lines.append(
            f"{'MISC':>4} {'(' + str(len(rest)) + ' more)':<16} {sum(t['count'] for t in rest):>9,} "
            f"{sum(t['latency_us']['sum'] for t in rest) / 1e6:>9.3f}"
        )
    for rank, entry in enumerate(templates[:details], 1):
        latency = entry["latency_us"]
        lines += [
            "",
            f"# Query {rank}: key {entry['key']}, db {entry['db'] or '-'}, user {entry.get('user') or '-'}, "
            f"commands {', '.join(f'{k} {v:,}' for k, v in sorted(entry['commands'].items()))}",
            f"#   latency ms: min {_ms(latency['min'])}  p50 {_ms(latency['p50'])}  p95 {_ms(latency['p95'])}  "
            f"p99 {_ms(latency['p99'])}  p999 {_ms(latency['p999'])}  max {_ms(latency['max'])}",
            f"#   rows sent {entry['rows_sent']:,}, rows affected {entry['rows_affected']:,}, "
            f"bytes in {entry['bytes_in']:,}, out {entry['bytes_out']:,}, no index used {entry['no_index_used']:,}"
            + (f", errors {entry['errors']}" if entry["errors"] else ""),
            sqlparse.format(entry["template"], reindent=True),
        ]
    return lines


def history_table(answer: dict[str, Any], *, width: int, details: int = 3) -> str:
    """``mysqlprobe history top``: the answer of /api/history/top as the replay table."""
    templates = answer["templates"]
    covers = answer["covers"]
    lines = [
        f"# mysqlprobe history from {_when(answer['from'])} to {_when(answer['to'])}, ordered by {answer['order']}",
        f"# {_count(answer['templates_total'])} templates; {_count(sum(t['count'] for t in templates))} calls and "
        f"{_count(sum(t['error_count'] for t in templates))} errors in the {len(templates)} listed",
        "# covers "
        + (f"{_when(covers['from'])} to {_when(covers['to'])}" if covers else "nothing of this range")
        + ("" if answer["complete"] else f" ({answer['note']})"),
    ]
    lines += template_table(templates, top=len(templates), width=width, details=details)
    return "\n".join(lines) + "\n"


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
