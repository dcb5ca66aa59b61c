"""Capture adapter: the only module that talks to libpcap (pcapy-ng).

Owns opening pcap/pcapng files (gzip'd ones through a pipe, never a temp copy) and live
devices, reading them in batches (``next_batch``: one C call per up to N packets), BPF
filters for the watched ports, and the pcap/kernel drop counters. It yields
``(buffer, meta)`` batches where ``meta`` holds 16-byte records (sec, usec, offset,
caplen).

A truncated file makes libpcap fail the whole batch that holds the broken record; the
reader then reopens the file, skips what it already delivered and reads the rest one packet
at a time, so every complete packet before the damage is still delivered, and ``error``
says what was wrong.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pcapy

_META = struct.Struct("IIII")
_GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_BATCH = 64


class CaptureError(Exception):
    """A capture source could not be opened or read; the message is one line for the user."""


class _GunzipPipe:
    """A child process decompressing the file into a pipe that libpcap reads.

    A thread would deadlock: pcapy-ng holds the GIL while libpcap blocks reading the pipe.
    """

    _SCRIPT = (
        "import gzip, shutil, sys\n"
        "try:\n"
        "    shutil.copyfileobj(gzip.open(sys.argv[1], 'rb'), sys.stdout.buffer, 1 << 20)\n"
        "except BrokenPipeError:\n"
        "    pass\n"
        "except (OSError, EOFError) as exc:\n"
        "    sys.stderr.write(str(exc))\n"
        "    sys.exit(1)\n"
    )

    def __init__(self, path: str) -> None:
        self.source = path
        self._proc = subprocess.Popen(
            [sys.executable, "-c", self._SCRIPT, path],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        self.path = f"/dev/fd/{self._proc.stdout.fileno()}"

    @property
    def error(self) -> str | None:
        """The child's complaint, once it has finished (a damaged gzip stream)."""
        if self._proc.poll() is None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                return None
        if self._proc.returncode:
            assert self._proc.stderr is not None
            detail = self._proc.stderr.read().decode("utf-8", "replace").strip()
            return f"{self.source}: {detail or 'gzip decompression failed'}"
        return None

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()


class FileCapture:
    """Packets of a pcap or pcapng file, plain or gzip'd."""

    def __init__(self, path: str, bpf: str | None = None) -> None:
        self.path = path
        self.bpf = bpf
        self.error: str | None = None
        self.delivered = 0
        self._pipe: _GunzipPipe | None = None
        try:
            with open(path, "rb") as fh:
                self.gzipped = fh.read(2) == _GZIP_MAGIC
        except OSError as exc:
            raise CaptureError(f"{path}: {exc.strerror or exc}") from None
        self._reader = self._open()
        self.linktype: int = self._reader.datalink()

    def _open(self) -> Any:
        name = self.path
        if self.gzipped:
            if self._pipe is not None:
                self._pipe.close()
            self._pipe = _GunzipPipe(self.path)
            name = self._pipe.path
        try:
            reader = pcapy.open_offline(name)
        except pcapy.PcapError as exc:
            detail = str(exc)
            if self._pipe is not None:
                detail = self._pipe.error or detail
            self.close()
            raise CaptureError(f"{self.path}: not a readable capture file ({detail})") from None
        if self.bpf:
            reader.setfilter(self.bpf)
        return reader

    def batches(self, size: int = DEFAULT_BATCH) -> Iterator[tuple[bytes, bytes]]:
        reader = self._reader
        while True:
            try:
                buffer, meta = reader.next_batch(size)
            except pcapy.PcapError as exc:
                yield from self._recover(str(exc))
                return
            if not meta:
                if self._pipe is not None:
                    self.error = self._pipe.error
                return
            self.delivered += len(meta) // _META.size
            yield buffer, meta

    def _recover(self, message: str) -> Iterator[tuple[bytes, bytes]]:
        """Re-read the damaged batch packet by packet, up to the damage."""
        reader = self._open()
        for _ in range(self.delivered):
            header, _data = reader.next()
            if header is None:
                break
        while True:
            try:
                header, data = reader.next()
            except pcapy.PcapError as exc:
                message = str(exc)
                break
            if header is None:
                break
            sec, usec = header.getts()
            # pcapy hands seconds as a C long: a file's unsigned 32-bit seconds from 2^31 on
            # (2038) come back negative. Keep the file's value, as next_batch does.
            meta = _META.pack(sec & 0xFFFFFFFF, usec & 0xFFFFFFFF, 0, len(data))
            self.delivered += 1
            yield data, meta
        pipe_error = self._pipe.error if self._pipe is not None else None
        self.error = pipe_error or f"{self.path}: {message}"

    def close(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None


def port_filter(ports: frozenset[int] | set[int] | list[int], *, vlan: bool = True) -> str:
    """BPF for TCP to or from the ports, over IPv4 and IPv6, and VLAN-tagged frames on
    Ethernet (cooked captures of ``any`` carry no tags)."""
    expr = " or ".join(f"tcp port {port}" for port in sorted(ports))
    return f"({expr}) or (vlan and ({expr}))" if vlan else expr


_log = logging.getLogger("mysqlprobe.capture")

# Classic BPF, as <linux/filter.h> defines it.
_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_RET_K = 0x06
_SKF_AD_PKTTYPE = 0xFFFFF000 + 4  # SKF_AD_OFF + SKF_AD_PKTTYPE
_PACKET_OUTGOING = 4
_SO_ATTACH_FILTER = 26
_SOL_PACKET = 263
_PACKET_FANOUT = 18
_PACKET_IGNORE_OUTGOING = 23  # Linux 4.20
_PACKET_FANOUT_FLAG_IGNORE_OUTGOING = 0x4000  # Linux 6.9


class _SockFilter(ctypes.Structure):
    _fields_ = (("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32))


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter)))


def without_outgoing(program: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """``program`` preceded by a test that refuses packets the kernel marks outgoing.

    On ``lo`` the kernel hands a packet socket every packet twice, once as sent (outgoing)
    and once as received, and libpcap drops the outgoing copy in user space: after the
    kernel copied it into the ring. Refused by the socket's filter, it is never copied.
    (libpcap's own ``inbound`` keyword cannot be used: its user-space check of the filter
    reads no packet type and refuses the received copies too; tcpdump -i lo 'inbound'
    captures nothing.)"""
    skip = len(program)  # to the final refusal
    if skip > 255:
        raise ValueError("filter too long to prefix")
    return [
        (_BPF_LD_W_ABS, 0, 0, _SKF_AD_PKTTYPE),
        (_BPF_JEQ_K, skip, 0, _PACKET_OUTGOING),
        *program,
        (_BPF_RET_K, 0, 0, 0),
    ]


def _setsockopt(fd: int, level: int, option: int, value: int | bytes) -> None:
    """setsockopt(2) on a descriptor libpcap owns (it stays open and libpcap's)."""
    sock = socket.socket(fileno=fd)
    try:
        sock.setsockopt(level, option, value)
    finally:
        sock.detach()


def ignore_outgoing(fd: int, fanout_group: int | None) -> None:
    """Ask the kernel not to offer the packet socket ``fd`` any outgoing packet: joining
    ``fanout_group`` (hash fanout) with PACKET_FANOUT_FLAG_IGNORE_OUTGOING, or setting
    PACKET_IGNORE_OUTGOING without a group. Only right on ``lo``, where every outgoing
    packet comes back as received; on a NIC the server's replies exist only as outgoing.

    A refusal by the socket's filter (``without_outgoing``) happens after the kernel cloned
    the packet for the socket, in the sending process's context (the server's, or its
    client's); an ignoring hook is skipped before the clone. Raises OSError on kernels
    without the option (EINVAL): the caller falls back to the filter."""
    if fanout_group is None:
        _setsockopt(fd, _SOL_PACKET, _PACKET_IGNORE_OUTGOING, 1)
        return
    mode = pcapy.PACKET_FANOUT_HASH | _PACKET_FANOUT_FLAG_IGNORE_OUTGOING
    _setsockopt(fd, _SOL_PACKET, _PACKET_FANOUT, (fanout_group & 0xFFFF) | (mode << 16))


def attach_filter(fd: int, program: list[tuple[int, int, int, int]]) -> None:
    """Install a classic BPF program as the socket's kernel filter (SO_ATTACH_FILTER)."""
    instructions = (_SockFilter * len(program))(*(_SockFilter(*insn) for insn in program))
    fprog = _SockFprog(len(program), ctypes.cast(instructions, ctypes.POINTER(_SockFilter)))
    _setsockopt(fd, socket.SOL_SOCKET, _SO_ATTACH_FILTER, bytes(fprog))


class LiveCapture:
    """A live pcap handle on one device, non-blocking, optionally in a fanout group.

    pcapy-ng's bundled libpcap never times out a blocking read on an idle link, so the
    handle is non-blocking and callers ``select`` on ``fileno()``; pcapy-ng does not expose
    ``pcap_set_immediate_mode``, so ``immediate`` sets a 1 ms buffer timeout instead.
    """

    def __init__(
        self,
        device: str,
        ports: frozenset[int] | set[int] | None = None,
        *,
        bpf: str | None = None,
        snaplen: int = 262144,
        buffer_bytes: int = 32 << 20,
        immediate: bool = True,
        timeout_ms: int = 100,
        promisc: bool = False,
        fanout_group: int | None = None,
    ) -> None:
        self.device = device
        #: How long the kernel may hold captured packets before handing them over.
        self.timeout_ms = 1 if immediate else timeout_ms
        try:
            handle = pcapy.create(device)
            handle.set_snaplen(snaplen)
            handle.set_promisc(1 if promisc else 0)
            handle.set_timeout(self.timeout_ms)
            handle.set_buffer_size(buffer_bytes)
            handle.activate()
            if bpf is None and ports:
                bpf = port_filter(ports, vlan=handle.datalink() == 1 and device != "lo")
            if bpf:
                handle.setfilter(bpf)
            handle.setnonblock(1)
        except pcapy.PcapError as exc:
            raise CaptureError(f"cannot capture on {device}: {exc}") from None
        self._handle = handle
        self.linktype: int = handle.datalink()
        #: Whether the kernel refuses lo's outgoing copies (each packet once, not twice).
        self.outgoing_refused = False
        #: Whether the kernel does not even offer them (no clone per sent packet).
        self.outgoing_ignored = False
        try:
            if device == "lo":
                if bpf:
                    self._refuse_outgoing(bpf, snaplen)
                self._ignore_outgoing(fanout_group)
            if fanout_group is not None and not self.outgoing_ignored:
                handle.set_fanout(fanout_group, pcapy.PACKET_FANOUT_HASH)
        except pcapy.PcapError as exc:
            handle.close()
            raise CaptureError(f"cannot capture on {device}: {exc}") from None
        # Between activation and setfilter the socket takes every packet on the device, and
        # the kernel counts those it could not queue (on a busy ``lo``: thousands, none of
        # them ours). Counters start when the filter is in place.
        self._baseline = self._raw_stats()

    def _refuse_outgoing(self, bpf: str, snaplen: int) -> None:
        """Replace libpcap's kernel filter by the same program refusing outgoing copies."""
        try:
            program = pcapy.compile(self.linktype, snaplen, bpf, 1, 0).get_bpf()
            attach_filter(self.fileno(), without_outgoing(program))
        except (pcapy.PcapError, OSError, ValueError) as exc:
            _log.info("lo: outgoing copies are dropped by libpcap, not the kernel (%s)", exc)
            return
        self.outgoing_refused = True

    def _ignore_outgoing(self, fanout_group: int | None) -> None:
        try:
            ignore_outgoing(self.fileno(), fanout_group)
        except OSError as exc:
            _log.info("lo: the kernel offers outgoing copies to the capture (%s)", exc)
            return
        self.outgoing_ignored = True

    def fileno(self) -> int:
        return int(self._handle.getfd())

    def read_batch(self, size: int = DEFAULT_BATCH) -> tuple[bytes, bytes]:
        """Whatever is ready now, up to ``size`` packets; empty when nothing is."""
        try:
            buffer, meta = self._handle.next_batch(size)
        except pcapy.PcapError as exc:
            raise CaptureError(f"capture on {self.device} failed: {exc}") from None
        return buffer, meta

    def _raw_stats(self) -> tuple[int, int, int]:
        received, dropped, if_dropped = self._handle.stats()
        return int(received), int(dropped), int(if_dropped)

    def stats(self) -> tuple[int, int, int]:
        """(received, dropped by the kernel, dropped by the interface) since the port
        filter was attached."""
        received, dropped, if_dropped = self._raw_stats()
        base_received, base_dropped, base_if_dropped = self._baseline
        return received - base_received, dropped - base_dropped, if_dropped - base_if_dropped

    def dispatch_to(self, dumper: Any, count: int = -1) -> int:
        """Write what is ready to a pcap dumper (tests and ``--write``); returns packets."""
        return int(self._handle.dispatch(count, dumper.dump))

    def dump_open(self, path: str) -> Any:
        return self._handle.dump_open(path)

    def close(self) -> None:
        self._handle.close()
