"""The MySQL compressed protocol (zlib) for one direction: frames in, plain bytes out.

Owns the 7-byte compressed frame header (``int<3>`` compressed length, ``int<1>``
sequence, ``int<3>`` uncompressed length, 0 meaning "stored as is") and the bounds that
keep a hostile frame from costing memory: a frame may not claim more than 16 MiB, and
inflation stops at the length the header promised.
"""

from __future__ import annotations

import zlib

from probe.mysql.packets import PacketError

HEADER_SIZE = 7
MAX_FRAME = 1 << 24


class Inflater:
    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def reset(self) -> None:
        self._buf.clear()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> bytes:
        """Plain bytes of every complete frame; raises ``PacketError`` on a bad frame."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while n - pos >= HEADER_SIZE:
            clen = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            ulen = buf[pos + 4] | buf[pos + 5] << 8 | buf[pos + 6] << 16
            if clen > MAX_FRAME or ulen > MAX_FRAME:
                buf.clear()
                raise PacketError("compressed frame too large")
            end = pos + HEADER_SIZE + clen
            if end > n:
                break
            body = bytes(buf[pos + HEADER_SIZE : end])
            if ulen == 0:
                out.append(body)
            else:
                inflater = zlib.decompressobj()
                try:
                    plain = inflater.decompress(body, ulen)
                except zlib.error as exc:
                    buf.clear()
                    raise PacketError(f"bad zlib frame: {exc}") from None
                if len(plain) != ulen:
                    buf.clear()
                    raise PacketError("zlib frame shorter than its header says")
                out.append(plain)
            pos = end
        if pos:
            del buf[:pos]
        return b"".join(out)


def looks_compressed(data: bytes) -> bool:
    """Whether ``data`` starts with a plausible compressed frame (for mid-stream attach)."""
    if len(data) < HEADER_SIZE + 1:
        return False
    clen = data[0] | data[1] << 8 | data[2] << 16
    ulen = data[4] | data[5] << 8 | data[6] << 16
    if clen + HEADER_SIZE != len(data) or clen == 0:
        return False
    if ulen == 0:
        # Stored frame: must hold a whole plain packet with sequence 0.
        inner = data[HEADER_SIZE:]
        return len(inner) >= 5 and (inner[0] | inner[1] << 8 | inner[2] << 16) + 4 == len(inner) and inner[3] == 0
    return data[HEADER_SIZE] == 0x78 and ulen >= clen // 2
