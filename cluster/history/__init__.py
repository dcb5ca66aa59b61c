"""Query history: per-interval template statistics with mergeable sketches, rolled up to
minutes and hours, in SQLite (embedded) or PostgreSQL (shared). See ``store``."""

from __future__ import annotations

from cluster.history.db import Database, HistoryDBError, open_database
from cluster.history.plan import Marks, plan_range
from cluster.history.store import ORDERS, HistoryStore, Retention

__all__ = [
    "ORDERS",
    "Database",
    "HistoryDBError",
    "HistoryStore",
    "Marks",
    "Retention",
    "open_database",
    "plan_range",
]
