"""Build MySQL protocol bytes and TCP captures of scripted conversations, for tests.

Payload builders follow the MySQL/MariaDB protocol pages; ``Script`` strings requests and
responses into the two byte streams of a connection, and ``to_pcap`` turns a script into
Ethernet/IPv4/TCP frames with scapy, with real sequence and acknowledgement numbers, so the
whole engine (decode, reassembly, conversation) can be driven from a file.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from probe.mysql import constants as c

MARIADB_SERVER_CAPS = (
    c.CLIENT_CONNECT_WITH_DB
    | c.CLIENT_PROTOCOL_41
    | c.CLIENT_SECURE_CONNECTION
    | c.CLIENT_MULTI_STATEMENTS
    | c.CLIENT_MULTI_RESULTS
    | c.CLIENT_PLUGIN_AUTH
    | c.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | c.CLIENT_SESSION_TRACK
    | c.CLIENT_DEPRECATE_EOF
    | c.CLIENT_COMPRESS
    | c.CLIENT_SSL
    | c.CLIENT_LOCAL_FILES
    | c.MARIADB_CLIENT_PROGRESS
    | c.MARIADB_CLIENT_CACHE_METADATA
)
CLIENT_CAPS = (
    c.CLIENT_LONG_PASSWORD
    | c.CLIENT_CONNECT_WITH_DB
    | c.CLIENT_PROTOCOL_41
    | c.CLIENT_SECURE_CONNECTION
    | c.CLIENT_MULTI_STATEMENTS
    | c.CLIENT_MULTI_RESULTS
    | c.CLIENT_PLUGIN_AUTH
    | c.CLIENT_LOCAL_FILES
)


def lenenc_int(n: int) -> bytes:
    if n < 0xFB:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little")
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little")
    return b"\xfe" + n.to_bytes(8, "little")


def lenenc_str(data: bytes) -> bytes:
    return lenenc_int(len(data)) + data


def packets(payload: bytes, seq: int) -> tuple[bytes, int]:
    """Frame a payload, splitting at 0xFFFFFF bytes; returns (bytes, next sequence id)."""
    out = bytearray()
    pos = 0
    while True:
        chunk = payload[pos : pos + c.MAX_PACKET_LENGTH]
        out += len(chunk).to_bytes(3, "little") + bytes([seq & 0xFF]) + chunk
        seq += 1
        pos += len(chunk)
        if len(chunk) < c.MAX_PACKET_LENGTH:
            return bytes(out), seq


def framed(payloads: Iterable[bytes], seq: int = 0) -> bytes:
    out = bytearray()
    for payload in payloads:
        data, seq = packets(payload, seq)
        out += data
    return bytes(out)


# -- payloads ---------------------------------------------------------------------------------


def greeting(
    conn_id: int = 42,
    version: str = "10.11.19-MariaDB-0+deb12u1",
    caps: int = MARIADB_SERVER_CAPS,
    mariadb: bool = True,
) -> bytes:
    low = caps & 0xFFFFFFFF
    if mariadb:
        low &= ~c.CLIENT_LONG_PASSWORD  # "not MySQL": the extended capabilities follow
    else:
        low |= c.CLIENT_LONG_PASSWORD  # MySQL servers always set it
    reserved = b"\0" * 6 + ((caps >> 32).to_bytes(4, "little") if mariadb else b"\0" * 4)
    return (
        b"\x0a"
        + version.encode()
        + b"\0"
        + struct.pack("<I", conn_id)
        + b"abcdefgh\0"
        + struct.pack("<H", low & 0xFFFF)
        + b"\x2d"
        + struct.pack("<H", 2)
        + struct.pack("<H", low >> 16)
        + b"\x15"
        + reserved
        + b"ijklmnopqrst\0"
        + b"mysql_native_password\0"
    )


def handshake_response(
    user: str = "app",
    db: str = "shop",
    caps: int = CLIENT_CAPS,
    extended: int = 0,
) -> bytes:
    if db:
        caps |= c.CLIENT_CONNECT_WITH_DB
    filler = b"\0" * 19 + extended.to_bytes(4, "little")
    body = struct.pack("<IIB", caps & 0xFFFFFFFF, 1 << 24, 45) + filler + user.encode() + b"\0"
    body += b"\x14" + b"s" * 20
    if db:
        body += db.encode() + b"\0"
    body += b"mysql_native_password\0"
    return body


def ssl_request(caps: int = CLIENT_CAPS | c.CLIENT_SSL) -> bytes:
    return struct.pack("<IIB", caps, 1 << 24, 45) + b"\0" * 23


def ok(
    affected: int = 0,
    insert_id: int = 0,
    status: int = c.SERVER_STATUS_AUTOCOMMIT,
    warnings: int = 0,
    header: int = 0x00,
    schema: str | None = None,
) -> bytes:
    body = bytes([header]) + lenenc_int(affected) + lenenc_int(insert_id)
    if schema is not None:
        status |= c.SERVER_SESSION_STATE_CHANGED
    body += struct.pack("<HH", status, warnings)
    if schema is not None:
        change = bytes([c.SESSION_TRACK_SCHEMA]) + lenenc_str(lenenc_str(schema.encode()))
        body += lenenc_str(b"") + lenenc_str(change)
    return body


def err(code: int, sqlstate: str = "HY000", message: str = "error") -> bytes:
    return b"\xff" + struct.pack("<H", code) + b"#" + sqlstate.encode() + message.encode()


def eof(status: int = c.SERVER_STATUS_AUTOCOMMIT, warnings: int = 0) -> bytes:
    return b"\xfe" + struct.pack("<HH", warnings, status)


def column_def(name: str, table: str = "t") -> bytes:
    return (
        lenenc_str(b"def")
        + lenenc_str(b"shop")
        + lenenc_str(table.encode())
        + lenenc_str(table.encode())
        + lenenc_str(name.encode())
        + lenenc_str(name.encode())
        + b"\x0c"
        + struct.pack("<HIBHB", 45, 255, 0xFD, 0, 0)
        + b"\0\0"
    )


def text_row(*values: bytes | None) -> bytes:
    return b"".join(b"\xfb" if v is None else lenenc_str(v) for v in values)


def result_set(
    columns: Sequence[str],
    rows: Sequence[Sequence[bytes | None]],
    *,
    deprecate_eof: bool = False,
    status: int = c.SERVER_STATUS_AUTOCOMMIT,
    metadata_flag: bool = False,
    seq: int = 1,
) -> bytes:
    payloads = [lenenc_int(len(columns)) + (b"\x01" if metadata_flag else b"")]
    payloads += [column_def(name) for name in columns]
    if not deprecate_eof:
        payloads.append(eof(status))
    payloads += [text_row(*row) for row in rows]
    payloads.append(ok(status=status, header=0xFE) if deprecate_eof else eof(status))
    return framed(payloads, seq)


def query(sql: str | bytes) -> bytes:
    body = sql.encode() if isinstance(sql, str) else sql
    return framed([bytes([c.Command.QUERY]) + body])


def command(code: int, body: bytes = b"") -> bytes:
    return framed([bytes([code]) + body])


def prepare_ok(stmt_id: int, columns: int, params: int, *, deprecate_eof: bool = False) -> bytes:
    payloads = [b"\x00" + struct.pack("<IHHxH", stmt_id, columns, params, 0)]
    if params:
        payloads += [column_def("?") for _ in range(params)]
        if not deprecate_eof:
            payloads.append(eof())
    if columns:
        payloads += [column_def(f"c{i}") for i in range(columns)]
        if not deprecate_eof:
            payloads.append(eof())
    return framed(payloads, 1)


def execute(stmt_id: int, params: Sequence[tuple[int, bytes | None]], *, bind: bool = True, flags: int = 0) -> bytes:
    """COM_STMT_EXECUTE; params are (type code incl. unsigned flag << 8, encoded value or None)."""
    body = bytes([c.Command.STMT_EXECUTE]) + struct.pack("<IBI", stmt_id, flags, 1)
    if params:
        bitmap = bytearray((len(params) + 7) // 8)
        for i, (_, value) in enumerate(params):
            if value is None:
                bitmap[i >> 3] |= 1 << (i & 7)
        body += bytes(bitmap) + (b"\x01" if bind else b"\x00")
        if bind:
            body += b"".join(struct.pack("<H", kind) for kind, _ in params)
        body += b"".join(value for _, value in params if value is not None)
    return framed([body])


def prepare(sql: str) -> bytes:
    return framed([bytes([c.Command.STMT_PREPARE]) + sql.encode()])


def bulk_execute(
    stmt_id: int, types: Sequence[int], rows: Sequence[Sequence[bytes | None]], *, send_types: bool = True
) -> bytes:
    """MariaDB's COM_STMT_BULK_EXECUTE; each value is encoded binary, or None for NULL."""
    body = bytes([c.Command.STMT_BULK_EXECUTE]) + struct.pack("<IH", stmt_id, 128 if send_types else 0)
    if send_types:
        body += b"".join(struct.pack("<H", kind) for kind in types)
    for row in rows:
        body += b"".join(b"\x01" if value is None else b"\x00" + value for value in row)
    return framed([body])


def binary_result_set(columns: int, rows: Sequence[Sequence[bytes]], *, seq: int = 1) -> bytes:
    """A result set of the binary protocol (COM_STMT_EXECUTE), with EOF packets."""
    payloads = [lenenc_int(columns)] + [column_def(f"c{i}") for i in range(columns)] + [eof()]
    payloads += [binary_row(row) for row in rows]
    payloads.append(eof())
    return framed(payloads, seq)


def binary_row(values: Sequence[bytes]) -> bytes:
    return b"\x00" + b"\0" * ((len(values) + 9) // 8) + b"".join(values)


def compress_stream(plain: bytes, seq: int = 0, level: int = 6, threshold: int = 50) -> bytes:
    """Wrap plain protocol bytes in compressed-protocol frames."""
    out = bytearray()
    pos = 0
    while pos < len(plain) or not out:
        chunk = plain[pos : pos + 0xFFFFFF]
        pos += len(chunk)
        if len(chunk) >= threshold:
            body = zlib.compress(chunk, level)
            out += len(body).to_bytes(3, "little") + bytes([seq & 0xFF]) + len(chunk).to_bytes(3, "little") + body
        else:
            out += len(chunk).to_bytes(3, "little") + bytes([seq & 0xFF]) + b"\0\0\0" + chunk
        seq += 1
        if pos >= len(plain):
            break
    return bytes(out)


# -- scripted conversations -------------------------------------------------------------------

TO_SERVER = 0
TO_CLIENT = 1


@dataclass
class Script:
    """A connection as a list of (direction, bytes, microseconds after the previous chunk)."""

    chunks: list[tuple[int, bytes, int]] = field(default_factory=list)

    def client(self, data: bytes, after_us: int = 100) -> Script:
        self.chunks.append((TO_SERVER, data, after_us))
        return self

    def server(self, data: bytes, after_us: int = 100) -> Script:
        self.chunks.append((TO_CLIENT, data, after_us))
        return self

    def login(self, *, user: str = "app", db: str = "shop", conn_id: int = 42, deprecate_eof: bool = False) -> Script:
        caps = CLIENT_CAPS | (c.CLIENT_DEPRECATE_EOF if deprecate_eof else 0)
        self.server(framed([greeting(conn_id)]))
        self.client(framed([handshake_response(user, db, caps)], 1))
        self.server(framed([ok()], 2))
        return self

    def timed(self, start_ns: int = 1_700_000_000_000_000_000) -> list[tuple[int, int, bytes]]:
        out = []
        ts = start_ns
        for direction, data, after_us in self.chunks:
            ts += after_us * 1000
            out.append((ts, direction, data))
        return out


def to_frames(
    script: Script,
    *,
    client: tuple[str, int] = ("10.0.0.7", 51000),
    server: tuple[str, int] = ("10.0.0.1", 3306),
    handshake: bool = True,
    mss: int = 1460,
    isn: tuple[int, int] = (1000, 500_000),
) -> list[tuple[int, bytes]]:
    """Ethernet frames (timestamp ns, bytes) for a script, with TCP sequence numbers.

    Chunks longer than ``mss`` become several segments; every segment acknowledges all
    that its sender has received.
    """
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    seqs = [isn[0], isn[1]]
    ends = [(client, server), (server, client)]
    frames: list[tuple[int, bytes]] = []
    timed = script.timed()
    t0 = timed[0][0] - 3000 if timed else 0

    def frame(ts: int, direction: int, flags: str, payload: bytes = b"") -> None:
        (src, sport), (dst, dport) = ends[direction]
        pkt = (
            Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
            / IP(src=src, dst=dst)
            / TCP(sport=sport, dport=dport, flags=flags, seq=seqs[direction], ack=seqs[1 - direction], window=65535)
        )
        if payload:
            pkt = pkt / payload
        frames.append((ts, bytes(pkt)))

    if handshake:
        frame(t0, TO_SERVER, "S")
        seqs[TO_SERVER] += 1
        frame(t0 + 1000, TO_CLIENT, "SA")
        seqs[TO_CLIENT] += 1
        frame(t0 + 2000, TO_SERVER, "A")
    for ts, direction, data in timed:
        for i in range(0, len(data), mss):
            piece = data[i : i + mss]
            frame(ts, direction, "PA", piece)
            seqs[direction] = (seqs[direction] + len(piece)) & 0xFFFFFFFF
    return frames


def write_pcap(path: str, frames: Sequence[tuple[int, bytes]]) -> None:
    from scapy.layers.l2 import Ether
    from scapy.utils import PcapWriter

    with PcapWriter(path, linktype=1, sync=True) as writer:
        for ts, data in frames:
            pkt = Ether(data)
            pkt.time = ts / 1e9
            writer.write(pkt)
