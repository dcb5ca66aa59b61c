"""Static membership: addresses and persistence."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.static import AddressError, StaticMembers, normalize_address
from message.persist import StateError


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("127.0.0.1:8086", "127.0.0.1:8086"),
        ("[::1]:8086", "[::1]:8086"),
        ("[fd00:0::7]:1", "[fd00::7]:1"),
        ("Probe-1.Example.com:8086", "probe-1.example.com:8086"),
    ],
)
def test_addresses(text: str, canonical: str) -> None:
    assert normalize_address(text) == canonical


@pytest.mark.parametrize("text", ["", "nohost", ":80", "::1:80", "[::1]", "[nope]:1", "a b:1", "h:0", "h:65536", "h:x"])
def test_bad_addresses(text: str) -> None:
    with pytest.raises(AddressError):
        normalize_address(text)


def test_membership_persists(tmp_path: Path) -> None:
    path = tmp_path / "members.json"
    members = StaticMembers(path)
    assert members.join("10.0.0.2:8086") == ("10.0.0.2:8086", True)
    assert members.join("10.0.0.2:8086") == ("10.0.0.2:8086", False)
    members.join("[::1]:9000")
    assert StaticMembers(path).slaves == ["10.0.0.2:8086", "[::1]:9000"]
    members.remove("10.0.0.2:8086")
    assert StaticMembers(path).slaves == ["[::1]:9000"]
    assert members.leave() == ["[::1]:9000"]
    reloaded = StaticMembers(path)
    assert reloaded.slaves == [] and reloaded.left


def test_damaged_state_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "members.json"
    StaticMembers(path).join("10.0.0.2:8086")
    path.write_text(path.read_text().replace("10.0.0.2", "10.0.0.3"))
    with pytest.raises(StateError, match="checksum"):
        StaticMembers(path)
