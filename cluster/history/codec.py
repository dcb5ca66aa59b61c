"""The stored form of a latency sketch: compact bytes that decode to the same buckets.

Owns one encoding: the zero count, the number of buckets, the bucket keys as deltas
(ascending keys make them small) and the counts, as signed 64-bit integers, deflated.
A sketch decoded from it merges like any other (``LatencySketch.merge`` adds buckets), so
rollups and range queries add stored sketches bucket by bucket.
"""

from __future__ import annotations

import itertools
import sys
import zlib
from array import array

from message.sketch import LatencySketch

_LITTLE = sys.byteorder == "little"


def encode_sketch(sketch: LatencySketch) -> bytes:
    keys = sorted(sketch.bins)
    numbers = array("q", [sketch.zero, len(keys)])
    previous = 0
    for key in keys:
        numbers.append(key - previous)
        previous = key
    bins = sketch.bins
    numbers.extend(bins[k] for k in keys)
    if not _LITTLE:  # pragma: no cover - the stored form is little-endian everywhere
        numbers.byteswap()
    return zlib.compress(numbers.tobytes(), 1)


def decode_sketch(data: bytes) -> LatencySketch:
    """Rebuild a sketch; raises ``ValueError`` on bytes that are not an encoded sketch."""
    try:
        raw = zlib.decompress(data)
    except zlib.error as exc:
        raise ValueError(f"stored sketch does not inflate: {exc}") from None
    numbers = array("q")
    if len(raw) % numbers.itemsize or len(raw) < 2 * numbers.itemsize:
        raise ValueError("stored sketch has a bad length")
    numbers.frombytes(raw)
    if not _LITTLE:  # pragma: no cover
        numbers.byteswap()
    zero, size = numbers[0], numbers[1]
    if size < 0 or len(numbers) != 2 + 2 * size:
        raise ValueError("stored sketch has a bad bucket count")
    sketch = LatencySketch()
    sketch.zero = zero
    keys = itertools.accumulate(numbers[2 : 2 + size])
    sketch.bins = dict(zip(keys, numbers[2 + size :], strict=True))
    return sketch


def merge_encoded(into: LatencySketch, data: bytes) -> None:
    """Add the buckets of an encoded sketch into ``into`` (without building a second sketch)."""
    raw = zlib.decompress(data)
    numbers = array("q")
    numbers.frombytes(raw)
    if not _LITTLE:  # pragma: no cover
        numbers.byteswap()
    size = numbers[1]
    into.zero += numbers[0]
    bins = into.bins
    get = bins.get
    for key, n in zip(itertools.accumulate(numbers[2 : 2 + size]), numbers[2 + size :], strict=True):
        bins[key] = get(key, 0) + n
