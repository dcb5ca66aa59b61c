"""The conversation fields probe/_cexchange.c reads and writes by slot offset.

A Conversation has no ``__dict__``: every field is a slot of ConnectionState, the classes
between add none. InOrder.attach finds each slot's offset on the Conversation class and
refuses (TypeError) a class whose field is not a writable object slot, rather than read
memory that is something else. An empty slot (a field deleted) makes the C path decline,
so the Python feed raises the AttributeError it raises without it; a field C only writes
is stored as Python's assignment stores it. ``limits.max_query_bytes`` is kept per limits
object; a query longer than it stays Python's.
"""

from __future__ import annotations

from typing import Any

import pytest

import probe.mysql.conversation as conversation_module
from probe.decode import Segment
from probe.flows import FlowLimits
from probe.mysql import constants as c
from probe.mysql.conversation import Conversation
from probe.mysql.events import TO_CLIENT, TO_SERVER
from probe.mysql.state import ConnectionState, ConversationLimits
from probe.normalize import Normalizer
from tests.probe.test_cexchange import STATUS, Peer, Side, compare, conv_state, run, whole_chunks
from tests.support import mysqlwire as w
from tests.support.native import need_compiled

TS = 1_700_000_000_000_000_000
REPLY = w.result_set(["v"], [[b"x"]])


def test_a_conversation_has_no_dict() -> None:
    conv = Conversation("c", "s", Normalizer(), from_start=True)
    assert not hasattr(conv, "__dict__")
    for klass in Conversation.__mro__[:-1]:
        assert "__slots__" in vars(klass), klass
        if klass is not ConnectionState:
            assert klass.__slots__ == (), f"{klass.__name__} declares fields: ConnectionState owns them all"
    with pytest.raises(AttributeError):
        conv.ad_hoc = 1  # type: ignore[attr-defined]


class _Shadowed(Conversation):
    """``phase`` is a property here: its value is not at the slot's offset."""

    __slots__ = ()

    @property  # type: ignore[override]
    def phase(self) -> int:
        return c.Command.QUERY


class _Unslotted:
    """A conversation-like class with a ``__dict__``."""

    def __init__(self) -> None:
        self.phase = 4


@pytest.mark.parametrize(
    ("layout", "message"),
    [(_Shadowed, r"\.phase is not a slot"), (_Unslotted, r"has no slot 'phase'")],
)
def test_attach_refuses_a_layout_it_cannot_read(
    monkeypatch: pytest.MonkeyPatch, layout: type[Any], message: str
) -> None:
    need_compiled()
    monkeypatch.setattr(conversation_module, "Conversation", layout)
    side = Side(pure=True)
    from probe import native

    assert native.cflows is not None
    entry = native.cflows.InOrder(side.flows)
    with pytest.raises(TypeError, match=message):
        entry.attach(side.aggregator)
    monkeypatch.undo()
    entry.attach(side.aggregator)  # nothing was left half-attached


def _opened() -> tuple[Peer, Side, Side]:
    """Both engines after a login and three queries of one template (two of them C's)."""
    need_compiled()
    peer, pure, compiled = Peer(51000), Side(pure=True), Side(pure=False)
    segs = peer.opening()
    for i in range(3):
        segs += [peer.send(TO_SERVER, w.query(f"SELECT v FROM t WHERE id = {i}")), peer.send(TO_CLIENT, REPLY)]
    feed(segs, pure, compiled)
    assert compiled.entry.fast_exchanges == 2
    return peer, pure, compiled


def feed(segs: list[Segment], *sides: Side) -> None:
    for seg in segs:
        for side in sides:
            side.entry(TS, seg)


def fields(side: Side) -> Any:
    (conn,) = side.flows.table.values()
    return conn.conv


def test_an_empty_slot_declines_and_python_raises() -> None:
    peer, pure, compiled = _opened()
    query = peer.send(TO_SERVER, w.query("SELECT v FROM t WHERE id = 9"))
    errors = []
    for side in (pure, compiled):
        del fields(side)._c_skip
        with pytest.raises(AttributeError) as raised:
            side.entry(TS, query)
        errors.append(str(raised.value))
    assert errors[0] == errors[1]
    assert compiled.entry.fast_exchanges == 2


def test_a_field_only_written_is_stored_into_an_empty_slot() -> None:
    peer, pure, compiled = _opened()
    for side in (pure, compiled):
        conv = fields(side)
        del conv._s_last_ns, conv._server_ack, conv._c_packet_end
    feed([peer.send(TO_SERVER, w.query("SELECT v FROM t WHERE id = 9")), peer.send(TO_CLIENT, REPLY)], pure, compiled)
    assert compiled.entry.fast_exchanges == 3
    compare(pure, compiled, "after the exchange")
    assert conv_state(fields(compiled))["_s_last_ns"] == TS


def test_queries_longer_than_max_query_bytes_stay_pythons() -> None:
    script = w.Script().login()
    for i in range(4):
        script.client(w.query(f"SELECT v FROM t WHERE id = {i}"))
        script.server(w.framed([w.ok(status=STATUS)], 1))
        script.client(w.query(f"SELECT v FROM t WHERE id = {i} AND name = 'long enough to be cut'"))
        script.server(w.framed([w.ok(status=STATUS)], 1))
    _, compiled = run(whole_chunks(script), FlowLimits(conversation=ConversationLimits(max_query_bytes=40)))
    assert compiled.entry.fast_exchanges == 3  # the short ones after the first
