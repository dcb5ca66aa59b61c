"""Wire codec: a report is UTF-8 JSON compressed as one raw snappy block.

Owns the byte form of everything that crosses a websocket: ``encode(obj) -> bytes`` and
``decode(bytes) -> obj``. The raw block format (not the framed one) is what Go's
``snappy.Encode``/``Decode`` read and write, so non-Python consumers can use it as is.
Decoding is bounded: a block that claims to inflate beyond ``max_size`` is refused before
any memory is spent on it.
"""

from __future__ import annotations

import json
from typing import Any

import snappy

#: Largest decoded message accepted by default (bytes of JSON).
DEFAULT_MAX_SIZE = 64 << 20


class CodecError(ValueError):
    """Bytes that are not a snappy block of JSON, or a block larger than allowed."""


def encode(obj: Any) -> bytes:
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=_default)
    return bytes(snappy.compress(text.encode("utf-8")))


def uncompressed_length(data: bytes) -> int:
    """The length a raw snappy block declares: the varint that starts it."""
    size = shift = 0
    for i, byte in enumerate(data[:5]):
        size |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return size
        shift += 7
        if i == 4:
            break
    raise CodecError("not a snappy block: bad length preamble")


def decode(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> Any:
    size = uncompressed_length(data)
    if size > max_size:
        raise CodecError(f"message of {size} bytes exceeds the limit of {max_size}")
    try:
        raw = snappy.uncompress(data)
        return json.loads(raw)
    except Exception as exc:
        raise CodecError(f"not a snappy block of JSON: {exc}") from None


def _default(obj: Any) -> Any:
    if isinstance(obj, bytes | bytearray):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")
