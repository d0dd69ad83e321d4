"""Cost measurement: wall time per episode and peak resident memory while a method runs.

Peak RSS is sampled from ``/proc/self/statm`` (resident pages x page size) by a daemon thread
every ``interval`` seconds, started when a method's model is loaded and stopped after its last
cell. It is the *process* RSS, so it includes the harness and the corpora (``baseline_mb`` is what
was resident just before the method started; methods run one after the other and each drops its
model before the next loads). Short spikes between samples can be missed; where ``/proc`` does not
exist (macOS), ``resource.getrusage`` gives the lifetime peak instead, which is an upper bound.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from pathlib import Path
from types import TracebackType

_STATM = Path("/proc/self/statm")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss_mb() -> float:
    """Resident set size of this process now, in MB (lifetime peak where /proc is missing)."""
    try:
        resident_pages = int(_STATM.read_text().split()[1])
        return resident_pages * _PAGE / 1e6
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # ru_maxrss is in kB on Linux and bytes on macOS.
        return peak / 1e6 if sys.platform == "darwin" else peak / 1e3


class PeakRSS:
    """Context manager sampling the process RSS in a thread; ``peak_mb`` is the largest sample.

    Args:
        interval: Seconds between samples.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.baseline_mb = 0.0
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        self.peak_mb = max(self.peak_mb, current_rss_mb())

    def _loop(self) -> None:
        # Event.wait doubles as the sleep, so stop() returns within one interval.
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakRSS:
        self.baseline_mb = current_rss_mb()
        self.peak_mb = self.baseline_mb
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="xmeta-peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()  # the final state counts even when the method ran shorter than one interval
