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
"""

from __future__ import annotations

import contextlib
import logging
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

log = logging.getLogger("mysqlprobe.cluster")
MASTER_LOCK = "mysqlprobe-master"


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
        state_dir.mkdir(parents=True, exist_ok=True)
        conf = SyncObjConf(
            journalFile=str(state_dir / "raft.journal"),
            fullDumpFile=str(state_dir / "raft.dump"),
            dynamicMembershipChange=False,
            connectionRetryTime=1.0,
        )
        # A new lock client per process start: a restarted node competes like any other.
        self._lock = ReplLockManager(autoUnlockTime=lock_ttl_s, selfID=f"{node}#{time.time_ns()}")
        self._counter = ReplCounter()
        others = [v for v in self.voters if v != self_addr]
        self._raft = SyncObj(self_addr, others, conf=conf, consumers=[self._lock, self._counter])
        self.is_master = False
        self.epoch = 0
        self.became_master_at: float | None = None
        self.elections_won = 0
        self._guard = threading.Lock()

    def step(self) -> tuple[bool, int]:
        """One round: keep or try to take the master lock. Blocks at most lock_ttl_s / 2.
        Returns (is master, epoch)."""
        with self._guard:
            if not self.candidate:
                return False, self.current_epoch()
            if self._lock.isAcquired(MASTER_LOCK):
                return self.is_master, self.epoch
            if self.is_master:
                log.warning("lost the master lock (epoch %d): stepping down", self.epoch)
                self.is_master = False
            try:
                won = bool(self._lock.tryAcquire(MASTER_LOCK, sync=True, timeout=self.lock_ttl_s / 2))
                if won:
                    epoch = self._counter.inc(sync=True, timeout=self.lock_ttl_s / 2)
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
                with contextlib.suppress(SyncObjException):
                    self._lock.release(MASTER_LOCK, sync=True, timeout=self.lock_ttl_s / 2)

    def current_epoch(self) -> int:
        return int(self._counter.get())

    def status(self) -> dict[str, Any]:
        raft = self._raft.getStatus()
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
        }

    def close(self) -> None:
        self._lock.destroy()
        self._raft.destroy()
