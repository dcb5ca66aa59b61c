"""Types of the compiled server walker (probe/_cresponses.c); its oracle is the pure loop of
probe.mysql.responses.Responses._server_plain."""

from typing import Any

STOP: int
DONE: int
SKIP: int

def walk(conv: Any, cmd: Any, data: bytes, pos: int, /) -> tuple[int, int, int, int]: ...
def assumed_constants() -> dict[str, int]: ...
