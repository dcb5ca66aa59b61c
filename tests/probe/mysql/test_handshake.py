"""Logins (probe/mysql/handshake.py): every outcome is an event of its own, refusals before,
during and after authentication alike, and no server ERR is dropped; fed whole, byte by
byte and at random splits."""

from __future__ import annotations

import pytest

from probe.mysql.events import CommandCompleted, Event, LoginFinished, ServerError
from tests.probe.mysql.test_conversation import run
from tests.support import mysqlwire as w

SPLITS = ["whole", "bytes", "random"]


def outcomes(events: list[Event]) -> list[tuple[str, int]]:
    return [(e.user, e.error_code) for e in events if isinstance(e, LoginFinished)]


def attempt(user: str, reply: bytes) -> w.Script:
    return (
        w.Script()
        .server(w.framed([w.greeting()]))
        .client(w.framed([w.handshake_response(user)], 1))
        .server(w.framed([reply], 2))
    )


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (attempt("app", w.ok()), [("app", 0)]),
        (attempt("app", w.err(1045, "28000", "Access denied for user 'app'")), [("app", 1045)]),
        # Refused instead of a greeting: no user yet.
        (w.Script().server(w.framed([w.err(1040, "08004", "Too many connections")])), [("", 1040)]),
        (w.Script().server(w.framed([w.err(1129, "HY000", "Host '10.0.0.7' is blocked")])), [("", 1129)]),
        # A client whose handshake response the server could not take (wrong sequence id).
        (
            w.Script()
            .server(w.framed([w.greeting()]))
            .client(w.framed([w.handshake_response("app")], 7))
            .server(w.framed([w.err(1156, "08S01", "Got packets out of order")], 8)),
            [("app", 1156)],
        ),
        # A handshake response that is not one: refused before any user is known.
        (
            w.Script()
            .server(w.framed([w.greeting()]))
            .client(w.framed([b"\x01\x02"], 1))
            .server(w.framed([w.err(1043, "08S01", "Bad handshake")], 2)),
            [("", 1043)],
        ),
    ],
    ids=["ok", "1045", "1040", "1129", "1156", "1043"],
)
def test_every_login_outcome_is_reported(split: str, script: w.Script, expected: list[tuple[str, int]]) -> None:
    events, _ = run(script, split=split)
    assert outcomes(events) == expected
    connects = [e for e in events if isinstance(e, CommandCompleted) and e.command == "Connect"]
    assert [e.error_code for e in connects] == [code for _, code in expected]


@pytest.mark.parametrize("split", SPLITS)
def test_unsolicited_server_error_is_never_dropped(split: str) -> None:
    script = (
        w.Script()
        .login(user="app")
        .client(w.query("SELECT 1"))
        .server(w.result_set(["1"], [[b"1"]]))
        # KILL CONNECTION from another session, then an idle timeout: no request pending.
        .server(w.framed([w.err(1927, "70100", "Connection was killed")], 0))
    )
    events, _ = run(script, split=split)
    errors = [e for e in events if isinstance(e, ServerError)]
    assert [(e.user, e.error_code, e.sqlstate) for e in errors] == [("app", 1927, "70100")]
    assert errors[0].client == "10.0.0.7:51000" and errors[0].server == "10.0.0.1:3306"
