"""Per-interval aggregation (probe/aggregate.py)."""

from __future__ import annotations

from probe.aggregate import Aggregator
from probe.mysql.events import CommandCompleted


def statement(start_ns: int, end_ns: int, conn_id: int) -> CommandCompleted:
    return CommandCompleted(
        "Query", "00000000000000bb", "SELECT ?", "SELECT 1", None, "shop", "app", "10.0.0.7:5000",
        "10.0.0.1:3306", conn_id, start_ns, end_ns, (end_ns - start_ns) // 1000, 0, 0, "", "", 1, 0, 10, 20, 2, 0, True,
    )  # fmt: skip


def test_first_and_last_seen_do_not_depend_on_the_order_events_come_in() -> None:
    """A long statement that started first ends after a short one of another connection:
    first_seen is the earliest start, last_seen the latest end."""
    long_first = statement(1_000, 900_000, 1)
    short_later = statement(5_000, 6_000, 2)
    for order in ([short_later, long_first], [long_first, short_later]):
        aggregator = Aggregator()
        for event in order:
            aggregator.add(event)
        (stats,) = aggregator.drain().templates
        assert (stats.first_seen_ns, stats.last_seen_ns) == (1_000, 900_000)
