"""Process probe: RSS, USS, Python heap as tracemalloc sees it, gc counters."""

from __future__ import annotations

import gc
import os
import tracemalloc

import psutil

from tokdiag.probes.base import SnapshotContext
from tokdiag.records import BYTES, OBJECTS, Record


class ProcessProbe:
    """Whole-process numbers. RSS is the truth the other probes try to explain.

    ``uss=True`` adds the unique set size (reads ``/proc/PID/smaps``, a few
    ms on a large process). ``traced`` (tracemalloc's current traced size)
    is recorded only while tracemalloc is tracing.
    """

    name = "process"

    def __init__(self, *, uss: bool = False) -> None:
        self.uss = uss
        self._proc = psutil.Process(os.getpid())

    def rss(self) -> int:
        return int(self._proc.memory_info().rss)

    def collect(self, ctx: SnapshotContext) -> list[Record]:
        recs = [Record("process", "process", "rss", float(self.rss()), BYTES)]
        if self.uss:
            try:
                recs.append(Record("process", "process", "uss", float(self._proc.memory_full_info().uss), BYTES))
            except (psutil.AccessDenied, AttributeError):
                pass
        if tracemalloc.is_tracing():
            recs.append(Record("process", "process", "traced", float(tracemalloc.get_traced_memory()[0]), BYTES))
        recs.append(Record("process", "process", "gc_objects", float(len(ctx.heap)), OBJECTS))
        for gen, n in enumerate(gc.get_count()):
            recs.append(Record("process", "process", f"gc_gen{gen}", float(n), OBJECTS))
        return recs
