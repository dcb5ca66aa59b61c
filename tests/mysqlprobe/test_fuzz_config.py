"""Fuzz target of the configuration loader: any file is a Config or one ConfigError (never
another exception), and any single setting replaced by any value is accepted or refused
with a message naming that setting."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from mysqlprobe.config import Config, ConfigError, documented_defaults, load_config
from tests.support.fuzz import fuzz_settings

pytestmark = pytest.mark.fuzz

KEYS = [key for key, _, _ in documented_defaults()]
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)


def _load(text: str) -> Config | ConfigError:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "c.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            return load_config(path)
        except ConfigError as exc:
            return exc


@fuzz_settings(300)
@given(st.text(max_size=300))
@example(text="0000-00-00")  # found: PyYAML's ValueError for a date out of range escaped
def test_any_text_is_a_config_or_a_config_error(text: str) -> None:
    assert isinstance(_load(text), Config | ConfigError)


@pytest.mark.parametrize(
    "text",
    [
        "0000-00-00",
        "watcher: {password: 2024-13-45}",
        "probe: {port: !!int 0x}",
        "probe: {port: !!float x}",
        "&a [*a]",
        "cluster: &a {seeds: *a}",
        "[" * 5000 + "]" * 5000,
    ],
)
def test_yaml_pyyaml_cannot_build_is_a_config_error(text: str) -> None:
    outcome = _load(text)
    assert isinstance(outcome, ConfigError)
    assert "2024-13-45" not in str(outcome)  # a value that looked like a date is not echoed


@fuzz_settings(400)
@given(st.sampled_from(KEYS), values)
def test_any_value_for_any_setting(key: str, value: Any) -> None:
    document: dict[str, Any] = {}
    target = document
    *sections, name = key.split(".")
    for section in sections:
        target = target.setdefault(section, {})
    target[name] = value
    outcome = _load(yaml.safe_dump(document, allow_unicode=True))
    if isinstance(outcome, ConfigError):
        assert key in str(outcome) or "probe.device" in str(outcome) or "heartbeat" in str(outcome), (key, outcome)


@fuzz_settings(200)
@given(st.dictionaries(st.text(max_size=10), values, max_size=5))
def test_any_mapping_is_a_config_or_a_config_error(document: dict[str, Any]) -> None:
    assert isinstance(_load(yaml.safe_dump(document, allow_unicode=True)), Config | ConfigError)
