"""Headless Chromium for the dashboard tests: Debian's ``chromium`` driven by npm's
``playwright-core`` (``tests/browser/driver.mjs``), one JSON command per line.

Nothing here skips: a missing browser or driver is a test failure that says what to install
(``scripts/test.sh`` installs both).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "browser" / "driver.mjs"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


class BrowserError(AssertionError):
    pass


class Browser:
    """One headless Chromium with one page and a fresh profile."""

    def __init__(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise BrowserError("node is not installed (scripts/test.sh installs it)")
        if not Path(CHROMIUM).exists():
            raise BrowserError(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)")
        if not (ROOT / "tests" / "browser" / "node_modules" / "playwright-core").is_dir():
            raise BrowserError("playwright-core is missing: run npm ci in tests/browser (scripts/test.sh does)")
        self.profile = tempfile.mkdtemp(prefix="mysqlprobe-chromium-")
        self.proc = subprocess.Popen(
            [node, str(DRIVER), self.profile],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=DRIVER.parent,
        )
        self._answers: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._receive(60)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._answers.put(line)
        self._answers.put("")

    def _receive(self, timeout: float) -> Any:
        try:
            line = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise BrowserError(f"the browser driver did not answer in {timeout} s") from None
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise BrowserError(f"the browser driver exited: {err[-3000:]}")
        answer = json.loads(line)
        if "error" in answer:
            raise BrowserError(answer["error"])
        return answer["ok"]

    def call(self, cmd: str, timeout: float = 90.0, **args: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        return self._receive(timeout)

    def goto(self, url: str, *, offline: bool = False) -> None:
        self.call("goto", url=url, offline=offline)

    def eval(self, expr: str) -> Any:
        return self.call("eval", expr=expr)

    def wait(self, expr: str, timeout: float = 30.0) -> None:
        self.call("wait", expr=expr, timeout=int(timeout * 1000), timeout_s=timeout)

    def problems(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = self.call("problems")
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrowserError):
                self.call("close", timeout=30)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ink_fraction(path: Path) -> float:
    """Share of pixels that differ from the most common colour (the background): 0 for a
    blank page."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        colors = rgb.getcolors(maxcolors=rgb.width * rgb.height) or []
        background = max(n for n, _ in colors)
        return 1 - background / (rgb.width * rgb.height)
