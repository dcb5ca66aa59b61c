"""Types of the compiled in-order fast path (probe/_cflows.c) and its COM_QUERY exchanges
(probe/_cexchange.c, probe/_cwire.c); their oracles are probe.flows.FlowTable.segment and
probe.mysql.conversation.Conversation.feed."""

from typing import Any

from probe.decode import Segment

class InOrder:
    flows: Any
    fast_exchanges: int
    fast_replayed: int
    fast_cache_resets: int
    fast_accs_full: int
    fast_error_codes_full: int
    fast_multi_segments: int
    def __init__(self, flows: Any, /) -> None: ...
    def __call__(self, ts_ns: int, seg: Segment, /) -> None: ...
    def attach(self, aggregator: Any, /) -> None: ...
    def fold(self) -> list[tuple[Any, ...]]: ...

class Held:
    active: int
    def settle(self, conn: Any, /) -> None: ...

def assumed_constants() -> dict[str, int]: ...
def skeleton(sql: bytes, /) -> bytes | None: ...
