"""The Raft journal on a real full file system (a 256 KiB tmpfs): an error, never a SIGBUS;
the log in memory stays the log on disk; it reopens with every entry written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cluster.raft_journal import JournalWriteError, SafeJournal
from tests.mysqlprobe.test_full_disk_real import tmpfs

pytestmark = [pytest.mark.live]
if os.geteuid() != 0:  # pragma: no cover
    pytestmark.append(pytest.mark.skip(reason="mounting a tmpfs needs root"))


def fill(directory: Path) -> Path:
    """Write unbuffered until the file system is full (to the last block)."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError:
                pass
    return filler


def test_a_full_disk_is_an_error_the_owner_hears_of_and_the_log_matches_the_disk(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "raft", size="256k") as directory:
        failures: list[OSError] = []
        path = str(directory / "raft.journal")
        journal = SafeJournal(path, failures.append)
        journal.add(b"first", 1, 1)
        filler = fill(directory)
        written = 1
        with pytest.raises(JournalWriteError) as caught:  # pysyncobj's FileJournal: SIGBUS here
            for idx in range(2, 100_000):
                journal.add(b"x" * 200, idx, 1)
                written += 1
        assert caught.value.errno == 28 and len(failures) == 1 and failures[0].errno == 28
        assert len(journal) == written  # the failed entry is not in memory either
        with pytest.raises(JournalWriteError):
            journal.setCurrentTerm(2, "someone")  # a vote that cannot be stored is not cast
        assert len(failures) == 2
        journal._destroy()
        filler.unlink()
        reopened = SafeJournal(path, failures.append)
        assert len(reopened) == written and reopened[0][0] == b"first"
        reopened.add(b"after", written + 1, 2)
        assert len(reopened) == written + 1
        reopened._destroy()


def test_a_journal_created_on_a_full_disk_starts_again_when_there_is_room(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "raft", size="64k") as directory:
        filler = fill(directory)
        path = str(directory / "raft.journal")
        with pytest.raises(OSError):
            SafeJournal(path, lambda exc: None)
        filler.unlink()
        journal = SafeJournal(path, lambda exc: None)  # the empty file it left is started afresh
        journal.add(b"one", 1, 1)
        assert len(journal) == 1
        journal._destroy()
