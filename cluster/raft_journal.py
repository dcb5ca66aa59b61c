"""The Raft journal on disk, made to fail with an error instead of a dead process.

Owns how the election's Raft member (pysyncobj) writes its log, term and vote to the state
directory. pysyncobj 0.3.17's ``FileJournal`` keeps the log in a memory-mapped file that it
grows with ``ftruncate``: on a full file system the first store into a page that was never
allocated is a ``SIGBUS``, and the node dies without a word (measured: a master on a full
2 MiB tmpfs died with -7 three seconds after the disk filled). Its other writes (the term
and vote in ``.meta``) raise ``OSError`` from inside the Raft tick, after the in-memory
state has changed, and pysyncobj logs a traceback per tick and goes on.

Here the file's space is reserved (``posix_fallocate``) before the mapping may use it, so a
full disk is an ``OSError``; an append that fails is taken back out of the in-memory log;
and every failure is reported to the journal's owner (``cluster.election``) and raised as
``JournalWriteError``, which ends the tick before anything reflecting the lost write is
sent to a peer. The owner then stops its Raft member, as a crash would, and starts it again
from what the disk holds when space returns: a member that cannot persist a vote or an
entry must not vote, acknowledge or lead (Raft's safety, and the master epoch's fencing,
assume a majority's journals hold every committed entry). pysyncobj's per-tick traceback
for these errors is filtered out: the owner logs the episode once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

# pysyncobj replaces socket.inet_ntop when it is imported (see cluster.election): keep the real one.
_inet_ntop = socket.inet_ntop
import pysyncobj.syncobj  # noqa: E402
from pysyncobj.journal import FileJournal, Journal, ResizableFile  # noqa: E402

socket.inet_ntop = _inet_ntop

JournalFailure = Callable[[OSError], None]

_owners: dict[str, JournalFailure] = {}
_owners_lock = threading.Lock()
_pysyncobj_create = pysyncobj.syncobj.createJournal


class JournalWriteError(OSError):
    """A journal write the file system refused (the ``OSError`` is the cause)."""


class _ReservedFile(ResizableFile):  # type: ignore[misc]
    """A ``ResizableFile`` whose every mapped byte is allocated on disk first."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._reserve(0, self._ResizableFile__mm.size())

    def _reserve(self, offset: int, length: int) -> None:
        if length > 0:
            os.posix_fallocate(self._ResizableFile__f.fileno(), offset, length)

    def write(self, offset: int, values: bytes) -> None:
        mapping = self._ResizableFile__mm
        mapped = len(mapping)
        end = offset + len(values)
        if end > mapped:  # grow as ResizableFile.write would, the disk space reserved first
            size = max(int(mapped * self._ResizableFile__resizeFactor), end)
            self._reserve(mapped, size - mapped)
            mapping.resize(size)  # the file has that size already: this maps it
        super().write(offset, values)


class SafeJournal(FileJournal):  # type: ignore[misc]
    """pysyncobj's file journal that never maps unallocated pages and reports failures."""

    def __init__(self, path: str, on_failure: JournalFailure) -> None:
        self._on_failure = on_failure
        # A journal whose header could not be written (created on a full disk) is empty,
        # holds nothing, and cannot be mapped: start it again.
        if os.path.exists(path) and os.path.getsize(path) == 0:
            os.unlink(path)
        super().__init__(path)
        plain: Any = getattr(self, "_FileJournal__journalFile")  # noqa: B009 - a private name
        plain._destroy()
        self._FileJournal__journalFile = _ReservedFile(path)

    def _failed(self, exc: OSError) -> JournalWriteError:
        self._on_failure(exc)
        error = JournalWriteError(exc.errno, exc.strerror or str(exc))
        error.__cause__ = exc
        return error

    def add(self, command: Any, idx: int, term: int) -> None:
        entries: list[Any] = self._FileJournal__journal
        before = len(entries)
        try:
            super().add(command, idx, term)
        except OSError as exc:
            del entries[before:]  # the log in memory is the log on disk
            raise self._failed(exc) from exc

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        try:
            super().setCurrentTerm(term, votedForNodeId)
        except OSError as exc:
            raise self._failed(exc) from exc

    def onOneSecondTimer(self) -> None:
        try:
            super().onOneSecondTimer()
        except OSError as exc:
            raise self._failed(exc) from exc


def _create_journal(path: str | None = None) -> Journal:
    with _owners_lock:
        owner = _owners.get(path) if path is not None else None
    if path is None or owner is None:
        return _pysyncobj_create(path)
    return SafeJournal(path, owner)


def watch(path: str, on_failure: JournalFailure) -> None:
    """Journals created at ``path`` from now on are ``SafeJournal``s reporting to
    ``on_failure`` (called from the Raft thread)."""
    with _owners_lock:
        _owners[path] = on_failure


def unwatch(path: str) -> None:
    with _owners_lock:
        _owners.pop(path, None)


class _DropJournalTracebacks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], JournalWriteError))


pysyncobj.syncobj.createJournal = _create_journal
logging.getLogger("pysyncobj.syncobj").addFilter(_DropJournalTracebacks())
