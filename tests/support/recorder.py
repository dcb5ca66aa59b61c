"""Record loopback traffic of one port to a pcap file while a test drives a workload."""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from types import TracebackType

from probe.capture import LiveCapture


class LoopbackRecorder:
    """``with LoopbackRecorder(port, path): ...`` writes every packet of ``port`` on lo."""

    def __init__(self, port: int, path: str, device: str = "lo") -> None:
        self.port = port
        self.path = path
        self.device = device
        self.packets = 0
        self.dropped = 0
        self._stop = threading.Event()
        # lo's frames reach 65,549 bytes (64 KiB MTU + Ethernet header): 65535 would cut them.
        # (A 256 MiB ring dropped more than this 64 MiB one on a busy machine.)
        self._capture = LiveCapture(device, {port}, buffer_bytes=64 << 20, snaplen=65600)
        self._dumper = self._capture.dump_open(path)
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)

    def __enter__(self) -> LoopbackRecorder:
        self._thread.start()
        return self

    def _run(self) -> None:
        # On a busy machine a stalled reader lets the kernel's ring fill and drop packets:
        # the recorder thread goes before the workload it watches (root may raise priority).
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), -10)
        fd = self._capture.fileno()
        while True:
            stopping = self._stop.is_set()
            n = self._capture.dispatch_to(self._dumper)
            self.packets += max(n, 0)
            if stopping and n <= 0:
                return
            if n <= 0:
                select.select([fd], [], [], 0.05)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        time.sleep(0.2)  # let the last segments reach the ring
        self._stop.set()
        self._thread.join(timeout=30)
        self.dropped = self._capture.stats()[1]  # since the port filter was attached
        del self._dumper  # flushes and closes the file
        self._capture.close()
