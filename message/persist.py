"""Durable state files: atomic, checksummed, versioned JSON.

Owns the on-disk format every layer uses for what must survive a restart (cluster
membership, checkpoints, spooled reports): ``{"schema": N, "kind": K, "sha256": H,
"payload": P}`` where H is the SHA-256 of P's canonical JSON. A write goes to a temporary
file in the same directory, is fsynced, renamed over the old file and the directory is
fsynced: after a crash at any point the file holds either the old or the new state, never
a mix. A read verifies kind, schema version and checksum and says what is wrong otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

STATE_SCHEMA = 1


class StateError(ValueError):
    """A state file that is unreadable, damaged, of another kind or of an unknown version."""


def _canonical(payload: Any) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def write_state(path: str | os.PathLike[str], kind: str, payload: Any) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The payload is serialized once and the checksum taken over those very bytes: a caller
    # that writes from a thread while its loop changes the payload (a master's checkpoint)
    # must get a file that is one consistent state, never a checksum of another one.
    body = _canonical(payload)
    # The canonical document, keys in sorted order: kind, payload, schema, sha256.
    document = b"".join(
        (
            b'{"kind":',
            _canonical(kind),
            b',"payload":',
            body,
            b',"schema":',
            _canonical(STATE_SCHEMA),
            b',"sha256":',
            _canonical(hashlib.sha256(body).hexdigest()),
            b"}",
        )
    )
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(document)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_state(path: str | os.PathLike[str], kind: str) -> Any:
    """The payload of a state file; ``None`` if it does not exist."""
    target = Path(path)
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"{target}: {exc.strerror or exc}") from None
    try:
        document = json.loads(raw)
    except ValueError:
        raise StateError(f"{target}: not JSON (damaged?)") from None
    if not isinstance(document, dict) or document.get("kind") != kind:
        raise StateError(f"{target}: not a {kind} state file")
    if document.get("schema") != STATE_SCHEMA:
        raise StateError(f"{target}: schema {document.get('schema')!r}, this version reads {STATE_SCHEMA}")
    payload = document.get("payload")
    if hashlib.sha256(_canonical(payload)).hexdigest() != document.get("sha256"):
        raise StateError(f"{target}: checksum mismatch (damaged)")
    return payload
