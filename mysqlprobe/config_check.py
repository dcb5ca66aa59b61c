"""``mysqlprobe check-config FILE``: validate a configuration and show what a node would use.

Owns the effective configuration's display: every key with its value after defaults and the
environment (``${VAR}``, ``MYSQLPROBE_TOKEN``, ``MYSQLPROBE_WATCHER_PASSWORD``) were
applied, secrets masked, so it can be pasted into a ticket.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from mysqlprobe.config import Config

#: Keys whose values are never printed.
SECRETS = (("token",), ("watcher", "password"))
MASK = "********"


def effective(config: Config) -> dict[str, Any]:
    """The configuration as a plain mapping, secrets masked (an unset secret stays empty)."""
    data = dataclasses.asdict(config)
    for path in SECRETS:
        holder = data
        for part in path[:-1]:
            holder = holder[part]
        if holder[path[-1]]:
            holder[path[-1]] = MASK
    return data


def effective_yaml(config: Config) -> str:
    return yaml.safe_dump(effective(config), sort_keys=False, default_flow_style=False)
