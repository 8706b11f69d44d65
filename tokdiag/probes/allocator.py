"""Allocator probe: how much of RSS the allocators keep free, and how much is file-backed.

A process' RSS is ``RssAnon + RssFile + RssShmem`` (Linux,
``/proc/self/status``). Anonymous pages hold glibc's malloc heap, Python's
small-object allocator (pymalloc: 1 MiB arenas of 16 KiB pools, mapped
directly from the OS, not through malloc), thread stacks and other
mappings. Memory freed by the program mostly stays resident: glibc keeps
freed chunks in its bins and returns only the top of a heap; pymalloc
returns an arena only when every block in it is free. After freeing 90% of
2M small objects interleaved, 86% of the RSS growth is such
free-but-retained memory, 13% the objects kept (``tests/test_allocator.py``,
in a fresh process). That is
fragmentation, not something holding the memory, and the ledger
(:func:`tokdiag.analysis.ledger`) shows it as owners of kind ``allocator``.

Records (probe ``allocator``; all in bytes unless said):

==============  ==============================================================
subject         metrics
==============  ==============================================================
``glibc``       ``free`` (``mallinfo2().fordblks``: free chunks in every arena,
                the top chunk included), ``in_use`` (``uordblks + hblkhd``:
                allocated chunks plus mmapped blocks; Python objects larger
                than 512 bytes are in here, as is native memory),
                ``free_chunks`` [blocks] (``ordblks``: what ``mallinfo2``
                walks, and why it can be slow)
``pymalloc``    ``free`` (available blocks in used pools plus unused pools
                of allocated arenas), ``in_use`` (allocated blocks),
                ``arenas`` (arena bytes mapped)
``pages``       ``anon``, ``file``, ``shmem``: ``RssAnon``, ``RssFile``,
                ``RssShmem``
==============  ==============================================================

and its costs as ``tracker/tokdiag/allocator_s`` (the whole probe) and
``tracker/tokdiag/mallinfo_s`` (the ``mallinfo2`` call alone) [seconds].

``mallinfo2`` walks every free chunk: 3.8 ms of CPU for 50,000 free
chunks, 47 ms for 550,000 (``bench/allocator.py``, on a busy machine), 306
ms reported on a heap more fragmented still; microseconds on an
unfragmented heap. When one call
costs more than ``mallinfo_budget_s`` of CPU time the probe reads it only
every k-th snapshot (k = cost / budget, at most ``max_every``), so its cost per
snapshot stays within the budget on average; at the snapshots in between
``glibc`` is not recorded, ``mallinfo_s`` is 0, and the ledger carries the
last reading forward. The first back-off is a :class:`TokdiagWarning`.
The pymalloc figures come from CPython's ``_PyObject_DebugMallocStats``
(what ``sys._debugmallocstats()`` prints), written into a memory buffer
(``open_memstream``) rather than to stderr, so other threads' stderr is
untouched; it walks pools, not blocks (tens of microseconds).

What the readings do not tell: free memory that was never touched is not
resident (pymalloc's not-yet-used pools of its newest arena, glibc's top
chunk past what was ever written, each at most ~1 MiB), so ``free`` may
exceed what it holds in RSS by that much; the ledger uses growth since the
first snapshot, where that constant cancels. Without glibc >= 2.33 (musl,
macOS) there is no ``glibc`` subject (psutil's ``heap_info()``, where it
exists, gives ``in_use`` only); without pymalloc (``PYTHONMALLOC=malloc``)
no ``pymalloc`` subject; off Linux no ``pages``.
"""

from __future__ import annotations

import ctypes
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from tokdiag.errors import ConfigError
from tokdiag.probes.base import OnceWarnings, SnapshotContext
from tokdiag.records import BLOCKS, BYTES, SECONDS, Record

__all__ = ["AllocatorProbe", "GlibcHeap", "PymallocHeap", "read_glibc", "read_pages", "read_pymalloc"]


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


@dataclass(frozen=True)
class GlibcHeap:
    """One ``mallinfo2()`` reading (``free`` is None when only psutil's ``heap_info()`` was there)."""

    free: int | None
    in_use: int
    free_chunks: int | None


@dataclass(frozen=True)
class PymallocHeap:
    """Python's small-object allocator, from ``_PyObject_DebugMallocStats``."""

    free: int
    in_use: int
    arenas: int


def _fn(lib: type[ctypes.CDLL], name: str, restype: Any, argtypes: list[Any]) -> Any:
    """``name`` from the process' own symbols (libc, libpython) with its C signature, or None when absent.

    A private ``CDLL(None)`` per function: setting ``restype`` never changes
    a function object another library shares.
    """
    try:
        f = getattr(lib(None), name)
    except (OSError, AttributeError):
        return None
    f.restype = restype
    f.argtypes = argtypes
    return f


_MALLINFO2 = _fn(ctypes.CDLL, "mallinfo2", _Mallinfo2, [])
_OPEN_MEMSTREAM = _fn(ctypes.CDLL, "open_memstream", ctypes.c_void_p,
                      [ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t)])
_FCLOSE = _fn(ctypes.CDLL, "fclose", ctypes.c_int, [ctypes.c_void_p])
_FREE = _fn(ctypes.CDLL, "free", None, [ctypes.c_void_p])
# PyDLL: called with the GIL held, as CPython requires of this function
_DEBUG_MALLOC_STATS = _fn(ctypes.PyDLL, "_PyObject_DebugMallocStats", ctypes.c_int, [ctypes.c_void_p])


def read_glibc() -> GlibcHeap | None:
    """glibc's heap now: ``mallinfo2()`` (glibc >= 2.33), else psutil's ``heap_info()`` (in use only), else None.

    ``mallinfo2`` takes every arena's lock and walks its free chunks: its
    cost grows with fragmentation (see the module docstring).
    """
    if _MALLINFO2 is not None:
        m = _MALLINFO2()
        return GlibcHeap(free=int(m.fordblks), in_use=int(m.uordblks + m.hblkhd), free_chunks=int(m.ordblks))
    try:
        import psutil

        heap_info = getattr(psutil, "heap_info", None)  # psutil >= 7.1
        if heap_info is None:
            return None
        h = heap_info()
        return GlibcHeap(free=None, in_use=int(h.heap_used + h.mmap_used), free_chunks=None)
    except Exception:  # pragma: no cover - a platform where psutil cannot read it
        return None


_STAT_LINES = {
    "in_use": re.compile(rb"# bytes in allocated blocks\s*=\s*([\d,]+)"),
    "available": re.compile(rb"# bytes in available blocks\s*=\s*([\d,]+)"),
    "unused_pools": re.compile(rb"unused pools \* \d+ bytes\s*=\s*([\d,]+)"),
    "arenas": re.compile(rb"arenas \* \d+ bytes/arena\s*=\s*([\d,]+)"),
}


def parse_pymalloc_stats(text: bytes) -> PymallocHeap | None:
    """The figures of ``sys._debugmallocstats()``'s pymalloc part, or None when a line is missing.

    >>> parse_pymalloc_stats(b'''3 arenas * 1048576 bytes/arena     =            3,145,728
    ... # bytes in allocated blocks        =            2,346,976
    ... # bytes in available blocks        =              320,992
    ... 25 unused pools * 16384 bytes      =              409,600''')
    PymallocHeap(free=730592, in_use=2346976, arenas=3145728)
    """
    found: dict[str, int] = {}
    for key, pattern in _STAT_LINES.items():
        m = pattern.search(text)
        if m is None:
            return None
        found[key] = int(m.group(1).replace(b",", b""))
    return PymallocHeap(free=found["available"] + found["unused_pools"], in_use=found["in_use"],
                        arenas=found["arenas"])


def read_pymalloc() -> PymallocHeap | None:
    """pymalloc's arenas now, or None when pymalloc is not the allocator (``PYTHONMALLOC=malloc``) or unreachable.

    Calls ``_PyObject_DebugMallocStats`` on a memory stream (``open_memstream``),
    so nothing is written to stderr.
    """
    if None in (_DEBUG_MALLOC_STATS, _OPEN_MEMSTREAM, _FCLOSE, _FREE):
        return None
    buf = ctypes.c_char_p()
    size = ctypes.c_size_t()
    stream = _OPEN_MEMSTREAM(ctypes.byref(buf), ctypes.byref(size))
    if not stream:
        return None
    try:
        printed = _DEBUG_MALLOC_STATS(stream)
    finally:
        _FCLOSE(stream)  # flushes: buf and size are final only now
    address = ctypes.cast(buf, ctypes.c_void_p).value
    if not address:
        return None
    try:
        text = ctypes.string_at(address, size.value)
    finally:
        _FREE(address)
    return parse_pymalloc_stats(text) if printed else None


_PAGES = {b"RssAnon:": "anon", b"RssFile:": "file", b"RssShmem:": "shmem"}


def read_pages() -> dict[str, int] | None:
    """``{"anon", "file", "shmem"}`` resident bytes from ``/proc/self/status``, or None off Linux."""
    try:
        with open("/proc/self/status", "rb") as f:
            text = f.read()
    except OSError:
        return None
    out: dict[str, int] = {}
    for line in text.splitlines():
        key = _PAGES.get(line[:line.find(b":") + 1])
        if key is not None:
            out[key] = int(line.split()[1]) * 1024  # "RssAnon:    1234 kB"
    return out if len(out) == len(_PAGES) else None


class AllocatorProbe:
    """Free-but-retained heap (glibc, pymalloc), heap in use, and anonymous / file / shared pages.

    ``mallinfo_budget_s``: the average time per snapshot ``mallinfo2`` may
    take; a reading that costs more spaces the next ones out (see the
    module docstring). ``max_every``: the most snapshots between two readings.
    """

    name = "allocator"

    def __init__(self, *, mallinfo_budget_s: float = 0.02, max_every: int = 16) -> None:
        if isinstance(mallinfo_budget_s, bool) or not isinstance(mallinfo_budget_s, (int, float)) \
                or not mallinfo_budget_s > 0 or math.isinf(mallinfo_budget_s):
            raise ConfigError(f"mallinfo_budget_s={mallinfo_budget_s!r}: pass a positive number of seconds, e.g. 0.02")
        if isinstance(max_every, bool) or not isinstance(max_every, int) or max_every < 1:
            raise ConfigError(f"max_every={max_every!r}: pass a number of snapshots >= 1, e.g. 16")
        self.mallinfo_budget_s = float(mallinfo_budget_s)
        self.max_every = max_every
        self._skip = 0
        self.warned = OnceWarnings()

    def collect(self, ctx: SnapshotContext) -> list[Record]:
        t0 = time.perf_counter()
        recs: list[Record] = []
        pages = read_pages()
        if pages is not None:
            recs += [Record("allocator", "pages", k, float(v), BYTES) for k, v in pages.items()]
        recs += self._glibc()
        py = read_pymalloc()
        if py is not None:
            recs += [Record("allocator", "pymalloc", "free", float(py.free), BYTES),
                     Record("allocator", "pymalloc", "in_use", float(py.in_use), BYTES),
                     Record("allocator", "pymalloc", "arenas", float(py.arenas), BYTES)]
        recs.append(Record("tracker", "tokdiag", "allocator_s", time.perf_counter() - t0, SECONDS))
        return recs

    def _glibc(self) -> list[Record]:
        if self._skip > 0:
            self._skip -= 1
            return [Record("tracker", "tokdiag", "mallinfo_s", 0.0, SECONDS)]
        t, cpu = time.perf_counter(), time.thread_time()
        heap = read_glibc()
        cost, cpu = time.perf_counter() - t, time.thread_time() - cpu
        recs = [Record("tracker", "tokdiag", "mallinfo_s", cost, SECONDS)]
        if heap is None:
            return recs
        # CPU time decides: the walk's own cost, not a moment the process was descheduled on a busy machine
        every = min(self.max_every, math.ceil(cpu / self.mallinfo_budget_s))
        if every > 1:
            self._skip = every - 1
            self.warned.warn(
                "mallinfo slow",
                f"allocator probe: mallinfo2() took {cpu * 1e3:.0f} ms of CPU ({heap.free_chunks} free chunks; budget "
                f"{self.mallinfo_budget_s * 1e3:.0f} ms per snapshot), so glibc's free and in-use bytes are read "
                f"every {every} snapshots from now on (tracker/tokdiag/mallinfo_s is 0 at the others); pass "
                f"AllocatorProbe(mallinfo_budget_s=...) to change the budget")
        recs.append(Record("allocator", "glibc", "in_use", float(heap.in_use), BYTES))
        if heap.free is not None:
            recs.append(Record("allocator", "glibc", "free", float(heap.free), BYTES))
        if heap.free_chunks is not None:
            recs.append(Record("allocator", "glibc", "free_chunks", float(heap.free_chunks), BLOCKS))
        return recs

