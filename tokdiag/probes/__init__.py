"""Probes: each takes one kind of measurement and returns plain records.

A probe is anything with a ``name`` and a ``collect(ctx)`` method returning
a list of :class:`~tokdiag.records.Record` (the :class:`Probe` protocol).
``ctx`` is the :class:`SnapshotContext` of one snapshot: the heap listed
once for every probe that needs it, and one shared :class:`~tokdiag.probes.seen.Seen`
so that bytes are split between owners (caches first, then watched classes)
without double counting. The tracker drops the context when the snapshot
returns, so no probe keeps anything it measured alive, and measures how far
the snapshot raised the process's RSS (:mod:`~tokdiag.probes.footprint`).
"""

from __future__ import annotations

from tokdiag.probes.allocations import AllocationProbe
from tokdiag.probes.allocator import AllocatorProbe
from tokdiag.probes.base import Probe, SnapshotContext
from tokdiag.probes.caches import CacheProbe, CacheSpec, cache
from tokdiag.probes.census import CensusProbe, census, type_name
from tokdiag.probes.containers import ContainerProbe
from tokdiag.probes.disk import DiskProbe
from tokdiag.probes.native import NativeProbe, estimate_tiktoken_native
from tokdiag.probes.process import ProcessProbe
from tokdiag.probes.watch import WatchProbe

__all__ = [
    "AllocationProbe", "AllocatorProbe", "CacheProbe", "CacheSpec", "CensusProbe", "ContainerProbe", "DiskProbe",
    "NativeProbe",
    "Probe", "ProcessProbe", "SnapshotContext", "WatchProbe", "cache", "census", "estimate_tiktoken_native",
    "type_name",
]
