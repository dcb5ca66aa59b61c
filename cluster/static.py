"""Static cluster membership: the slave list a master keeps, managed over HTTP.

Owns the list of slave addresses of a master in static mode (``cluster.gossip: false``),
their validation (``HOST:PORT``, ``[IPv6]:PORT``, host names) and its persistence: every
change is written atomically (``message.persist``) next to the configuration, so a restart
keeps the list.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from message.persist import StateWrites, read_shaped

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")
KIND = "cluster-members"


class AddressError(ValueError):
    """An address that is not HOST:PORT."""


def split_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port), with the port checked."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise AddressError(f"{text!r}: expected [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise AddressError(f"{text!r}: expected HOST:PORT")
        if ":" in host:
            raise AddressError(f"{text!r}: an IPv6 address goes in brackets, [addr]:port")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise AddressError(f"{text!r}: the port must be 1-65535")
    return host, int(port_text)


def normalize_address(text: str) -> str:
    """``HOST:PORT`` in canonical form: IPv6 in brackets, IPv4 dotted, host names lower-case."""
    host, port = split_address(text)
    if text.strip().startswith("["):
        try:
            return f"[{ipaddress.IPv6Address(host)}]:{port}"
        except ValueError:
            raise AddressError(f"{text.strip()!r}: {host!r} is not an IPv6 address") from None
    try:
        return f"{ipaddress.IPv4Address(host)}:{port}"
    except ValueError:
        if not _HOSTNAME.fullmatch(host):
            raise AddressError(f"{text.strip()!r}: {host!r} is not an address or host name") from None
        return f"{host.lower()}:{port}"


def _parse(payload: dict[str, object]) -> tuple[list[str], bool]:
    slaves = payload["slaves"]
    if not isinstance(slaves, list) or not all(isinstance(s, str) for s in slaves):
        raise TypeError("slaves: expected a list of addresses")
    return list(slaves), bool(payload.get("left", False))


class StaticMembers:
    """The slave list; a change the disk refuses is kept in memory and written again by
    ``flush`` (the node's state is degraded meanwhile, see ``StateWrites``)."""

    def __init__(self, path: Path, writes: StateWrites | None = None) -> None:
        self.path = path
        self.writes = writes or StateWrites(path.parent)
        saved = read_shaped(path, KIND, _parse)
        self.slaves, self.left = saved if saved is not None else ([], False)
        self.unsaved = False

    def _save(self) -> None:
        self.unsaved = not self.writes.write(self.path, KIND, {"slaves": self.slaves, "left": self.left})

    def flush(self) -> None:
        if self.unsaved:
            self._save()

    def join(self, addr: str) -> tuple[str, bool]:
        """Add a slave; returns (canonical address, whether it was new)."""
        canonical = normalize_address(addr)
        self.left = False
        if canonical in self.slaves:
            self._save()
            return canonical, False
        self.slaves.append(canonical)
        self._save()
        return canonical, True

    def remove(self, addr: str) -> tuple[str, bool]:
        canonical = normalize_address(addr)
        if canonical not in self.slaves:
            return canonical, False
        self.slaves.remove(canonical)
        self._save()
        return canonical, True

    def leave(self) -> list[str]:
        """This node leaves its cluster: it forgets its slaves (persisted)."""
        gone = list(self.slaves)
        self.slaves = []
        self.left = True
        self._save()
        return gone
