"""tokdiag's own memory during a snapshot: how far it raised the process's RSS.

A snapshot lists the heap, walks object graphs and keeps a set of the
identities it counted; all of that is memory of the process being measured,
and on a heap of millions of objects it used to be hundreds of MiB (issue 9,
E15). The walks now work in bounded batches; this module measures what is
left, so the tracker can record it (``tracker/tokdiag/snapshot_peak_bytes``)
and count it against ``budget_mb``.

:class:`PeakMeter` reads the resident set size when a snapshot starts and at
every :func:`checkpoint`; the walks call one after each batch, while that
batch's temporaries are still alive, and the heap listing calls one once
the list is made. Its :attr:`~PeakMeter.peak` is the largest reading above
the start. It is a lower bound of the true peak (memory allocated and
freed between two checkpoints is missed), close to it because no batch
allocates much between checkpoints; ``bench/footprint.py`` compares it with
the kernel's high-water mark (``VmHWM``, reset before each snapshot there;
tokdiag itself never resets it: the process's own peak belongs to its user).

Memory other threads allocate during the snapshot counts too (a service's
requests while its recorder snapshots), as it does for the OOM killer.

On Linux a reading is one ``pread`` of ``/proc/self/statm`` (a few
microseconds); elsewhere psutil's RSS.
"""

from __future__ import annotations

import os
from types import TracebackType

import psutil

__all__ = ["PeakMeter", "checkpoint", "current_rss"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_statm: tuple[int, int] | None = None  # (pid that opened it, fd): reopened in a fork() child
_active: list[PeakMeter] = []


def _statm_fd() -> int | None:
    global _statm
    pid = os.getpid()
    if _statm is not None and _statm[0] == pid:
        return _statm[1]
    try:
        fd = os.open("/proc/self/statm", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        _statm = (pid, -1)
        return None
    if _statm is not None and _statm[1] >= 0 and _statm[0] != pid:
        try:
            os.close(_statm[1])  # the parent's, inherited across fork(): it reads the parent
        except OSError:
            pass
    _statm = (pid, fd)
    return fd


def current_rss() -> int:
    """This process's resident set size in bytes, now."""
    fd = _statm_fd()
    if fd is not None and fd >= 0:
        try:
            return int(os.pread(fd, 128, 0).split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            pass
    return int(psutil.Process().memory_info().rss)


def checkpoint() -> None:
    """Read the RSS into every active :class:`PeakMeter` (nothing when none is active)."""
    if _active:
        rss = current_rss()
        for m in _active:
            if rss > m.high:
                m.high = rss


class PeakMeter:
    """The highest RSS between ``with PeakMeter() as m:`` and its end, above the RSS at its start.

    >>> with PeakMeter() as m:
    ...     block = bytearray(32 * 2**20)
    ...     block[::4096] = b"x" * len(block[::4096])  # touch every page
    ...     checkpoint()
    ...     del block
    >>> m.peak >= 30 * 2**20
    True
    """

    def __init__(self) -> None:
        self.start = 0
        self.high = 0

    def __enter__(self) -> PeakMeter:
        self.start = self.high = current_rss()
        _active.append(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        checkpoint()
        if self in _active:
            _active.remove(self)

    @property
    def peak(self) -> int:
        """Bytes of RSS above the start at the highest reading (0 when it never rose)."""
        return max(0, self.high - self.start)
