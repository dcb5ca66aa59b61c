"""The optional C extensions (``probe._cdecode``, ``probe._cresponses``, ``probe._cflows``); everything else is in
pyproject.toml.

Built when a C compiler and the Python headers are there; without them the build says why
once and installs the pure-Python engine (``probe/native.py`` picks at import).
``MYSQLPROBE_REQUIRE_EXTENSIONS=1`` turns a failed build into an error (CI sets it).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that skips the extension instead of failing the install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self._skipped(exc)

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skipped(exc)

    def _skipped(self, exc: Exception) -> None:
        if os.environ.get("MYSQLPROBE_REQUIRE_EXTENSIONS", "") not in ("", "0"):
            raise exc
        print(f"mysqlprobe: C extension not built ({exc}); the pure-Python engine is used", file=sys.stderr)


setup(
    ext_modules=[
        Extension("probe._cdecode", ["probe/_cdecode.c"], depends=["probe/_cflows_api.h"]),
        Extension("probe._cresponses", ["probe/_cresponses.c"]),
        Extension(
            "probe._cflows",
            ["probe/_cflows.c", "probe/_cexchange.c", "probe/_cwire.c", "probe/_caccs.c", "probe/_cexecute.c"],
            depends=["probe/_cflows.h", "probe/_cflows_api.h"],
        ),
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
