"""A bounded on-disk spool of reports not yet acknowledged by their receiver.

Owns durability of unacknowledged reports. A report's key is ``(tag, seq)``: the slave's
spool uses its incarnation as the tag, the pusher's the node name. Each report is a file
``SEQ.HEXTAG.report`` holding the SHA-256 of the encoded report followed by it, written to
a temporary file, fsynced and renamed, so a kill -9 at any point leaves either the whole
report or nothing. On start the spool reads back what is there, oldest first (a damaged
report is counted and skipped when read; a file the spool did not write is left alone and
named once in the log). It is bounded in reports and bytes; past a bound the oldest report
is dropped and counted.

A failed write (a full disk, a read-only directory, no descriptor left) never raises: the
report is kept in memory instead, under the same bounds, the failure is counted and
visible in ``status()``, and the next successful write moves the reports kept in memory to
disk (the spool is *degraded* until then).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("mysqlprobe.spool")

DEFAULT_MAX_REPORTS = 10_000
DEFAULT_MAX_BYTES = 256 << 20

_NAME = re.compile(r"(\d{1,20})(?:\.([0-9a-f]*))?\.report")


class DiskSpool:
    def __init__(
        self,
        directory: Path,
        legacy_tag: str,
        *,
        max_reports: int = DEFAULT_MAX_REPORTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        """``legacy_tag``: the key's tag of files written before tags were in file names."""
        self.directory = directory
        self.legacy_tag = legacy_tag
        self.max_reports = max_reports
        self.max_bytes = max_bytes
        # key -> (bytes, the report when it is held in memory, None when it is on disk)
        self._entries: OrderedDict[tuple[str, int], tuple[int, bytes | None]] = OrderedDict()
        self.bytes = 0
        self.overflowed = 0
        self.damaged = 0
        self.write_errors = 0
        self.last_error: str | None = None
        self.stray: list[str] = []
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._load()
        except OSError as exc:
            self._failed(exc)

    def _load(self) -> None:
        found: list[tuple[int, int, tuple[str, int]]] = []
        for path in self.directory.iterdir():
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)  # a write that a crash interrupted
                continue
            match = _NAME.fullmatch(path.name)
            tag = self._tag(match.group(2)) if match else None
            if match is None or tag is None or not path.is_file():
                self.stray.append(path.name)
                log.warning(
                    "spool %s: ignoring %s, which is not a report this node wrote; move it out of the directory",
                    self.directory,
                    path.name,
                )
                continue
            stat = path.stat()
            found.append((int(match.group(1)), stat.st_mtime_ns, (tag, int(match.group(1)))))
            self._entries[(tag, int(match.group(1)))] = (stat.st_size, None)
            self.bytes += stat.st_size
        order = [key for _, _, key in sorted(found)]  # by seq (incarnations interleave: harmless)
        self._entries = OrderedDict((key, self._entries[key]) for key in order)

    def _tag(self, encoded: str | None) -> str | None:
        if encoded is None:
            return self.legacy_tag
        try:
            return bytes.fromhex(encoded).decode("utf-8")
        except ValueError:
            return None

    def __len__(self) -> int:
        return len(self._entries)

    def _path(self, key: tuple[str, int]) -> Path:
        return self.directory / f"{key[1]:012d}.{key[0].encode('utf-8').hex()}.report"

    def _failed(self, exc: OSError) -> None:
        self.write_errors += 1
        reason = f"{type(exc).__name__}: {exc.strerror or exc}"
        if self.last_error is None:
            log.warning("spool %s: cannot write (%s); keeping reports in memory until it can", self.directory, reason)
        self.last_error = reason

    def _write(self, key: tuple[str, int], body: bytes) -> bool:
        try:
            fd, temp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=self.directory)
        except OSError as exc:
            self._failed(exc)
            return False
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, self._path(key))
        except OSError as exc:
            Path(temp).unlink(missing_ok=True)
            self._failed(exc)
            return False
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        if self.last_error is not None:
            log.warning("spool %s: writing again", self.directory)
            self.last_error = None
        return True

    def append(self, key: tuple[str, int], data: bytes) -> None:
        body = hashlib.sha256(data).digest() + data
        if self.last_error is not None:
            self._flush_memory()
        on_disk = self.last_error is None and self._write(key, body)
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[0]
        self._entries[key] = (len(body), None if on_disk else body)
        self.bytes += len(body)
        while len(self._entries) > self.max_reports or (self.bytes > self.max_bytes and len(self._entries) > 1):
            self.remove(next(iter(self._entries)))
            self.overflowed += 1

    def _flush_memory(self) -> None:
        """Move reports held in memory to disk, oldest first, while writes succeed."""
        self.last_error = None  # try again
        try:
            self.directory.mkdir(parents=True, exist_ok=True)  # it may never have been made
        except OSError as exc:
            self._failed(exc)
            return
        for key, (size, body) in list(self._entries.items()):
            if body is None:
                continue
            if not self._write(key, body):
                return
            self._entries[key] = (size, None)

    def remove(self, key: tuple[str, int]) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[0]
            if entry[1] is None:
                try:
                    self._path(key).unlink(missing_ok=True)
                except OSError as exc:  # read-only: it is read back and acknowledged again
                    self._failed(exc)

    def items(self) -> Iterator[tuple[tuple[str, int], bytes]]:
        """Spooled reports, oldest first; damaged files are counted, removed and skipped."""
        for key in list(self._entries):
            entry = self._entries.get(key)
            if entry is None:
                continue
            raw = entry[1]
            if raw is None:
                try:
                    raw = self._path(key).read_bytes()
                except FileNotFoundError:
                    self._entries.pop(key, None)
                    self.bytes -= entry[0]
                    continue
                except OSError as exc:
                    self._failed(exc)
                    continue
            digest, data = raw[:32], raw[32:]
            if hashlib.sha256(data).digest() != digest:
                self.damaged += 1
                self.remove(key)
                continue
            yield key, data

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @property
    def oldest_seq(self) -> int | None:
        """The sequence number of the oldest report held, or None when empty."""
        return next(iter(self._entries), ("", None))[1]

    def status(self) -> dict[str, Any]:
        return {
            "reports": len(self._entries),
            "bytes": self.bytes,
            "in_memory": sum(1 for _, body in self._entries.values() if body is not None),
            "overflowed": self.overflowed,
            "damaged": self.damaged,
            "write_errors": self.write_errors,
            "degraded": self.last_error is not None,
            "last_error": self.last_error,
            "stray_files": list(self.stray[:10]),
            "oldest_seq": self.oldest_seq,
        }
