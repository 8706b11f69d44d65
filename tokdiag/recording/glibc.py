"""glibc's allocator measured from inside a process: heap in use, and the bytes a block of each size really takes.

Run in the child of :func:`tokdiag.recording.native_trace.trace_native`
before the workload is imported (:func:`measure_allocators`), and around the
traced steps (:func:`heap_in_use`). None where the C library is not glibc.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass
from tokdiag.recording.native_records import AllocatorModel

__all__ = ["heap_in_use", "measure_allocators"]


def _mode_of_gaps(addresses: list[int]) -> int:
    """The most common distance between neighbouring addresses: the block size, where blocks were carved in a row."""
    ordered = sorted(addresses)
    gaps = Counter(b - a for a, b in itertools.pairwise(ordered) if b > a)
    return gaps.most_common(1)[0][0] if gaps else 0


_MALLINFO_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                    "keepcost")
_MEASURED_SIZES = (*range(1, 65), *range(65, 1100, 37), 4000, 65_536, 100_000)


@dataclass(frozen=True)
class _Glibc:
    """glibc's allocator functions through ctypes, typed."""

    malloc: Any
    free: Any
    usable_size: Any
    mallinfo: Any
    """``mallinfo2`` (glibc >= 2.33), else ``mallinfo`` (int fields: enough for differences below 2 GiB)."""


@functools.cache
def _glibc() -> _Glibc | None:
    """glibc's ``malloc``, ``free``, ``malloc_usable_size`` and ``mallinfo2`` through ctypes; None if not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: the chunk layout modelled here is glibc's
        usable = libc.malloc_usable_size
    except (OSError, AttributeError):
        return None
    try:
        info = libc.mallinfo2
        field_type: Any = ctypes.c_size_t
    except AttributeError:
        info = libc.mallinfo
        field_type = ctypes.c_int

    class Mallinfo(ctypes.Structure):
        _fields_ = [(name, field_type) for name in _MALLINFO_FIELDS]

    info.restype, info.argtypes = Mallinfo, []
    usable.restype, usable.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    return _Glibc(malloc=libc.malloc, free=libc.free, usable_size=usable, mallinfo=info)


def heap_in_use() -> int | None:
    """Bytes glibc has handed out in every arena (``uordblks``) plus its mmapped blocks (``hblkhd``); None if not glibc.

    ``mallinfo2`` walks the free lists of every arena (a thread's blocks are
    in it: 10,031,824 B more while a thread held 1,000 blocks of 10 KB), so
    it is slower on a fragmented heap.
    """
    from tokdiag.probes.allocator import read_glibc  # the allocator probe's own reading: one binding of mallinfo2

    heap = read_glibc()
    return None if heap is None else heap.in_use


def _glibc_chunks() -> dict[int, int] | None:
    """Bytes of glibc's heap that one ``malloc(n)`` takes, for each n in ``_MEASURED_SIZES``; None if not glibc.

    Two measures, each the smallest of several (something else allocating
    in between, or a free chunk handed out whole, only ever adds bytes):
    ``malloc_usable_size`` of 64 blocks of n bytes (what the block holds),
    and the growth of ``mallinfo2().uordblks`` (bytes in use in the main
    arena, chunk headers included) per block over batches of 16. Their
    difference, the chunk header, is the most common one over all sizes;
    the chunk size is the usable size plus that header.
    """
    libc = _glibc()
    if libc is None:
        return None
    info, usable, malloc, free = libc.mallinfo, libc.usable_size, libc.malloc, libc.free
    batch, batches = 16, 4
    kept = [0] * (batch * batches * len(_MEASURED_SIZES))  # allocated first: no list growth below
    j = 0
    holds: dict[int, int] = {}
    costs: dict[int, float] = {}
    try:
        for n in _MEASURED_SIZES:
            cost = math.inf
            for _ in range(batches):
                before = info().uordblks
                for _ in range(batch):
                    kept[j] = malloc(n)
                    j += 1
                cost = min(cost, (info().uordblks - before) / batch)
            holds[n] = min(usable(p) for p in kept[j - batch * batches:j])
            costs[n] = cost
    finally:
        for ptr in kept[:j]:
            free(ptr)
    diffs = Counter(c - holds[n] for n, c in costs.items() if c == int(c))
    if not diffs:
        return None
    header = int(diffs.most_common(1)[0][0])
    return {n: h + header for n, h in holds.items()}


def measure_allocators() -> AllocatorModel | None:
    """Measure glibc's chunk sizes and pymalloc's block sizes in this process (0.08 s here); None if not glibc.

    Python's allocator is taken to be pymalloc unless ``PYTHONMALLOC`` says
    otherwise (the child corrects it from memray's capture metadata).
    """
    chunks = _glibc_chunks()
    if not chunks:
        return None
    small = {n: c for n, c in chunks.items() if n < 65_536}  # fitted on these; all of them must fit
    min_chunk = small[1]
    align = math.gcd(*small.values())
    header = min((c - n for n, c in small.items() if c > min_chunk), default=0)
    model_ok = align > 1 and header > 0 and all(
        c == max(min_chunk, (n + header + align - 1) // align * align) for n, c in chunks.items())
    if not model_ok:  # not the chunk layout modelled here: leave overhead out rather than guess
        return None
    pymalloc_align = None
    if not os.environ.get("PYTHONMALLOC", "pymalloc").startswith("malloc"):
        gaps = []
        for n in (40, 100, 200, 300, 500):  # object sizes: sys.getsizeof(b"") + len
            objs = [bytes(n - sys.getsizeof(b"")) for _ in range(64)]
            gaps.append(_mode_of_gaps([id(o) for o in objs]))
            del objs
        pymalloc_align = math.gcd(*gaps) or None
    return AllocatorModel(header=header, align=align, min_chunk=min_chunk, pymalloc_align=pymalloc_align,
                          page=os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096)
