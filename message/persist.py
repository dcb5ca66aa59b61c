"""Durable state files: atomic, checksummed, versioned JSON.

Owns the on-disk format every layer uses for what must survive a restart (cluster
membership, checkpoints, spooled reports): ``{"schema": N, "kind": K, "sha256": H,
"payload": P}`` where H is the SHA-256 of P's canonical JSON. A write goes to a temporary
file in the same directory, is fsynced, renamed over the old file and the directory is
fsynced: after a crash at any point the file holds either the old or the new state, never
a mix. A read verifies kind, schema version and checksum and says what is wrong otherwise;
``StateError`` messages name the file and what to do. ``StateWrites`` turns write failures
into a counted, visible degraded mode instead of an exception.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

STATE_SCHEMA = 1

T = TypeVar("T")

_log = logging.getLogger("mysqlprobe.state")


class StateError(ValueError):
    """A state file that is unreadable, damaged, of another kind or of an unknown version."""


#: What a damaged state file's error tells the operator to do.
FRESH_STATE_HINT = "move it away, or start afresh with `mysqlprobe run --fresh-state`"


def unexpected_content(path: str | os.PathLike[str], detail: str) -> StateError:
    """The error for a state file whose checksum is right but whose content is not what
    this version writes."""
    return StateError(f"{path}: unexpected content ({detail}); {FRESH_STATE_HINT}")


def _canonical(payload: Any) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _document_prefix(kind: str) -> bytes:
    return b'{"kind":' + _canonical(kind) + b',"payload":'


#: What follows the payload: the schema, then the 64 hex digits of the checksum.
_SUFFIX_HEAD = b',"schema":' + _canonical(STATE_SCHEMA) + b',"sha256":"'
_SUFFIX_LEN = len(_SUFFIX_HEAD) + 64 + len(b'"}')


def _written_body(raw: bytes, kind: str) -> bytes | None:
    """The payload's bytes exactly as ``write_state`` laid them out, or None when the file
    is not in that layout."""
    prefix = _document_prefix(kind)
    if not raw.startswith(prefix) or len(raw) < len(prefix) + _SUFFIX_LEN:
        return None
    if not raw.endswith(b'"}') or raw[-_SUFFIX_LEN : -_SUFFIX_LEN + len(_SUFFIX_HEAD)] != _SUFFIX_HEAD:
        return None
    return raw[len(prefix) : -_SUFFIX_LEN]


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
            _document_prefix(kind),
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
        raise StateError(f"{target}: not JSON (damaged); {FRESH_STATE_HINT}") from None
    if not isinstance(document, dict) or document.get("kind") != kind:
        raise StateError(f"{target}: not a {kind} state file; {FRESH_STATE_HINT}")
    if document.get("schema") != STATE_SCHEMA:
        raise StateError(f"{target}: schema {document.get('schema')!r}, this version reads {STATE_SCHEMA}")
    payload = document.get("payload")
    # The checksum is over the bytes written. Serializing the parsed payload again gives
    # other bytes when the written one had int keys (a session's prepared statements by
    # id): JSON made them strings, which sort otherwise ("1000" before "115"). So the
    # written bytes are checked where the file has write_state's layout.
    body = _written_body(raw, kind)
    if body is None:
        body = _canonical(payload)
    if hashlib.sha256(body).hexdigest() != document.get("sha256"):
        raise StateError(f"{target}: checksum mismatch (damaged); {FRESH_STATE_HINT}")
    return payload


class StateWrites:
    """Writes state files without ever raising on an ``OSError`` (a full disk, a read-only
    directory, no descriptor left): the node goes on in a *degraded* mode, counted and
    visible in ``status()``, until every file that failed has been written again."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.write_errors = 0
        self.recoveries = 0
        self.failing: dict[str, str] = {}  # file name -> the last error writing it

    @property
    def degraded(self) -> bool:
        return bool(self.failing)

    def write(self, path: str | os.PathLike[str], kind: str, payload: Any) -> bool:
        """Write one state file; False (counted) when the file system refused."""
        name = Path(path).name
        try:
            write_state(path, kind, payload)
        except OSError as exc:
            self.failed(name, exc)
            return False
        self.recovered(name)
        return True

    def recovered(self, name: str) -> None:
        """``name`` could be written again (ends the degraded mode once nothing fails)."""
        if name in self.failing:
            del self.failing[name]
            if not self.failing:
                self.recoveries += 1
                _log.warning("state directory %s: writing again, degraded mode over", self.directory)

    def failed(self, name: str, exc: OSError) -> None:
        self.write_errors += 1
        if not self.failing:
            _log.warning(
                "state directory %s: cannot write %s (%s); going on in degraded mode",
                self.directory,
                name,
                exc.strerror or exc,
            )
        self.failing[name] = f"{type(exc).__name__}: {exc.strerror or exc}"

    def status(self) -> dict[str, Any]:
        return {
            "dir": str(self.directory),
            "degraded": self.degraded,
            "write_errors": self.write_errors,
            "recoveries": self.recoveries,
            "failing": dict(self.failing),
        }


def read_shaped(path: str | os.PathLike[str], kind: str, parse: Callable[[Any], T]) -> T | None:
    """``parse(payload)`` of a state file (``None`` if there is none); a payload of the
    wrong shape (``parse`` raising ``KeyError``, ``TypeError``, ``ValueError`` or
    ``AttributeError``) is a ``StateError`` naming the file and what to do."""
    payload = read_state(path, kind)
    if payload is None:
        return None
    try:
        return parse(payload)
    except StateError:
        raise
    except KeyError as exc:
        raise unexpected_content(path, f"no {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise unexpected_content(path, str(exc)[:200]) from None
