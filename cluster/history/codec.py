"""The stored form of a latency sketch, and fast sums of stored sketches.

Owns one encoding: signed 64-bit integers ``zero, low, n, count[low], ..., count[low+n-1]``
(the buckets from the lowest to the highest, empty ones included), deflated. Empty buckets
cost almost nothing once deflated, and the dense layout lets ``SketchSum`` add a stored
sketch into a running total as one slice operation instead of one dict update per bucket
(a range query over 90 days adds ~2,000 hour sketches of ~300 buckets per template).
A decoded sketch merges like any other (``LatencySketch.merge`` adds buckets).
"""

from __future__ import annotations

import sys
import zlib
from array import array
from operator import add

from message.sketch import LatencySketch

_LITTLE = sys.byteorder == "little"
#: Widest bucket range stored (keys of 1 µs .. ~10^13 µs span about 1,500).
MAX_SPAN = 1 << 16


def encode_sketch(sketch: LatencySketch) -> bytes:
    bins = sketch.bins
    if bins:
        low = min(bins)
        span = max(bins) - low + 1
    else:
        low, span = 0, 0
    if span > MAX_SPAN:  # pragma: no cover - latencies are whole µs: keys stay within ~1,500
        raise ValueError(f"sketch spans {span} buckets (at most {MAX_SPAN})")
    numbers = array("q", bytes(8 * (3 + span)))
    numbers[0], numbers[1], numbers[2] = sketch.zero, low, span
    for key, n in bins.items():
        numbers[3 + key - low] = n
    if not _LITTLE:  # pragma: no cover - the stored form is little-endian everywhere
        numbers.byteswap()
    return zlib.compress(numbers.tobytes(), 1)


def _numbers(data: bytes) -> array[int]:
    try:
        raw = zlib.decompress(data)
    except zlib.error as exc:
        raise ValueError(f"stored sketch does not inflate: {exc}") from None
    numbers = array("q")
    if len(raw) % numbers.itemsize or len(raw) < 3 * numbers.itemsize:
        raise ValueError("stored sketch has a bad length")
    numbers.frombytes(raw)
    if not _LITTLE:  # pragma: no cover
        numbers.byteswap()
    if numbers[2] < 0 or len(numbers) != 3 + numbers[2]:
        raise ValueError("stored sketch has a bad bucket count")
    return numbers


def decode_sketch(data: bytes) -> LatencySketch:
    """Rebuild a sketch; raises ``ValueError`` on bytes that are not an encoded sketch."""
    numbers = _numbers(data)
    sketch = LatencySketch()
    sketch.zero = numbers[0]
    low = numbers[1]
    sketch.bins = {low + i: n for i, n in enumerate(numbers[3:]) if n}
    return sketch


class SketchSum:
    """A running bucket-wise sum of stored sketches, kept dense."""

    __slots__ = ("counts", "low", "zero")

    def __init__(self) -> None:
        self.zero = 0
        self.low = 0
        self.counts: list[int] = []

    def add_encoded(self, data: bytes) -> None:
        numbers = _numbers(data)
        self.zero += numbers[0]
        span = numbers[2]
        if span:
            self._add(numbers[1], numbers[3:])

    def add_sketch(self, sketch: LatencySketch) -> None:
        self.zero += sketch.zero
        if sketch.bins:
            low = min(sketch.bins)
            dense = [0] * (max(sketch.bins) - low + 1)
            for key, n in sketch.bins.items():
                dense[key - low] = n
            self._add(low, dense)

    def _add(self, low: int, counts: array[int] | list[int]) -> None:
        span = len(counts)
        mine = self.counts
        if not mine:
            self.low = low
            self.counts = list(counts)
            return
        if low < self.low:
            mine[0:0] = [0] * (self.low - low)
            self.low = low
        end = low - self.low + span
        if end > len(mine):
            mine.extend([0] * (end - len(mine)))
        start = low - self.low
        mine[start:end] = map(add, mine[start:end], counts)

    def sketch(self) -> LatencySketch:
        out = LatencySketch()
        out.zero = self.zero
        low = self.low
        out.bins = {low + i: n for i, n in enumerate(self.counts) if n}
        return out


#: Bound key of a sketch whose quantile falls in the zero bucket (keys of values >= 1 µs are >= 0).
ZERO_BOUND_KEY = -1
#: Keys at or above this stand for "no bound known".
UNBOUNDED_KEY = 1 << 20


def quantile_bound_key(sketch: LatencySketch, q: float) -> int:
    """The smallest bucket key k such that the buckets up to k (and the zero bucket) hold at
    least ``q`` of the sketch's values.

    For any merge of sketches, the q-quantile (DDSketch's: the bucket where the running
    count first exceeds q x (N - 1)) lies at or below the largest of the parts' bound keys:
    at that key every part has counted at least q x n_i values, so the merge at least q x N.
    Stored per row, these bounds let ``top`` rank by p99 without merging every template.
    """
    total = sketch.count
    need = q * total
    running = sketch.zero
    if total == 0 or running >= need:
        return ZERO_BOUND_KEY
    bins = sketch.bins
    for key in sorted(bins):
        running += bins[key]
        if running >= need:
            return key
    return max(bins)  # pragma: no cover - the loop reaches the total


def bucket_value(key: int) -> float:
    """The value a quantile in bucket ``key`` is reported as (inf for an unknown bound)."""
    if key >= UNBOUNDED_KEY:
        return float("inf")
    probe = LatencySketch()
    probe.bins = {key: 1}
    value = probe.quantile(0.5)
    return float(value) if value is not None else 0.0


def merge_encoded(into: LatencySketch, data: bytes) -> None:
    """Add the buckets of an encoded sketch into ``into``."""
    numbers = _numbers(data)
    into.zero += numbers[0]
    low = numbers[1]
    bins = into.bins
    get = bins.get
    for i, n in enumerate(numbers[3:]):
        if n:
            key = low + i
            bins[key] = get(key, 0) + n
