"""The message layer's one error: a report (or part of one) that does not follow the schema."""

from __future__ import annotations


class SchemaError(ValueError):
    """A report (or part of one) that does not follow the schema."""
