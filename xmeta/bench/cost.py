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
        return lifetime_peak_kib() / 1e3


def lifetime_peak_kib() -> float:
    """The peak RSS of this process over its whole life (``ru_maxrss``), in KiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform == "darwin" else float(peak)  # macOS reports bytes, Linux KiB


def reset_kernel_peak() -> bool:
    """Reset the kernel's resident high-water mark (VmHWM) of this process; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def proc_status_kib(field: str) -> int | None:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ...) in KiB; None where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _kernel_peak_mb() -> float:
    """VmHWM: the exact peak RSS since the last reset (0 where /proc is missing)."""
    kib = proc_status_kib("VmHWM")
    return 0.0 if kib is None else kib * 1e3 / 1e6  # kB -> MB


class PeakRSS:
    """Context manager measuring the process' peak RSS during the block.

    On Linux the kernel's high-water mark is reset on entry and read on exit, so the peak is
    exact even for allocations shorter than the sampling interval; a sampling thread is the
    fallback (and the only source elsewhere).

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
        self._kernel = reset_kernel_peak()
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
        if self._kernel:
            self.peak_mb = max(self.peak_mb, _kernel_peak_mb())
