"""Types of the compiled decoder (probe/_cdecode.c); probe.decode is its pure-Python oracle."""

from collections.abc import Callable

from probe.decode import DecodeCounters, Segment
from probe.shard import Sharder

class Decoder:
    def __init__(self, linktype: int, counters: DecodeCounters) -> None: ...
    def __call__(self, frame: bytes) -> Segment | None: ...
    def batch(self, buffer: bytes, meta: bytes, segment: Callable[[int, Segment], object]) -> None: ...
    def sharded_batch(
        self, buffer: bytes, meta: bytes, segment: Callable[[int, Segment], object], sharder: Sharder
    ) -> None: ...
