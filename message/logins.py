"""Login entries of a report: who tried to log in, from where, and how the server answered.

Owns ``LoginStats``, one entry per (server, user, client address) and interval: login
attempts (``count``), the server's refusals by error code (``errors``: 1045 wrong password,
1040 too many connections, 1129 host blocked, 1156 packets out of order, ...) and the ERR
packets the server sent on its own later in the session (``session_errors``: connection
killed, idle timeout, shutdown). The client is its address without the port, so the entries
stay few; further entries beyond a bound fold into one per server (user "", client
``OVERFLOW_CLIENT``). Merging adds counts per code, like templates: workers -> slave ->
master give the numbers one process would.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from message.errors import SchemaError

#: Client of the entry that collects logins beyond the per-interval bound.
OVERFLOW_CLIENT = "*"
#: Login entries per interval by default.
DEFAULT_MAX_LOGINS = 1000


def client_address(endpoint: str) -> str:
    """``ip:port`` or ``[ipv6]:port`` -> the address alone."""
    host = endpoint.rpartition(":")[0]
    return host.strip("[]") if host else endpoint


class LoginStats:
    __slots__ = ("client", "count", "errors", "first_seen_ns", "last_seen_ns", "server", "session_errors", "user")

    def __init__(self, server: str, user: str, client: str) -> None:
        self.server = server
        self.user = user
        self.client = client
        self.count = 0  # login attempts whose outcome was seen
        self.errors: dict[str, int] = {}  # refused attempts by error code
        self.session_errors: dict[str, int] = {}  # unsolicited ERRs after login, by code
        self.first_seen_ns = 0
        self.last_seen_ns = 0

    @property
    def ident(self) -> tuple[str, str, str]:
        return (self.server, self.user, self.client)

    def seen(self, ts_ns: int) -> None:
        if not self.first_seen_ns or ts_ns < self.first_seen_ns:
            self.first_seen_ns = ts_ns
        if ts_ns > self.last_seen_ns:
            self.last_seen_ns = ts_ns

    def merge(self, other: LoginStats) -> None:
        self.count += other.count
        for code, n in other.errors.items():
            self.errors[code] = self.errors.get(code, 0) + n
        for code, n in other.session_errors.items():
            self.session_errors[code] = self.session_errors.get(code, 0) + n
        if other.first_seen_ns:
            self.seen(other.first_seen_ns)
        if other.last_seen_ns:
            self.seen(other.last_seen_ns)

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "user": self.user,
            "client": self.client,
            "count": self.count,
            "errors": dict(sorted(self.errors.items())),
            "session_errors": dict(sorted(self.session_errors.items())),
            "first_seen_ns": self.first_seen_ns,
            "last_seen_ns": self.last_seen_ns,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LoginStats:
        try:
            stats = cls(str(data["server"]), str(data.get("user", "")), str(data["client"]))
            stats.count = int(data.get("count", 0))
            stats.errors = {str(k): int(v) for k, v in dict(data.get("errors", {})).items()}
            stats.session_errors = {str(k): int(v) for k, v in dict(data.get("session_errors", {})).items()}
            stats.first_seen_ns = int(data.get("first_seen_ns", 0))
            stats.last_seen_ns = int(data.get("last_seen_ns", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"bad login entry: {exc!r}") from None
        return stats


def merge_logins(into: dict[tuple[str, str, str], LoginStats], entries: Iterable[LoginStats]) -> None:
    """Add ``entries`` into ``into``, keyed by (server, user, client)."""
    for item in entries:
        have = into.get(item.ident)
        if have is None:
            have = into[item.ident] = LoginStats(item.server, item.user, item.client)
        have.merge(item)


def ordered_logins(entries: Iterable[LoginStats]) -> list[dict[str, Any]]:
    """The wire form, most refused first, then most attempts; one order for any input."""
    ranked = sorted(
        entries,
        key=lambda e: (-sum(e.errors.values()) - sum(e.session_errors.values()), -e.count, e.ident),
    )
    return [entry.to_json() for entry in ranked]


class LoginTable:
    """The login entries of one interval, bounded (``max_entries``; beyond, one overflow
    entry per server takes them and ``overflowed`` counts the events)."""

    def __init__(self, max_entries: int = DEFAULT_MAX_LOGINS) -> None:
        self.max_entries = max_entries
        self.entries: dict[tuple[str, str, str], LoginStats] = {}
        self.overflowed = 0

    def _entry(self, server: str, user: str, client: str) -> LoginStats:
        ident = (server, user, client_address(client))
        entry = self.entries.get(ident)
        if entry is None:
            if len(self.entries) >= self.max_entries:
                self.overflowed += 1
                ident = (server, "", OVERFLOW_CLIENT)
                entry = self.entries.get(ident)
            if entry is None:
                entry = self.entries[ident] = LoginStats(*ident)
        return entry

    def login(self, ts_ns: int, server: str, user: str, client: str, error_code: int) -> None:
        entry = self._entry(server, user, client)
        entry.count += 1
        if error_code:
            code = str(error_code)
            entry.errors[code] = entry.errors.get(code, 0) + 1
        entry.seen(ts_ns)

    def session_error(self, ts_ns: int, server: str, user: str, client: str, error_code: int) -> None:
        entry = self._entry(server, user, client)
        code = str(error_code)
        entry.session_errors[code] = entry.session_errors.get(code, 0) + 1
        entry.seen(ts_ns)
