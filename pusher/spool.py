"""A bounded on-disk spool of reports not yet acknowledged by their receiver.

Owns durability of unacknowledged reports: each one is a file ``SEQ.report`` holding the
SHA-256 of the encoded report followed by it, written to a temporary file, fsynced and
renamed, so a kill -9 at any point leaves either the whole report or nothing. On start the
spool reads back what is there (a damaged file is counted and skipped), oldest first. It is
bounded in reports and bytes; past a bound the oldest report is dropped and counted.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_MAX_REPORTS = 10_000
DEFAULT_MAX_BYTES = 256 << 20


class DiskSpool:
    def __init__(
        self, directory: Path, node: str, *, max_reports: int = DEFAULT_MAX_REPORTS, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.directory = directory
        self.node = node
        self.max_reports = max_reports
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sizes: OrderedDict[int, int] = OrderedDict()  # seq -> bytes on disk
        self.bytes = 0
        self.overflowed = 0
        self.damaged = 0
        for path in sorted(self.directory.glob("*.report"), key=lambda p: int(p.stem)):
            size = path.stat().st_size
            self._sizes[int(path.stem)] = size
            self.bytes += size
        for leftover in self.directory.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(self._sizes)

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:012d}.report"

    def append(self, key: tuple[str, int], data: bytes) -> None:
        seq = key[1]
        body = hashlib.sha256(data).digest() + data
        fd, temp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, self._path(seq))
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        self._sizes[seq] = len(body)
        self.bytes += len(body)
        while len(self._sizes) > self.max_reports or (self.bytes > self.max_bytes and len(self._sizes) > 1):
            oldest = next(iter(self._sizes))
            self.remove((self.node, oldest))
            self.overflowed += 1

    def remove(self, key: tuple[str, int]) -> None:
        size = self._sizes.pop(key[1], None)
        if size is not None:
            self.bytes -= size
            self._path(key[1]).unlink(missing_ok=True)

    def items(self) -> Iterator[tuple[tuple[str, int], bytes]]:
        """Spooled reports, oldest first; damaged files are counted, removed and skipped."""
        for seq in list(self._sizes):
            try:
                raw = self._path(seq).read_bytes()
            except FileNotFoundError:
                self._sizes.pop(seq, None)
                continue
            digest, data = raw[:32], raw[32:]
            if hashlib.sha256(data).digest() != digest:
                self.damaged += 1
                self.remove((self.node, seq))
                continue
            yield (self.node, seq), data

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key[1] in self._sizes

    def status(self) -> dict[str, Any]:
        return {
            "reports": len(self._sizes),
            "bytes": self.bytes,
            "overflowed": self.overflowed,
            "damaged": self.damaged,
            "oldest_seq": next(iter(self._sizes), None),
        }
