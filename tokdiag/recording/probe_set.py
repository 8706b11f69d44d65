"""What a snapshot measures: the tracker's probes, built from its options, in the order they must run.

The probes of one snapshot share one :class:`~tokdiag.probes.SnapshotContext`
(the heap listed once, one "seen" set), so their order decides who owns a
byte that several of them reach:

1. the process (RSS) and the allocator's view of it, read at the same moment;
2. caches, then watched classes, then the containers found from the modules
   (each byte to the first owner that reaches it);
3. the native registry, after the caches (an Encoding a cache counted is
   not counted again), and the census (both name owners; the census' unowned
   bytes leave out what the owners above took);
4. allocation sites, then the caller's own probes, then the disk.

A probe the caller passes that is of a kind tokdiag adds itself
(``AllocatorProbe()``, ``NativeProbe()``...) takes that one's place, so
passing it with options never measures twice.

:meth:`ProbeSet.measure` runs them on one context under a
:class:`~tokdiag.probes.footprint.PeakMeter` and releases the context before
it returns: no probe keeps what it measured alive. :meth:`ProbeSet.new_warnings`
hands each probe's warnings to the journal once; at the end of a run,
:meth:`ProbeSet.unmatched_watch` names the watched classes that matched nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokdiag.probes import (
    AllocationProbe,
    AllocatorProbe,
    CacheProbe,
    CacheSpec,
    CensusProbe,
    ContainerProbe,
    DiskProbe,
    NativeProbe,
    Probe,
    ProcessProbe,
    SnapshotContext,
    WatchProbe,
    cache,
)
from tokdiag.probes.footprint import PeakMeter
from tokdiag.records import Record

__all__ = ["ProbeSet"]


class ProbeSet:
    """The probes of one tracker, in the order they run (see the module docstring).

    ``caches`` and ``watch`` are lists (as :func:`tokdiag.recording.options.check_caches`
    leaves them); ``disk`` is what :class:`~tokdiag.probes.DiskProbe` takes, or None.
    """

    def __init__(self, *, watch: Sequence[str], caches: Sequence[Any], census: bool, containers: bool,
                 alloc_sites: int, uss: bool, probes: Sequence[Probe], disk: Any) -> None:
        self.specs: list[CacheSpec] = [cache(c) for c in caches]
        self.process = ProcessProbe(uss=uss)
        self.cache = CacheProbe(self.specs) if self.specs else None
        self.watch = WatchProbe(list(watch)) if watch else None
        self.census = CensusProbe() if census else None
        containers_probe = ContainerProbe() if containers else None  # after caches and watch, before the census
        self.alloc = AllocationProbe(alloc_sites) if alloc_sites else None
        self.all: list[Any] = [p for p in (self.process, AllocatorProbe(), self.cache, self.watch, containers_probe,
                                           NativeProbe() if census else None, self.census, self.alloc)
                               if p is not None]
        for probe in probes:  # one of a kind tokdiag adds itself replaces it in place: never measured twice
            same = [i for i, q in enumerate(self.all) if type(q) is type(probe) and q is not self.process]
            if same:
                self.all[same[0]] = probe
            else:
                self.all.append(probe)
        self.disk = None if disk is None else DiskProbe(disk)
        if self.disk is not None:
            self.all.append(self.disk)
        self._warnings_taken: dict[int, int] = {}  # probe id -> how many of its warnings new_warnings() gave

    @property
    def heavy(self) -> list[Any]:
        """The probes a snapshot near the memory budget leaves out (caches, watch, allocation sites)."""
        return [p for p in (self.cache, self.watch, self.alloc) if p is not None]

    def measure(self, probes: list[Any]) -> tuple[list[Record], PeakMeter]:
        """The records of ``probes`` (all of :attr:`all`, or fewer) on one shared context, and the peak meter
        that watched them; the context is released before this returns."""
        ctx = SnapshotContext()
        records: list[Record] = []
        try:
            with PeakMeter() as meter:
                for probe in probes:
                    records.extend(probe.collect(ctx))
        finally:
            ctx.release()
            del ctx
        return records, meter

    def new_warnings(self) -> list[str]:
        """The probes' warnings (:class:`~tokdiag.probes.base.OnceWarnings`) not given by an earlier call."""
        out: list[str] = []
        for probe in self.all:
            warned = getattr(probe, "warned", None)  # tokdiag's own probes: a plain attribute read
            messages = getattr(warned, "messages", None)
            if not messages:
                continue
            done = self._warnings_taken.get(id(probe), 0)
            out += [str(message) for message in messages[done:]]
            self._warnings_taken[id(probe)] = len(messages)
        return out

    def unmatched_watch(self) -> list[str]:
        """A warning for each watched name that matched no class in the run, with close matches (end of a run)."""
        if self.watch is None:
            return []
        out = []
        for pattern, close in self.watch.unmatched().items():
            hint = f"; did you mean {', '.join(close)}?" if close else (
                "; check the spelling, or import the module that defines it before tracking")
            out.append(f"watch: no class matches {pattern!r}{hint} (its count and bytes were not measured)")
        return out

    def kept(self) -> list[Any]:
        """What the probes keep between snapshots (the census' and watch's state), for tokdiag's own bytes."""
        return [vars(p) if hasattr(p, "__dict__") else p for p in (self.census, self.watch) if p is not None]
