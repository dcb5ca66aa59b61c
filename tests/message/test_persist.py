"""State files: atomic, checksummed, versioned."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from message.persist import StateError, read_state, write_state


def test_round_trip_and_absent(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    assert read_state(path, "thing") is None
    write_state(path, "thing", {"a": [1, 2], "b": "é"})
    assert read_state(path, "thing") == {"a": [1, 2], "b": "é"}
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temp files left


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d.update(payload={"a": 2}), "checksum"),
        (lambda d: d.update(schema=99), "schema 99"),
        (lambda d: d.update(kind="other"), "not a thing state file"),
    ],
)
def test_damage_is_detected(tmp_path: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "state.json"
    write_state(path, "thing", {"a": 1})
    document = json.loads(path.read_text())
    damage(document)
    path.write_text(json.dumps(document))
    with pytest.raises(StateError, match=message):
        read_state(path, "thing")


def test_int_keys_that_sort_otherwise_as_strings_read_back(tmp_path: Path) -> None:
    """A session checkpoint maps prepared statement ids (ints) to SQL. JSON turns the keys
    into strings, which sort otherwise ("1000" before "115"): checking the checksum over the
    payload serialized again refused a good file as damaged once ids crossed a power of ten
    (found by bench/slave_overhead.py --prepared: a restarted slave would not start)."""
    path = tmp_path / "checkpoint.json"
    payload = {"sessions": {"127.0.0.1:40116": ["root", "sbtest", 31, {99: "BEGIN", 115: "COMMIT", 1000: "SELECT ?"}]}}
    write_state(path, "thing", payload)
    assert read_state(path, "thing") == json.loads(json.dumps(payload))


def test_a_changed_byte_in_the_payload_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_state(path, "thing", {"a": "abc", "b": {1: "x"}})
    path.write_bytes(path.read_bytes().replace(b'"abc"', b'"abd"'))
    with pytest.raises(StateError, match="checksum"):
        read_state(path, "thing")


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_state(path, "thing", {"a": 1})
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(StateError, match="not JSON"):
        read_state(path, "thing")


def test_a_failed_write_leaves_the_old_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    write_state(path, "thing", {"v": 1})

    def broken(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError):
        write_state(path, "thing", {"v": 2})
    monkeypatch.undo()
    assert read_state(path, "thing") == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_payload_changed_while_it_is_written_is_still_one_consistent_state(tmp_path: Path) -> None:
    # A master writes its checkpoint from a thread while its event loop keeps merging into
    # the same dicts: each file must hold one state whose checksum matches (found by the soak).
    path = tmp_path / "busy.json"
    payload: dict[str, Any] = {"totals": {f"k{i}": i for i in range(3000)}, "n": 0}
    stop = threading.Event()

    def mutate() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            payload["n"] = n
            payload["totals"][f"k{n % 3000}"] = n

    mutator = threading.Thread(target=mutate)
    mutator.start()
    try:
        for _ in range(60):
            write_state(path, "busy", payload)
            assert read_state(path, "busy")["totals"]
    finally:
        stop.set()
        mutator.join()


def test_state_writes_degrade_on_descriptor_exhaustion_and_recover(tmp_path: Path) -> None:
    """Real EMFILE: every descriptor of a low limit is taken, then given back."""
    import resource

    from message.persist import StateWrites

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    held = []
    try:
        try:
            while True:
                held.append(open(os.devnull, "rb"))  # noqa: SIM115 (held on purpose)
        except OSError:
            pass
        writes = StateWrites(tmp_path)
        assert not writes.write(tmp_path / "seq.json", "report-seq", {"seq": 1})
        assert writes.degraded and "Too many open files" in writes.status()["failing"]["seq.json"]
    finally:
        for fh in held:
            fh.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert writes.write(tmp_path / "seq.json", "report-seq", {"seq": 2})
    assert not writes.degraded and writes.recoveries == 1 and writes.write_errors == 1
    assert read_state(tmp_path / "seq.json", "report-seq") == {"seq": 2}
