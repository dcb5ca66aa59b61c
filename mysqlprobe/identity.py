"""A node's report identity: (node, incarnation, seq), unique for ever.

Owns ``seq.json``, the state file that numbers a node's reports, and the incarnation that
goes with it: a random id created with the state. A node that loses its state (a wiped
state directory, a deleted ``seq.json``, ``mysqlprobe run --fresh-state``) starts again at
seq 1 under a new incarnation, so a master never takes its reports for repeats of old ones.

When the state file cannot be written (a full disk, a read-only directory), numbering goes
on in memory; but a restart would then read an older seq back and number reports that were
already sent a second time. So the first failed write switches to a new incarnation that
was never on disk: whatever happens next, no (incarnation, seq) is used twice.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

from message.persist import StateWrites, read_shaped

log = logging.getLogger("mysqlprobe.identity")

KIND = "report-seq"


def new_incarnation() -> str:
    return secrets.token_hex(8)


def _parse_seq(payload: Any) -> tuple[str, str | None, int]:
    node, seq, incarnation = payload["node"], payload["seq"], payload.get("incarnation")
    if not isinstance(node, str) or type(seq) is not int or seq < 0:
        raise TypeError("node must be a string and seq a whole number")
    if incarnation is not None and not isinstance(incarnation, str):
        raise TypeError("incarnation must be a string")
    return node, incarnation, seq


class ReportIdentity:
    def __init__(self, path: Path, node: str, writes: StateWrites) -> None:
        self.path = path
        self.node = node
        self.writes = writes
        self.rotations = 0  # new incarnations because seq.json could not be written
        saved = read_shaped(path, KIND, _parse_seq)
        if saved is not None and saved[0] == node:
            self.seq = saved[2]
            # A file from before incarnations existed keeps its numbering under a new id.
            self.incarnation = saved[1] or new_incarnation()
            self.persisted = saved[1] is not None
            self.fresh = False
        else:
            self.seq = 0
            self.incarnation = new_incarnation()
            self.persisted = False
            self.fresh = True
            log.info("%s: no report sequence for %s, new incarnation %s", path, node, self.incarnation)
            self._save()

    def _save(self) -> bool:
        payload = {"node": self.node, "incarnation": self.incarnation, "seq": self.seq}
        if self.writes.write(self.path, KIND, payload):
            self.persisted = True
            return True
        return False

    def next(self) -> int:
        """The next sequence number, persisted (or, if the disk refuses, see the module)."""
        self.seq += 1
        if not self._save() and self.persisted:
            self.incarnation = new_incarnation()
            self.persisted = False
            self.rotations += 1
            log.warning("cannot save the report sequence: reports go on under new incarnation %s", self.incarnation)
        return self.seq

    def retry(self) -> None:
        """Write the sequence again if its last write failed: a node that stops publishing
        (a master become standby) would otherwise stay degraded after the disk frees."""
        if self.path.name in self.writes.failing:
            self._save()

    def status(self) -> dict[str, Any]:
        return {"incarnation_rotations": self.rotations, "fresh": self.fresh}
