"""A hostile /collector client against a real slave process with a token set: control
messages without the token, malformed epochs and acknowledgements for other nodes change
nothing, are counted and answered with a reason; a real master with the token is accepted
and its acknowledgements empty the slave's spool; a report a master leaves unacknowledged
is offered to it again."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import websockets

from message import decode
from tests.support.mariadb import free_port
from tests.support.nodes import Node

pytestmark = [pytest.mark.live]
if os.geteuid() != 0:  # pragma: no cover
    pytestmark.append(pytest.mark.skip(reason="live capture on lo needs root"))

TOKEN = "c0ntr0l-t0ken"


def slave(tmp_path: Path, name: str, **extra: Any) -> Node:
    config = {"interval": 1, "token": TOKEN, "probe": {"device": "lo", "port": free_port(), "workers": 1}}
    config.update(extra)
    return Node(tmp_path, config, name)


async def exchange(url: str, messages: list[str], headers: dict[str, str] | None = None) -> tuple[list[Any], Any]:
    """Send each message, collect the answers for 2.5 s or until the node closes;
    returns (answers: text messages decoded, binary ones as their kind; close code or None)."""
    answers: list[Any] = []
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        for message in messages:
            await ws.send(message)
        deadline = time.monotonic() + 2.5
        try:
            while True:
                frame = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
                if isinstance(frame, str):
                    answers.append(json.loads(frame))
                else:
                    answers.append(decode(frame).get("kind"))
        except TimeoutError:
            return answers, None
        except websockets.ConnectionClosed as exc:
            return answers, exc.rcvd.code if exc.rcvd is not None else None


def errors(answers: list[Any]) -> list[str]:
    return [a["error"] for a in answers if isinstance(a, dict) and "error" in a]


def test_control_messages_need_the_token(tmp_path: Path) -> None:
    node = slave(tmp_path, "closed").start()
    url = f"ws://127.0.0.1:{node.port}/collector"
    try:
        # Default: with a token set, nobody subscribes without it.
        with pytest.raises(websockets.InvalidStatus) as refused:
            asyncio.run(exchange(url, []))
        assert refused.value.response.status_code == 401
        answers, _ = asyncio.run(exchange(url + f"?token={TOKEN}", ['{"templates": []}']))
        assert "templates" in answers
    finally:
        node.stop()

    node = slave(tmp_path, "open", websocket={"opensubscribers": True}).start()
    url = f"ws://127.0.0.1:{node.port}/collector"
    try:
        # A reader gets reports without the token ...
        answers, code = asyncio.run(exchange(url, []))
        assert "interval" in answers and code is None
        # ... but a hello as master, or an ack, closes the connection and changes nothing.
        for attack in (
            {"hello": {"role": "master", "node": "evil", "epoch": 10**6}},
            {"ack": {"node": "open", "seqs": list(range(1, 50))}},
            {"hello": {"role": "master", "node": "evil", "epoch": 7, "token": "wrong"}},
        ):
            answers, code = asyncio.run(exchange(url, [json.dumps(attack)]))
            assert code == 4401, (attack, answers)
            assert any("token" in e for e in errors(answers))
        status = node.get("/status")
        hub = status["collector"]
        assert hub["max_epoch"] == -1 and hub["masters"] == []
        assert hub["control_refused"] == 3
        assert hub["spool"]["reports"] >= 1  # nothing was acknowledged away
        assert not (node.directory / "open.state" / "epoch.json").exists()
        # The token in the hello itself is enough for a client that cannot set headers.
        answers, code = asyncio.run(
            exchange(url, [json.dumps({"hello": {"role": "master", "node": "m", "epoch": 2, "token": TOKEN}})])
        )
        assert code is None and {"welcome": {"epoch": 2}} in answers
    finally:
        node.stop()


def test_malformed_epochs_and_foreign_acks_are_refused_with_a_reason(tmp_path: Path) -> None:
    node = slave(tmp_path, "s").start()
    url = f"ws://127.0.0.1:{node.port}/collector"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        bad = [
            '{"hello": {"role": "master", "node": "m", "epoch": 1e308}}',
            '{"hello": {"role": "master", "node": "m", "epoch": ' + "9" * 4000 + "}}",
            '{"hello": {"role": "master", "node": "m", "epoch": Infinity}}',
            '{"hello": {"role": "master", "node": "m", "epoch": NaN}}',
            '{"hello": {"role": "master", "node": "m", "epoch": true}}',
            '{"hello": {"role": "master", "node": "m", "epoch": -1}}',
            '{"hello": {"role": "master", "node": "m", "epoch": "3"}}',
            '{"hello": {"role": "master", "node": "m"}}',
            '{"hello": [1, 2]}',
            '{"ack": "all"}',
            "[" * 50_000,  # deeper than the JSON parser recurses, within websocket.maxinbound
        ]
        answers, code = asyncio.run(exchange(url, bad, auth))
        assert code is None  # answered, not dropped
        reasons = errors(answers)
        assert len(reasons) == len(bad)
        assert sum("epoch" in r for r in reasons) == 8
        hub = node.get("/status")["collector"]
        assert hub["max_epoch"] == -1 and hub["control_rejected"] == 10  # the last is not JSON
        # A real master hello, then acknowledgements for another node or incarnation.
        before = node.get("/status")["collector"]["spool"]["reports"]
        assert before >= 1
        hello = json.dumps({"hello": {"role": "master", "node": "m", "epoch": 3}})
        foreign = [
            json.dumps({"ack": {"node": "someone-else", "seqs": list(range(1, 100))}}),
            json.dumps({"ack": {"node": "s", "incarnation": "not-mine", "seqs": list(range(1, 100))}}),
            json.dumps({"ack": {"node": "s", "seqs": [1.5, "2"]}}),
        ]
        answers, code = asyncio.run(exchange(url, [hello, *foreign], auth))
        assert code is None and {"welcome": {"epoch": 3}} in answers
        assert len(errors(answers)) == 2  # the foreign incarnation is not an error: nothing of it is here
        status = node.get("/status")
        assert status["collector"]["max_epoch"] == 3
        assert status["collector"]["spool"]["reports"] >= before  # nothing removed
        # Acknowledging this node's own reports does remove them.
        mine = json.dumps({"ack": {"node": "s", "incarnation": status["incarnation"], "seqs": [1, 2]}})
        asyncio.run(exchange(url, [hello, mine], auth))
        assert node.get("/status")["collector"]["acks"] == 2
    finally:
        node.stop()
    # The epoch that was accepted is the one persisted; nothing else reached the file.
    restarted = Node(tmp_path, node.config, "s").start()
    try:
        assert restarted.get("/status")["collector"]["max_epoch"] == 3
    finally:
        restarted.stop()


def test_a_master_with_the_token_is_accepted_and_acknowledges(tmp_path: Path) -> None:
    node = slave(tmp_path, "s").start()
    master = Node(tmp_path, {"slave": False, "interval": 1, "token": TOKEN}, "m").start()
    try:
        status, _ = master.request(f"/cluster/join?addr=127.0.0.1:{node.port}", headers={"X-Mysqlprobe-Token": TOKEN})
        assert status == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            hub = node.get("/status")["collector"]
            if hub["masters"] == ["m@0"] and hub["acks"] >= 3 and hub["spool"]["reports"] <= 2:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"master not accepted: {node.get('/status')['collector']}")
        assert hub["control_refused"] == 0 and hub["control_rejected"] == 0
        links = master.get("/status")["subscriptions"]
        assert links[0]["state"] == "connected" and links[0]["reports"] >= 3
    finally:
        master.stop()
        node.stop()


def test_a_report_left_unacknowledged_is_offered_again(tmp_path: Path) -> None:
    """An acknowledgement lost on the way must not keep a report in the spool until the
    next hello: REOFFER_AFTER reports later the slave sends it to the master again."""
    node = slave(tmp_path, "s").start()

    async def master() -> tuple[int, list[int], int]:
        url = f"ws://127.0.0.1:{node.port}/collector"
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            await ws.send(json.dumps({"hello": {"node": "m", "role": "master", "epoch": 1}}))
            withheld: int | None = None
            seen: list[int] = []
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                frame = await asyncio.wait_for(ws.recv(), 10)
                if isinstance(frame, str):
                    continue
                report = decode(frame)
                if report.get("kind") != "interval":
                    continue
                seq, incarnation = int(report["seq"]), str(report["incarnation"])
                seen.append(seq)
                if withheld is None:
                    withheld = seq  # never acknowledged: as if the ack were lost
                    continue
                if seq == withheld and seen.count(seq) == 2:
                    await ws.send(json.dumps({"ack": {"node": "s", "incarnation": incarnation, "seqs": [seq]}}))
                    return withheld, seen, seen.index(seq, seen.index(seq) + 1)
                await ws.send(json.dumps({"ack": {"node": "s", "incarnation": incarnation, "seqs": [seq]}}))
            raise AssertionError(f"report {withheld} was not offered again; seen {seen}")

    try:
        withheld, seen, again_at = asyncio.run(master())
        # offered again when the REOFFER_AFTER-th newer report is published (the re-offer
        # may overtake that report on the wire), not before
        assert seen[again_at - 1] >= withheld + 9, seen
        deadline = time.monotonic() + 10
        while (hub := node.get("/status")["collector"])["spool"]["reports"] > 1 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert hub["reoffered"] >= 1 and hub["control_rejected"] == 0
        assert node.get("/status")["collector"]["spool"]["oldest_seq"] != withheld
    finally:
        node.stop()
