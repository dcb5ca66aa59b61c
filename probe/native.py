"""Which implementation of the hot per-packet functions runs: compiled or pure Python.

The aio-libs pattern: ``probe/_cdecode.c`` (frame decoder, batch loops) and
``probe/_cresponses.c`` (the server packet walker of ``probe.mysql.responses``) and
``probe/_cflows.c`` (the in-order fast path of ``probe.flows.FlowTable.segment``) are built
by setuptools when a C compiler is there and skipped when not; the pure-Python functions
stay as fallback and as the oracle the compiled ones are tested against. All three modules
are used or none (``Decoder.batch`` calls ``probe._cflows.InOrder``'s C entry directly, found
through the ``probe._cflows._C_API`` capsule). ``MYSQLPROBE_NO_EXTENSIONS=1`` forces the pure engine (an empty value or
``0`` does not). ``ENGINE`` names the one in use ("compiled" or "pure"); reports and
``/status`` show it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType
from typing import Any, Protocol

from probe.decode import DecodeCounters, Segment, decode_batch, make_decoder
from probe.shard import Sharder, sharded_batch


def _wanted() -> bool:
    return os.environ.get("MYSQLPROBE_NO_EXTENSIONS", "") in ("", "0")


def _load() -> tuple[ModuleType, ModuleType, ModuleType] | tuple[None, None, None]:
    if not _wanted():
        return None, None, None
    try:
        from probe import _cdecode, _cflows, _cresponses
    except ImportError:  # not built: no compiler at install time
        return None, None, None
    return _cdecode, _cresponses, _cflows


cdecode, cresponses, cflows = _load()
ENGINE = "compiled" if cdecode is not None else "pure"

#: Outcomes of the server walker (``probe._cresponses.walk``): Python's loop goes on at the
#: returned position, the response ended there, or the data ended inside a packet.
WALK_STOP, WALK_DONE, WALK_SKIP = 0, 1, 2
#: ``walk(conv, cmd, data, pos) -> (outcome, pos, status, warnings)``; None: pure engine.
server_walker: Callable[[Any, Any, bytes, int], tuple[int, int, int, int]] | None = (
    cresponses.walk if cresponses is not None else None
)


class FrameDecoder(Protocol):
    """What the engine calls: a frame decoder with its batch loop."""

    def __call__(self, frame: bytes) -> Segment | None: ...

    def batch(self, buffer: bytes, meta: bytes, segment: Callable[[int, Segment], object]) -> None: ...

    def sharded_batch(
        self, buffer: bytes, meta: bytes, segment: Callable[[int, Segment], object], sharder: Sharder
    ) -> None: ...


class PureDecoder:
    """``probe.decode``'s functions behind the compiled decoder's interface."""

    __slots__ = ("_decode", "linktype")

    def __init__(self, linktype: int, counters: DecodeCounters) -> None:
        self.linktype = linktype
        self._decode = make_decoder(linktype, counters)

    def __call__(self, frame: bytes) -> Segment | None:
        return self._decode(frame)

    def batch(self, buffer: bytes, meta: bytes, segment: Callable[[int, Segment], object]) -> None:
        decode_batch(self._decode, buffer, meta, segment)

    def sharded_batch(
        self, buffer: bytes, meta: bytes, segment: Callable[[int, Segment], object], sharder: Sharder
    ) -> None:
        sharded_batch(self._decode, self.linktype, buffer, meta, segment, sharder)


def frame_decoder(linktype: int, counters: DecodeCounters, *, pure: bool = False) -> FrameDecoder:
    """The decoder for ``linktype``: compiled unless ``pure`` or unavailable. Raises
    ``UnsupportedLinkType`` for a link type neither reads."""
    decoder = PureDecoder(linktype, counters)  # raises for an unsupported link type
    if cdecode is None or pure:
        return decoder
    compiled: FrameDecoder = cdecode.Decoder(linktype, counters)
    return compiled


def plain(decoder: FrameDecoder) -> Callable[[bytes], Segment | None]:
    """The per-frame function of ``decoder`` without a wrapper's extra call."""
    if isinstance(decoder, PureDecoder):
        return decoder._decode
    return decoder
