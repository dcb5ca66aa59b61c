"""The conversation stage alone: a capture's ``Conversation`` calls recorded, then replayed.

``record`` runs the engine over a capture and pickles every ``feed``/``gap``/``close`` call
of its conversations (and the template of every SQL text); ``replay`` feeds fresh
conversations those calls, with the templates looked up instead of normalized, so that
``valgrind --tool=callgrind`` counts the conversation's instructions and nothing else
(``load`` reads the pickle only: subtract it)::

    python3 bench/conversation_profile.py record CAPTURE --port P --out /tmp/calls.pkl
    for mode in load pure compiled; do
        valgrind --tool=callgrind --callgrind-out-file=/tmp/conv-$mode.cg \\
            python3.11 bench/conversation_profile.py $mode /tmp/calls.pkl
    done

``pure`` runs without the compiled server walker (``probe/_cresponses.c``), ``compiled``
with it (when built).
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mysqlprobe.replay import run_shard  # noqa: E402
from probe import native  # noqa: E402
from probe.engine import EngineConfig  # noqa: E402
from probe.mysql.conversation import Conversation  # noqa: E402
from probe.normalize import Normalizer, Template  # noqa: E402

Calls = list[tuple[tuple[int, str, str, bool], str, tuple[Any, ...]]]


def record(pcap: str, port: int, out: str) -> None:
    calls: Calls = []
    conns: dict[int, tuple[int, str, str, bool]] = {}
    templates: dict[str, tuple[str, str]] = {}
    normalize = Normalizer.normalize

    def remember(self: Normalizer, sql: str) -> Template:
        template = normalize(self, sql)
        templates[sql] = tuple(template)  # type: ignore[assignment]
        return template

    def recorded(name: str) -> Any:
        method = getattr(Conversation, name)

        def call(self: Conversation, *args: Any) -> Any:
            key = conns.setdefault(id(self), (len(conns), self.client, self.server, self.phase != 0))
            calls.append((key, name, args))
            return method(self, *args)

        return call

    Normalizer.normalize = remember  # type: ignore[method-assign]
    for name in ("feed", "gap", "close"):
        setattr(Conversation, name, recorded(name))
    result = run_shard(pcap, EngineConfig(ports=frozenset({port})))
    with open(out, "wb") as file:
        pickle.dump((calls, templates), file)
    statements = sum(t.count for t in result.templates)
    print(f"statements={statements} calls={len(calls)} connections={len(conns)} -> {out}")


class LookedUp:
    """The templates the recording found, by SQL text: the normalizer stage left out."""

    def __init__(self, templates: dict[str, Template]) -> None:
        self.normalize = templates.__getitem__


def replay(mode: str, path: str) -> None:
    with open(path, "rb") as file:
        calls, raw = pickle.load(file)
    if mode == "load":
        return
    normalizer: Any = LookedUp({sql: Template(*t) for sql, t in raw.items()})
    convs: dict[int, Conversation] = {}
    completed = 0
    for (index, client, server, from_start), name, args in calls:
        conv = convs.get(index)
        if conv is None:
            conv = convs[index] = Conversation(client, server, normalizer, from_start=from_start)
            if mode == "pure":
                conv._walk = None
        completed += sum(1 for event in getattr(conv, name)(*args) if type(event).__name__ == "CommandCompleted")
    walker = "compiled" if mode == "compiled" and native.server_walker is not None else "pure"
    print(f"walker={walker} completed={completed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["record", "load", "pure", "compiled"])
    parser.add_argument("path", help="record: the capture; otherwise the recorded calls")
    parser.add_argument("--port", type=int, default=3306)
    parser.add_argument("--out", default="/tmp/conversation_calls.pkl")
    args = parser.parse_args()
    if args.mode == "record":
        record(args.path, args.port, args.out)
    else:
        replay(args.mode, args.path)


if __name__ == "__main__":
    main()
