"""Configuration loading: defaults, strictness, environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from mysqlprobe.config import Config, ConfigError, default_yaml, documented_defaults, load_config

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_config_yaml_is_the_documented_defaults() -> None:
    assert (ROOT / "config.yaml").read_text() == default_yaml()
    assert load_config(ROOT / "config.yaml") == load_config(None)
    keys = {key for key, _, _ in documented_defaults()}
    for key in (
        "slave",
        "serverport",
        "interval",
        "slowthresholdms",
        "cluster.gossip",
        "cluster.group",
        "cluster.port",
        "probe.device",
        "probe.port",
        "probe.snappylength",
        "probe.workers",
        "pusher.servers",
        "pusher.path",
        "pusher.preconnect",
        "watcher.uname",
        "watcher.password",
        "websocket.writetimeoutms",
        "websocket.pingtimeouts",
        "websocket.reconnectperiods",
        "websocket.maxmessagesize",
    ):
        assert key in keys, key
    assert all(doc for _, _, doc in documented_defaults())


def test_values_and_nesting(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "interval: 3\nprobe:\n  device: lo, eth0\n  port: 3307\n"))
    assert config.interval == 3 and config.devices == ["lo", "eth0"] and config.probe.port == 3307
    assert config.watcher.port == 3307  # follows probe.port when unset
    assert config.bind == "127.0.0.1"  # never all interfaces unless asked


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("slavee: true", "unknown key 'slavee'"),
        ("probe:\n  workrs: 2", "unknown key 'probe.workrs'"),
        ("serverport: http", "serverport: expected an integer, got 'http' (str)"),
        ("serverport: 70000", "serverport: expected a port number"),
        ("probe:\n  workers: 0", "probe.workers: expected a positive number"),
        ("redact: 1", "redact: expected a boolean"),
        ("probe: 5", "probe: expected a mapping"),
        ("token: ${NOT_SET_ANYWHERE_42}", "token: environment variable NOT_SET_ANYWHERE_42 is not set"),
        ("probe:\n  device: ' , '", "probe.device: expected at least one device"),
        ("[unclosed", "not valid YAML"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        load_config(write(tmp_path, text))
    assert message in str(info.value)


def test_secrets_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYSQLPROBE_TOKEN", "tok")
    monkeypatch.setenv("MYSQLPROBE_WATCHER_PASSWORD", "pw")
    monkeypatch.setenv("MY_USER", "watcher")
    config = load_config(write(tmp_path, "watcher:\n  uname: ${MY_USER}\n"))
    assert (config.token, config.watcher.password, config.watcher.uname) == ("tok", "pw", "watcher")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_empty_file_is_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config(watcher=load_config(None).watcher)


SECRET = "918273645"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"watcher:\n  password: {SECRET}\n", "watcher.password: expected a string, got a hidden value (int)"),
        (f"token: {SECRET}\n", "token: expected a string, got a hidden value (int)"),
        (f"token: [{SECRET}]\n", "token: expected a string, got a hidden value (list)"),
        (f"watcher:\n  uname: u\n  password: 'x{SECRET}\n", "line 4, column 1: found unexpected end of stream"),
        (f'watcher:\n  password: ab"{SECRET}: [x\n', "line 2, column"),
        (f"token: @{SECRET}\n", "line 1, column 8: found character '...' that cannot start any token"),
        (f"watcher:\n  password: {SECRET}\n   port: {SECRET}\n", "not valid YAML: line 3"),
        (f"token: x\n\ttoken2: {SECRET}\n", "not valid YAML"),
    ],
)
def test_errors_never_echo_a_secret(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert message in str(info.value)
    assert SECRET not in str(info.value)


def test_the_cli_never_prints_a_secret(tmp_path: Path) -> None:
    """The real command, as an operator runs it: one line, exit 2, no secret."""
    import subprocess
    import sys

    for text in (f"watcher:\n  password: {SECRET}\n", f"watcher:\n  password: '{SECRET}\n  uname: x\n"):
        path = write(tmp_path, text)
        result = subprocess.run(
            [sys.executable, "-m", "mysqlprobe.cli", "run", "-c", str(path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert result.returncode == 2
        assert result.stderr.startswith("mysqlprobe: config error:") and result.stderr.count("\n") == 1
        assert SECRET not in result.stderr + result.stdout
