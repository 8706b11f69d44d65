"""Allocation-site probe (off by default): tracemalloc's top sites by size.

Tracing slows every allocation (typically 2-4x on allocation-heavy code),
so it is opt-in (``Tracker(alloc_sites=N)``) and the probe reports the
time its own snapshot took as ``tracker/tokdiag/alloc_overhead_s``.
Frames of tokdiag's own modules (the ``tokdiag`` package) and of tracemalloc
itself are filtered out; the code being measured, the built-in workloads
included (their own package), is not.
"""

from __future__ import annotations

import os
import time
import tracemalloc

from tokdiag.probes.base import SnapshotContext
from tokdiag.records import BLOCKS, BYTES, SECONDS, Record

_TOKDIAG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class AllocationProbe:
    """Top ``top`` allocation sites (``file:line``) by live traced bytes."""

    name = "alloc"

    def __init__(self, top: int = 20, *, frames: int = 1) -> None:
        if top <= 0:
            raise ValueError(f"alloc_sites={top}: must be a positive number of sites (or 0 to switch the probe off)")
        self.top = top
        self.frames = frames
        self._started_here = False

    def start(self) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(self.frames)
            self._started_here = True

    def stop(self) -> None:
        if self._started_here and tracemalloc.is_tracing():
            tracemalloc.stop()
        self._started_here = False

    def collect(self, ctx: SnapshotContext) -> list[Record]:
        if not tracemalloc.is_tracing():
            return []
        t0 = time.perf_counter()
        snap = tracemalloc.take_snapshot().filter_traces((
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, os.path.join(_TOKDIAG_DIR, "*")),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        ))
        stats = snap.statistics("lineno")[: self.top]
        del snap
        recs: list[Record] = []
        for st in stats:
            frame = st.traceback[0]
            site = f"{_short_path(frame.filename)}:{frame.lineno}"
            recs.append(Record("alloc", site, "bytes", float(st.size), BYTES))
            recs.append(Record("alloc", site, "count", float(st.count), BLOCKS))
        recs.append(Record("tracker", "tokdiag", "alloc_overhead_s", time.perf_counter() - t0, SECONDS))
        return recs


def _short_path(path: str) -> str:
    """A path without the machine's own prefix: site-packages/..., or relative to cwd."""
    for marker in ("site-packages" + os.sep, "dist-packages" + os.sep):
        i = path.rfind(marker)
        if i >= 0:
            return path[i + len(marker):]
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return os.path.basename(path)
    return rel if not rel.startswith("..") else os.path.basename(path)
