"""What the allocator and native probes cost per snapshot, side by side with the census.

Two heaps, one after the other in this process:

1. about 1M gc-tracked objects shaped like an agent service's (the heap of
   ``bench/census.py``), plus what the native probe has to find and read:
   4 ``ssl.SSLContext`` with the system CA bundle, one tiktoken Encoding of
   20,000 synthetic tokens, one sqlite3 ``:memory:`` connection;
2. the same heap after 2M small objects were made and 90% of them freed,
   interleaved (7 in 8 small str from pymalloc, 1 in 8 a 600-byte bytes
   from glibc malloc): glibc's bins then hold ~50,000 free chunks, which
   ``mallinfo2`` walks;
3. the same again after 1M objects of 520 bytes (just past pymalloc's 512,
   so glibc's) were made and every other one freed: ~500,000 free chunks
   that cannot merge, the case where ``mallinfo2`` gets slow and the
   allocator probe backs off.

On each heap, interleaved round by round, median CPU time
(``time.process_time``) of:

- ``take_census(heap)``: the census probe's work (the reference);
- ``AllocatorProbe.collect``: the whole allocator probe (``mallinfo2`` at
  every snapshot: the budget is set out of the way), and its three readings
  alone: ``mallinfo2``, pymalloc's stats, ``/proc/self/status``;
- ``NativeProbe.collect``: with a listing of the heap at every snapshot
  (``full_every=1``: what a snapshot costs when instances were made or freed
  since the last one), and when the classes' reference counts say nothing
  changed (the listing is skipped).

The heap list is made once and handed to every probe (the tracker lists the
heap once per snapshot for all probes), so its cost is in none of them.

Run: ``.venv/bin/python bench/allocator.py [n_objects=1000000] [repeats=7]``
"""

from __future__ import annotations

import gc
import os
import ssl
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from census import build_heap  # noqa: E402  (bench/census.py: the agent-like heap)

from tokdiag.probes import allocator  # noqa: E402
from tokdiag.probes.allocator import AllocatorProbe  # noqa: E402
from tokdiag.probes.base import SnapshotContext  # noqa: E402
from tokdiag.probes.census import IMPLEMENTATION, take_census  # noqa: E402
from tokdiag.probes.native import NativeProbe  # noqa: E402


def _cpu(fn: Callable[[], object]) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def _ctx(heap: list[object]) -> SnapshotContext:
    ctx = SnapshotContext()
    ctx._heap = heap  # the tracker's one listing, shared by every probe of a snapshot
    return ctx


def measure(heap: list[object], repeats: int) -> list[tuple[str, float]]:
    alloc = AllocatorProbe(mallinfo_budget_s=1e9)
    full = NativeProbe(full_every=1)
    steady = NativeProbe(full_every=10**9)
    steady.collect(_ctx(heap))  # its one listing; from now on nothing changes
    arms: dict[str, Callable[[], object]] = {
        "census: take_census(heap)": lambda: take_census(heap),
        "allocator probe (all three readings)": lambda: alloc.collect(_ctx(heap)),
        "  mallinfo2()": allocator.read_glibc,
        "  pymalloc stats (_PyObject_DebugMallocStats)": allocator.read_pymalloc,
        "  /proc/self/status (RssAnon/File/Shmem)": allocator.read_pages,
        "native probe, listing the heap (instances changed)": lambda: full.collect(_ctx(heap)),
        "native probe, nothing changed (listing skipped)": lambda: steady.collect(_ctx(heap)),
    }
    samples: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(repeats):
        for name, fn in arms.items():
            samples[name].append(_cpu(fn))
    assert steady.passes == 1, "the heap changed under the steady native probe"
    return [(name, statistics.median(ts)) for name, ts in samples.items()]


def fragment(n: int = 2_000_000) -> list[object]:
    """``n`` small objects made, 90% freed interleaved; returns the 10% kept."""
    objs = [("x" * 40 + str(k)) if k % 8 else (b"y" * 600 + str(k).encode()) for k in range(n)]
    kept = objs[::10]
    del objs
    return kept


def report(title: str, rows: list[tuple[str, float]], heap: list[object]) -> None:
    glibc = allocator.read_glibc()
    py = allocator.read_pymalloc()
    print(f"\n{title}: {len(heap):,} gc-tracked objects; glibc {glibc.free_chunks:,} free chunks, "
          f"{glibc.free / 2**20:.0f} MiB free; pymalloc {py.free / 2**20:.0f} MiB free of "
          f"{py.arenas / 2**20:.0f} MiB of arenas")
    census = rows[0][1]
    print(f"{'per snapshot':52s} {'CPU ms':>9s} {'x census':>9s}")
    for name, t in rows:
        print(f"{name:52s} {t * 1e3:9.3f} {t / census:8.3f}x")


def main() -> None:
    print(
        f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other processes inflate all timings)"
    )
    target = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    print(f"census implementation: {IMPLEMENTATION}; median CPU time of {repeats} interleaved rounds")

    import sqlite3

    import tiktoken

    from tokdiag.probes._native_child import CL100K_PATTERN, synthetic_ranks

    cafile = ssl.get_default_verify_paths().cafile or ssl.get_default_verify_paths().openssl_cafile
    natives: list[object] = [ssl.create_default_context(cafile=cafile) for _ in range(4)]
    natives.append(tiktoken.Encoding("bench", pat_str=CL100K_PATTERN, mergeable_ranks=synthetic_ranks(20_000),
                                     special_tokens={}))
    natives.append(sqlite3.connect(":memory:"))
    keep = build_heap(target - len(gc.get_objects()))
    gc.collect()
    heap = gc.get_objects()
    report("1. agent-like heap", measure(heap, repeats), heap)
    del heap
    survivors = fragment()
    gc.collect()
    heap = gc.get_objects()
    report("2. the same, fragmented (2M small objects made, 90% freed interleaved)", measure(heap, repeats), heap)
    del heap
    halves = [b"z" * 487 + str(k).encode() for k in range(1_000_000)][::2]  # 520-byte objects, every other freed
    gc.collect()
    heap = gc.get_objects()
    report("3. the same, glibc's bins fragmented (1M 520-byte objects, every other freed)",
           measure(heap, repeats), heap)
    del heap, keep, survivors, natives, halves
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
