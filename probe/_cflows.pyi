"""Types of the compiled in-order fast path (probe/_cflows.c); its oracle is
probe.flows.FlowTable.segment."""

from typing import Any

from probe.decode import Segment

class InOrder:
    flows: Any
    def __init__(self, flows: Any, /) -> None: ...
    def __call__(self, ts_ns: int, seg: Segment, /) -> None: ...

def assumed_constants() -> dict[str, int]: ...
