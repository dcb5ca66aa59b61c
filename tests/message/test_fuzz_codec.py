"""Fuzz target of the report decoder: the wire codec, the shape checks of a peer's report
and the master's merge. Any bytes decode or raise ``CodecError``; any document, or a valid
report with any one value replaced, is merged or rejected whole (never half-merged) and
never raises; a merged one still drains into a report that encodes and decodes."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cluster.merge import ReportMerger
from cluster.subscriptions import MalformedMessage, parse_slave_message
from message import CodecError, SchemaError, decode, encode
from message.check import check_interval_report
from tests.cluster.test_merge import slave_report, with_logins
from tests.support.fuzz import fuzz_settings

pytestmark = pytest.mark.fuzz

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
VALID = with_logins(
    slave_report("s1", 5, [("00000000000000a1", 1, [10, 20, 30]), ("00000000000000a2", 0, [7])]),
    ("app", "10.0.0.7", 3, {"1045": 2}, {"1927": 1}),
)


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(document, dict):
        for key, value in document.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            out += _paths(value, (*prefix, index))
    return out


PATHS = _paths(VALID)


def _state(merger: ReportMerger) -> str:
    """What the merger holds, less its counters (a rejection is counted, of course)."""
    snapshot = {k: v for k, v in merger.snapshot().items() if k != "counters"}
    return json.dumps(snapshot, sort_keys=True, default=str)


@fuzz_settings(500)
@given(st.binary(max_size=400))
def test_any_bytes_decode_or_raise_codec_error(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        decode(data)


@fuzz_settings(300)
@given(json_values)
def test_encode_then_decode_is_the_identity(value: Any) -> None:
    assert decode(encode(value)) == json.loads(json.dumps(value))


@fuzz_settings(500)
@given(json_values)
def test_any_document_is_merged_or_rejected_whole(document: Any) -> None:
    merger = ReportMerger()
    before = _state(merger)
    with contextlib.suppress(SchemaError):
        check_interval_report(document)
    outcome = merger.add(document) if isinstance(document, dict) else "rejected"
    assert outcome in ("merged", "rejected", "duplicate")
    if outcome == "rejected":
        assert _state(merger) == before


@fuzz_settings(600)
@given(st.sampled_from(PATHS), json_values)
@example(("templates", 0, "latency_us", "sketch", "keys", 1), 7_237_080_227)  # found: a MemoryError
def test_a_valid_report_with_one_value_replaced(path: tuple[Any, ...], value: Any) -> None:
    report = copy.deepcopy(VALID)
    target = report
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    merger = ReportMerger()
    before = _state(merger)
    outcome = merger.add(report)
    if outcome == "rejected":
        assert _state(merger) == before
        return
    merged = merger.drain(node="m", role="master", seq=1, epoch=1, start_ns=0, end_ns=100, expected=["s1"])
    assert decode(encode(merged))["node"] == "m"


@fuzz_settings(500)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200), json_values.map(json.dumps), json_values.map(encode)))
def test_slave_messages_parse_or_are_malformed(message: str | bytes) -> None:
    try:
        kind, document = parse_slave_message(message, 1 << 20)
    except MalformedMessage:
        return
    assert isinstance(document, dict) and isinstance(kind, str)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("templates", 0, "latency_us", "sketch", "keys", 0), 10**12),  # quantiles would allocate 10^12 bins
        (("templates", 0, "latency_us", "sketch", "keys", 0), -(10**9)),
        (("templates", 0, "latency_us", "sketch", "counts", 0), -5),
        (("templates", 0, "latency_us", "sketch", "zero"), float("inf")),  # "Infinity" on the wire
        (("templates", 0, "count"), float("inf")),
        (("templates", 0, "latency_us", "sum"), float("nan")),
    ],
)
def test_hostile_numbers_are_rejected_quickly(path: tuple[Any, ...], value: Any) -> None:
    report = copy.deepcopy(VALID)
    target = report
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    received = decode(encode(report))  # json reads Infinity and NaN back as floats
    merger = ReportMerger()
    assert merger.add(received) == "rejected"
    assert merger.rejected == 1 and not merger.templates
