"""Report and event types shared by every layer: the only package the others may all import.

Owns the report schema (version ``SCHEMA_VERSION``, JSON Schema in ``schema/``), the
mergeable latency sketch, the merge rules and the wire codec (snappy raw block of JSON).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from message.codec import CodecError, decode, encode
from message.report import (
    OVERFLOW_KEY,
    SCHEMA_VERSION,
    SchemaError,
    SlowQuery,
    SlowSamples,
    TemplateStats,
    add_counters,
    merge_templates,
)
from message.sketch import LatencySketch


def report_schema() -> dict[str, Any]:
    """The JSON Schema of reports."""
    text = resources.files("message").joinpath("schema/report.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


__all__ = [
    "OVERFLOW_KEY",
    "SCHEMA_VERSION",
    "CodecError",
    "LatencySketch",
    "SchemaError",
    "SlowQuery",
    "SlowSamples",
    "TemplateStats",
    "add_counters",
    "decode",
    "encode",
    "merge_templates",
    "report_schema",
]
