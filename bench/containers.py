"""What the containers probe costs a snapshot, next to the census it runs beside.

The probe (``tokdiag.probes.containers``, on by default) finds containers
from the modules without hints. Its cost depends on how many modules,
classes and containers the process has, far less on the size of the heap
(it never lists the heap: with 1,529 modules and 2,153 containers, a
snapshot without discovery took 8.4-11.5 ms CPU at 132k tracked objects,
three runs of ``bench/containers.py 100000 2``, and 9.5 ms at 510k,
``500000 3``; a discovery 100-149 ms and 142 ms; the census 45-70 ms and
120 ms; load ~2.2 on 2 CPUs),
so it is measured in a process that imported what an agent service imports
(pandas and numpy, and AWorld with its OpenAI/httpx stack when the
``aworld`` extra is installed) and holding ``n_objects`` gc-tracked objects
in all (imports included; the rest is ``bench/census.py``'s agent-like
heap). Side by side, median CPU time
(``time.process_time``) of:

- a full discovery (the first snapshot, then every ``rediscover=20``);
- a snapshot without one: every module's dict size read, every container
  found resolved by its path and its length read (nothing grows between
  the bench's snapshots, so nothing is written: it prints how many
  containers were);
- ``gc.collect()`` and the census as the tracker runs them at every
  snapshot (``take_census(heap, untracked=True)``, no ids owned by caches
  or watched classes) and the counting floor
  ``Counter(map(type, gc.get_objects()))``.

Run: ``.venv/bin/python bench/containers.py [n_objects=1000000] [repeats=7]``
"""

from __future__ import annotations

import gc
import importlib.util
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from census import build_heap, median_time  # noqa: E402

from tokdiag.probes import ContainerProbe, SnapshotContext  # noqa: E402
from tokdiag.probes.census import take_census  # noqa: E402
from tokdiag.probes.containers import discover  # noqa: E402


def main() -> None:
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
          "(other processes inflate all timings)")
    target = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    if importlib.util.find_spec("aworld") is not None:
        import aworld  # noqa: F401
        import httpx  # noqa: F401
        import openai  # noqa: F401
        imported = "aworld, openai, httpx, pandas, numpy"
    else:
        imported = "pandas, numpy"
    import numpy  # noqa: F401
    import pandas  # noqa: F401

    keep = build_heap(target - len(gc.get_objects()))
    gc.collect()
    probe = ContainerProbe()
    t = time.process_time()
    probe.collect(SnapshotContext())
    first = time.process_time() - t
    heap = gc.get_objects()
    written: list[int] = []

    def snapshot() -> int:
        """Containers written at one snapshot (the probe's timing record is not one)."""
        return sum(r.metric == "entries" for r in probe.collect(SnapshotContext()))

    rows = [
        ("Counter(map(type, heap)) (the floor)", median_time(lambda: Counter(map(type, heap)), repeats)),
        ("take_census(heap, untracked=True)", median_time(lambda: take_census(heap, untracked=True), repeats)),
        ("gc.collect()", median_time(gc.collect, repeats)),
        ("containers: a snapshot, no discovery", median_time(lambda: written.append(snapshot()), repeats)),
        ("containers: a full discovery", median_time(discover, max(3, repeats // 2))),
    ]
    print(f"imported: {imported}; {len(sys.modules):,} modules; {len(heap):,} gc-tracked objects; "
          f"{len(probe):,} containers found (first snapshot: {first * 1e3:.0f} ms CPU); "
          f"containers written at the timed snapshots: {max(written)}")
    census = rows[1][1]
    print(f"{'what':42s} {'CPU ms':>8s} {'x census':>9s}")
    for name, secs in rows:
        print(f"{name:42s} {secs * 1e3:8.1f} {secs / census:8.2f}x")
    per = rows[3][1] + rows[4][1] / probe.rediscover
    print(f"containers per snapshot, a full discovery every {probe.rediscover} amortised: {per * 1e3:.1f} ms "
          f"({per / (census + rows[2][1]):.1%} of gc.collect + census)")
    heap.clear()  # release what was measured (the lambdas above close over `heap`: `del` would unbind their cell)
    keep.clear()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
