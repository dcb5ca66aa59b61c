"""Shape checks of documents that come from another node, before anything acts on them.

Owns ``check_interval_report``: a report received from a peer (a slave's interval report on
a master's subscription) is checked field by field for the shapes the merge reads (a JSON
object, ``node``/``seq``/``interval`` present and typed, ``templates`` and ``slow`` lists of
objects with a ``key``, ``logins`` a list of objects, counters that are integers, heartbeat states that are objects), so
a malformed one is refused whole with a ``SchemaError`` naming the field, and never merged
halfway. The per-entry details (sketches, template fields) are checked again where they
are parsed (``TemplateStats.from_json``, ``SlowQuery.from_json``).
"""

from __future__ import annotations

from typing import Any

from message.report import SchemaError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SchemaError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _list_of_keyed_objects(value: Any, where: str) -> None:
    if not isinstance(value, list):
        raise SchemaError(f"{where}: expected an array, got {type(value).__name__}")
    for index, entry in enumerate(value):
        _object(entry, f"{where}[{index}]")
        if not isinstance(entry.get("key"), str):
            raise SchemaError(f"{where}[{index}].key: expected a string")


def _capture(value: Any) -> None:
    # Scalars that are not integers are ignored by the merge; nested counters are added.
    for name, count in _object(value, "capture").items():
        if isinstance(count, dict):
            for sub, n in count.items():
                if not _is_int(n):
                    raise SchemaError(f"capture.{name}.{sub}: expected an integer")
    if not _is_int(value.get("capture_gap_ns", 0)):
        raise SchemaError("capture.capture_gap_ns: expected an integer")


def check_interval_report(document: Any) -> dict[str, Any]:
    """``document`` as an interval report, or ``SchemaError`` saying what is wrong."""
    report = _object(document, "report")
    if not isinstance(report.get("node"), str) or not report["node"]:
        raise SchemaError("node: expected a non-empty string")
    if not _is_int(report.get("seq")) or report["seq"] < 0:
        raise SchemaError("seq: expected a non-negative integer")
    if not isinstance(report.get("incarnation", ""), str):
        raise SchemaError("incarnation: expected a string")
    interval = _object(report.get("interval"), "interval")
    for name in ("start_ns", "end_ns"):
        if not _is_int(interval.get(name)):
            raise SchemaError(f"interval.{name}: expected an integer")
    _list_of_keyed_objects(report.get("templates", []), "templates")
    _list_of_keyed_objects(report.get("slow", []), "slow")
    logins = report.get("logins", [])
    if not isinstance(logins, list):
        raise SchemaError(f"logins: expected an array, got {type(logins).__name__}")
    for index, entry in enumerate(logins):
        _object(entry, f"logins[{index}]")
    if not _is_int(report.get("slow_dropped", 0)):
        raise SchemaError("slow_dropped: expected an integer")
    _object(report.get("totals", {}), "totals")  # its non-integer values are ignored by the merge
    _capture(report.get("capture", {}))
    for server, state in _object(report.get("heartbeat", {}), "heartbeat").items():
        _object(state, f"heartbeat.{server}")
    return report
