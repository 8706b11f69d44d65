"""Native footprints: memory that types known to hold it keep outside Python's heap.

Python-level sizes do not see what a C or Rust extension allocates for an
object. For the types in :data:`REGISTRY` the native probe counts every
instance at every snapshot, whatever its growth, and estimates (or reads)
the native bytes behind them:

==========================  ========================================  ==========================================
subject (instances of it    native memory                             how
and its subclasses)
==========================  ========================================  ==========================================
``ssl.SSLContext``          OpenSSL's ``SSL_CTX`` and its X509 store  ``base + per_certificate * x509``, the
                            (the parsed CA certificates)              store's certificate count from
                                                                      ``_ssl._SSLContext.cert_store_stats``
``tiktoken.core.Encoding``  tiktoken's Rust ``CoreBPE`` (the          ``scale * structure + constant``: token
                            vocabulary a second time, hash tables,    bytes as malloc chunks and hash tables
                            compiled regexes)                         (:func:`estimate_tiktoken_native`)
``sqlite3.Connection``      SQLite's own heap (page cache, schema,    read, not estimated: ``sqlite3_memory_used()``
                            statements), all connections together     of the SQLite library ``_sqlite3`` uses
==========================  ========================================  ==========================================

Each :class:`NativeType` carries a ``calibration`` note saying how its
built-in coefficients were measured. They were fitted to the bytes of
glibc's heap in use per object (``mallinfo2``), not to RSS, so an estimate
never includes free memory the allocator keeps (the ledger's ``allocator``
owners count that). OpenSSL, CA bundles and tiktoken differ between
machines: :func:`calibrate` (``tokdiag calibrate``) re-fits the models on
this machine in fresh subprocesses, in well under a minute, and writes
them to :func:`calibration_path`; the registry uses that file's
coefficients when they were measured with the library version installed
now, and the built-in ones otherwise.

Records (probe ``native``, subject the type's name): ``count`` [objects],
``native_bytes`` [bytes], and for ``ssl.SSLContext`` ``certificates``
[entries] (the sum of the stores' certificates) and for tiktoken
``tokens`` [entries]. ``native_bytes`` is partitioned like the other
probes' bytes: an Encoding whose native estimate a cache already recorded
(``cache/<label>/native_bytes``, the cache probe runs first) is counted but
adds no bytes here. The probe's cost is ``tracker/tokdiag/native_s``.

How instances are found: one ``gc.get_referrers(*classes)`` over the
registered classes whose module is already imported (the probe imports
nothing) and their subclasses. Every instance of a heap type visits its
class when the collector traverses it, so this is one C pass over the
collector's objects, keyed by the class' identity (``type(o)`` looked up by
``id``): no ``isinstance``, no ``__eq__``, no attribute lookup on the
instances. It costs 1.5-1.8x the census (``bench/allocator.py``: 1M
agent-like objects, and real AWorld's heap, whose vocabularies add many
references to traverse); a pass over the heap list with ``issubclass`` in
C loops cost 2.3x. Each instance is then read
through its C class' own methods (``_ssl._SSLContext.cert_store_stats(ctx)``)
or through its attributes only when no class on its MRO defines them
(tiktoken's ranks dict). The pass is skipped while the classes' reference
counts show that no instance was made or freed (see :class:`NativeProbe`).
Types whose instances the collector does not track (``zlib.Compress``,
``zlib.Decompress``: ~256 KiB / ~44 KiB of zlib state each) are not in the
heap list and so not in the registry.
"""
from __future__ import annotations

import gc
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress, repeat

from tokdiag._clevel import subclasses_of
from tokdiag.errors import ConfigError
from tokdiag.probes.base import SnapshotContext
from tokdiag.probes.calibration import Calibration, calibrate
from tokdiag.probes.native_models import estimate_tiktoken_native
from tokdiag.probes.native_registry import (
    REGISTRY,
    NativeType,
    calibration_path,
    coefficients,
    native_types,
    tiktoken_native_of,
)
from tokdiag.records import BYTES, ENTRIES, OBJECTS, SECONDS, Record

__all__ = [
    "REGISTRY", "Calibration", "NativeProbe", "NativeType", "calibrate", "calibration_path", "coefficients",
    "estimate_tiktoken_native", "native_types", "tiktoken_native_of",
]

_FLAGS = type.__dict__["__flags__"]
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE


# ----------------------------------------------------------------------------- the probe


@dataclass
class _Found:
    """One registry type's instances at the last full pass, by id only (nothing is kept alive)."""

    ids: list[int]
    nbytes: list[int]
    items: list[int]


class NativeProbe:
    """Count every instance of the registered native-holding types and record their native bytes.

    ``types``: registry names or kinds to measure (default: all of
    :data:`REGISTRY`). Run it after the cache probe, so an Encoding a cache
    already counted adds no bytes twice.

    Finding the instances (one ``gc.get_referrers`` over the classes, see
    the module docstring) costs 1.5-1.8x the census. It is skipped when nothing can
    have changed: every instance of a heap type holds a reference to its
    class, so when the reference counts of the registered classes and their
    subclasses are what they were at the last pass, the instances are taken
    to be the same ones and their per-instance figures are reused (an
    SSL context's store is read again only at a pass). Every ``full_every``-th
    snapshot passes anyway, in case a class' count moved for another reason
    while an instance was made. Process-wide readings (SQLite) are taken at
    every snapshot.
    """

    name = "native"

    def __init__(self, types: Sequence[str] | None = None, *, full_every: int = 10) -> None:
        if isinstance(full_every, bool) or not isinstance(full_every, int) or full_every < 1:
            raise ConfigError(f"full_every={full_every!r}: pass a number of snapshots >= 1 "
                              "(1: a pass at every snapshot)")
        self.types = native_types(types)
        self.full_every = full_every
        self._signature: tuple[int, ...] | None = None
        self._found: list[_Found] = []
        self._since_pass = 0
        self.passes = 0
        """How many snapshots listed the instances (the others reused the last listing)."""

    def collect(self, ctx: SnapshotContext) -> list[Record]:
        t0 = time.perf_counter()
        recs: list[Record] = []
        active = [(t, base) for t in self.types if (base := t.resolve()) is not None]
        if active:
            recs = self._measure(active, ctx)
        del active
        recs.append(Record("tracker", "tokdiag", "native_s", time.perf_counter() - t0, SECONDS))
        return recs

    def _signature_now(self, active: list[tuple[NativeType, type]]) -> tuple[int, ...] | None:
        """The registered classes (and subclasses), with their reference counts; None when a class is not a heap
        type."""
        sig: list[int] = []
        for t, base in active:
            sig.append(-1 - REGISTRY.index(t))
            for k in subclasses_of(base):
                if not _FLAGS.__get__(k, type) & _HEAPTYPE:  # its instances do not hold a reference to it
                    return None
                sig += (id(k), sys.getrefcount(k))
        return tuple(sig)

    def _measure(self, active: list[tuple[NativeType, type]], ctx: SnapshotContext) -> list[Record]:
        signature = self._signature_now(active)
        self._since_pass += 1
        if signature is None or signature != self._signature or self._since_pass >= self.full_every:
            self._found = self._pass(active, ctx)
            # taken before the pass, as at the next snapshot (the heap list holds the classes too)
            self._signature = signature
            self._since_pass = 0
            self.passes += 1
        recs: list[Record] = []
        for (t, _base), found in zip(active, self._found, strict=False):
            recs.append(Record("native", t.name, "count", float(len(found.ids)), OBJECTS))
            total = 0
            for oid, nbytes in zip(found.ids, found.nbytes, strict=False):
                if oid not in ctx.native_seen:  # a cache probe counted it already
                    ctx.native_seen.add(oid)
                    total += nbytes
            if t.process_wide is not None:
                wide = t.process_wide()
                if wide is None:
                    continue
                total += wide
            recs.append(Record("native", t.name, "native_bytes", float(total), BYTES))
            if t.items is not None:
                recs.append(Record("native", t.name, t.items, float(sum(found.items)), ENTRIES))
        return recs

    @staticmethod
    def _pass(active: list[tuple[NativeType, type]], ctx: SnapshotContext) -> list[_Found]:
        """Every instance of the active types, measured (held only while this runs).

        Instances of heap types hold a reference to their class and visit it
        when the collector traverses them, so one ``gc.get_referrers(*classes)``
        finds them all (and a few other referrers of the classes: their
        subclasses, the modules' dicts, which the type check drops). Classes
        that are not heap types (none in the registry today) are looked for
        in the heap list.
        """
        index: dict[int, int] = {}
        heap_types: list[type] = []
        static: list[type] = []
        for i, (_t, base) in enumerate(active):
            for k in subclasses_of(base):
                index.setdefault(id(k), i)
                (heap_types if _FLAGS.__get__(k, type) & _HEAPTYPE else static).append(k)
        objs = gc.get_referrers(*heap_types) if heap_types else []
        if static:
            heap = ctx.heap
            objs += compress(heap, map(issubclass, map(type, heap), repeat(tuple(static))))
            del heap
        out = [_Found([], [], []) for _ in active]
        coefs = [coefficients(t.kind) if t.per_instance is not None else {} for t, _b in active]
        seen: set[int] = set()
        for o in objs:
            at = index.get(id(type(o)))
            if at is None or id(o) in seen:
                continue
            i = at
            seen.add(id(o))
            t = active[i][0]
            found = out[i]
            found.ids.append(id(o))
            nbytes, n = t.per_instance(o, coefs[i]) if t.per_instance is not None else (0, 0)
            found.nbytes.append(nbytes)
            found.items.append(n)
        return out
