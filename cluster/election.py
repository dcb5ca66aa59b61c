"""Master election by quorum: an embedded Raft (pysyncobj) among the configured voters.

Owns who is master. Gossip cannot elect safely: two gossip views can disagree for seconds,
and a master stopped with SIGSTOP comes back believing it still leads. So the voters (the
master-capable nodes plus slaves as witnesses: master + standby + one slave already survive
the loss of any one) run Raft, and master-capable nodes compete for a replicated lock that
expires when its holder stops renewing it (``lock_ttl_s``). Winning the lock increments a
replicated counter: that number is the master's epoch, the fencing token it sends to
slaves, which refuse any master with an older one. The Raft log is journaled in the state
directory, so epochs keep increasing across restarts.

The set of voters is static configuration (like etcd's initial cluster): membership that
changes itself is where split brains come from; gossip only finds and watches the slaves.

A journal the disk refuses (full, read-only) stops this node's Raft member as a crash
would (see ``cluster.raft_journal``): it is not master meanwhile (the others elect one if
a majority of them can write) and starts again from its journal once the state directory
has room. Counted and shown in ``status()["journal"]``; logged once per episode.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

# pysyncobj (0.3.17) replaces socket.inet_ntop on every OS with a Windows-only version when
# it is imported (pysyncobj/win_inet_pton.py); anything else in the process that formats
# an address with it (scapy, asyncio, ...) would then fail. Keep the real one.
_inet_ntop = socket.inet_ntop
from pysyncobj import SyncObj, SyncObjConf, SyncObjException  # noqa: E402
from pysyncobj.batteries import ReplCounter, ReplLockManager  # noqa: E402

socket.inet_ntop = _inet_ntop

from cluster import raft_journal  # noqa: E402 - after the pysyncobj import above

log = logging.getLogger("mysqlprobe.cluster")
MASTER_LOCK = "mysqlprobe-master"
#: How often a stopped Raft member checks whether its state directory has room again.
RESTART_EVERY_S = 2.0
#: Free space the state directory needs before a stopped Raft member starts again.
RESTART_FREE_BYTES = 256 * 1024


class Election:
    def __init__(
        self,
        self_addr: str,
        voters: list[str],
        *,
        node: str,
        candidate: bool,
        lock_ttl_s: float,
        state_dir: Path,
    ) -> None:
        self.self_addr = self_addr
        self.voters = voters or [self_addr]
        self.candidate = candidate
        self.lock_ttl_s = lock_ttl_s
        self.node = node
        self.state_dir = state_dir
        self.journal_file = state_dir / "raft.journal"
        self.is_master = False
        self.epoch = 0
        self.became_master_at: float | None = None
        self.elections_won = 0
        self._guard = threading.Lock()
        # Journal health: failures come from the Raft thread, the rest reads them.
        self.journal_error: str | None = None  # the last failure, while the episode lasts
        self.journal_exception: OSError | None = None
        self.journal_write_errors = 0
        self.journal_recoveries = 0
        self._failure_lock = threading.Lock()
        self._restart_at = 0.0
        self._raft: SyncObj | None = None
        self._lock: ReplLockManager | None = None
        self._counter: ReplCounter | None = None
        self._last_epoch = 0  # the counter's value when the member last stopped
        raft_journal.watch(str(self.journal_file), self._journal_failed)
        self._start_raft()

    def _start_raft(self) -> bool:
        """Start this node's Raft member from its journal; False (counted) if the disk
        refuses. A new lock client per start: a restarted member competes like any other."""
        conf = SyncObjConf(
            journalFile=str(self.journal_file),
            fullDumpFile=str(self.state_dir / "raft.dump"),
            dynamicMembershipChange=False,
            connectionRetryTime=1.0,
        )
        lock = ReplLockManager(autoUnlockTime=self.lock_ttl_s, selfID=f"{self.node}#{time.time_ns()}")
        counter = ReplCounter()
        others = [v for v in self.voters if v != self.self_addr]
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            raft = SyncObj(self.self_addr, others, conf=conf, consumers=[lock, counter])
        except OSError as exc:
            lock.destroy()
            if not isinstance(exc, raft_journal.JournalWriteError):  # not reported yet
                self._journal_failed(exc)
            return False
        self._raft, self._lock, self._counter = raft, lock, counter
        return True

    def _journal_failed(self, exc: OSError) -> None:
        """The journal could not be written (called from the Raft thread): stop the member
        now; ``step`` steps down and starts it again when there is room."""
        with self._failure_lock:
            first = self.journal_error is None
            self.journal_write_errors += 1
            self.journal_error = f"{type(exc).__name__}: {exc.strerror or exc}"
            self.journal_exception = exc
        if first:
            log.warning(
                "cannot write the raft journal in %s (%s): this node's Raft member stops until it can,"
                " and the node is not master meanwhile",
                self.state_dir,
                exc.strerror or exc,
            )
        raft = self._raft
        if raft is not None:
            raft.destroy()  # from its own thread: it stops after the failed tick

    @property
    def running(self) -> bool:
        return self._raft is not None and not self._journal_failing()

    def _journal_failing(self) -> bool:
        return self.journal_error is not None

    def _stop_member(self) -> None:
        if self._counter is not None:
            self._last_epoch = max(self._last_epoch, int(self._counter.get()))
        if self._lock is not None:
            self._lock.destroy()
        if self._raft is not None:
            self._raft.destroy()

    def _recover(self) -> None:
        """While the journal is failing: not master; once the old member has stopped and the
        state directory has room, start a new one from the journal."""
        if self.is_master:
            log.warning("stepping down: the raft journal cannot be written (epoch %d)", self.epoch)
            self.is_master = False
        now = time.monotonic()
        if now < self._restart_at:
            return
        self._restart_at = now + RESTART_EVERY_S
        if self._raft is not None:
            if self._raft.tick_thread_alive():
                self._stop_member()
                return
            self._stop_member()
            self._raft = self._lock = self._counter = None
        try:  # the raft directory itself may not exist yet (it could not be created)
            stat = os.statvfs(self.state_dir if self.state_dir.exists() else self.state_dir.parent)
        except OSError:
            return
        if stat.f_bavail * stat.f_frsize < RESTART_FREE_BYTES:
            return
        with self._failure_lock:
            errors = self.journal_write_errors
        if self._start_raft():
            with self._failure_lock:
                if self.journal_write_errors == errors:
                    self.journal_error = self.journal_exception = None
                    self.journal_recoveries += 1
                    log.warning("raft journal writable again in %s: this node's Raft member is back", self.state_dir)

    def step(self) -> tuple[bool, int]:
        """One round: keep or try to take the master lock. Blocks at most lock_ttl_s / 2.
        Returns (is master, epoch)."""
        with self._guard:
            if not self.running or self._lock is None or self._counter is None:
                self._recover()
                return self.is_master, self.epoch
            if not self.candidate:
                return False, self.current_epoch()
            held = self._lock.isAcquired(MASTER_LOCK)
            if held and self.is_master:
                return True, self.epoch
            if self.is_master:
                log.warning("lost the master lock (epoch %d): stepping down", self.epoch)
                self.is_master = False
            if held:
                log.warning("holding the master lock without being master (an earlier attempt timed out): taking over")
            try:
                # Held but not master: an acquisition (or the epoch increment after it) timed
                # out here yet was committed; the lock manager keeps prolonging the lock, so
                # finish taking over, or no node would ever be master.
                won = held or bool(self._lock.tryAcquire(MASTER_LOCK, sync=True, timeout=self.lock_ttl_s / 2))
                if won:
                    epoch = self._counter.inc(sync=True, timeout=self.lock_ttl_s / 2)
                    if self._journal_failing():  # it failed meanwhile: the next round recovers
                        return False, self.epoch
                    self.epoch = int(epoch)
                    self.is_master = True
                    self.became_master_at = time.time()
                    self.elections_won += 1
                    log.warning("elected master, epoch %d", self.epoch)
            except SyncObjException:
                self.is_master = False
            return self.is_master, self.epoch

    def step_down(self) -> None:
        """Give up mastership now (a slave refused our epoch: someone newer leads)."""
        with self._guard:
            if self.is_master:
                self.is_master = False
                if not self.running or self._lock is None:
                    return
                with contextlib.suppress(SyncObjException):
                    self._lock.release(MASTER_LOCK, sync=True, timeout=self.lock_ttl_s / 2)

    def current_epoch(self) -> int:
        counter = self._counter
        return max(self._last_epoch, int(counter.get())) if counter is not None else self._last_epoch

    def status(self) -> dict[str, Any]:
        member = self._raft
        raft: dict[str, Any] = member.getStatus() if member is not None and self.running else {}
        return {
            "voter": self.self_addr,
            "voters": self.voters,
            "candidate": self.candidate,
            "is_master": self.is_master,
            "epoch": self.epoch if self.is_master else self.current_epoch(),
            "raft_leader": str(raft.get("leader")) if raft.get("leader") is not None else None,
            "raft_term": raft.get("raft_term"),
            "has_quorum": bool(raft.get("has_quorum")),
            "elections_won": self.elections_won,
            "journal": {
                "running": self.running,
                "degraded": self.journal_error is not None,
                "error": self.journal_error,
                "write_errors": self.journal_write_errors,
                "recoveries": self.journal_recoveries,
            },
        }

    def close(self) -> None:
        raft_journal.unwatch(str(self.journal_file))
        self._stop_member()
