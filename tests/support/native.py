"""Both implementations of the compiled functions, for tests that run against each.

``IMPLEMENTATIONS`` parametrizes a test; ``frame_decoder(impl, ...)`` builds that
implementation's decoder. The compiled one is skipped when it was not built, unless
``MYSQLPROBE_REQUIRE_EXTENSIONS=1`` (scripts/test.sh sets it): then its absence fails.
"""

from __future__ import annotations

import os

import pytest

from probe import native
from probe.decode import DecodeCounters

IMPLEMENTATIONS = ("pure", "compiled")
REQUIRE_VARIABLE = "MYSQLPROBE_REQUIRE_EXTENSIONS"


def extensions_required() -> bool:
    return os.environ.get(REQUIRE_VARIABLE, "") not in ("", "0")


def need_compiled() -> None:
    """Skip (or, when required, fail) a compiled-implementation test without the module."""
    if native.cdecode is None:
        if extensions_required():
            pytest.fail(f"{REQUIRE_VARIABLE}=1 but probe._cdecode is not loaded (engine {native.ENGINE})")
        pytest.skip("probe._cdecode not built (no C compiler at install time)")


def frame_decoder(impl: str, linktype: int, counters: DecodeCounters) -> native.FrameDecoder:
    if impl == "compiled":
        need_compiled()
        assert native.cdecode is not None
        decoder: native.FrameDecoder = native.cdecode.Decoder(linktype, counters)
        return decoder
    return native.PureDecoder(linktype, counters)
