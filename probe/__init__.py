"""The probe: packets in, per-template statistics out (capture, decode, TCP, MySQL, aggregation).

Only ``probe.capture`` touches libpcap; everything else is sans-I/O and takes time from
packet timestamps.
"""

from probe.aggregate import Aggregator, Interval
from probe.engine import Engine, EngineConfig
from probe.flows import FlowLimits
from probe.normalize import Normalizer, Template

__all__ = ["Aggregator", "Engine", "EngineConfig", "FlowLimits", "Interval", "Normalizer", "Template"]
