"""Time tokdiag's heap census against the bare count and against objgraph and pympler.

Builds a heap of about 400,000 gc-tracked objects shaped like an agent
service's (message dicts with nested metadata, lists of them, small class
instances with and without ``__slots__``, dataclasses, tuples, sets, strings
held in containers), then times, side by side in one run and with the
same heap list:

- ``Counter(map(type, heap))``: the floor, counting only (no sizes);
- ``take_census(heap)``: tokdiag's count + shallow bytes per type, by the
  C extension ``tokdiag._speedups`` (what the probe runs when it is built);
- ``take_census(heap, seen)``: the same with ``unowned_bytes``, as the
  census probe runs after caches/watched classes claimed some objects;
- ``take_census(heap, seen, untracked=True)``: what the census probe runs
  (issue 11): also the objects the gc does not track that the heap reaches
  (strings, numbers, tuples and dicts of atoms), each once;
- ``take_census_numpy(heap)``: the pure numpy path, used when no C
  compiler was there at install, and the same with ``untracked=True``;
- ``objgraph.typestats()`` (counts only; it lists the heap itself);
- ``pympler.summary.summarize(muppy.get_objects())`` (counts + sizes).

Each is repeated and the median taken; times are this process's CPU time
(``time.process_time``), so other processes on a shared machine inflate
them less than wall time (they still compete for caches). The goal (issue #2) is
``take_census <= 1.5x`` the Counter floor; it is printed, not asserted, so a
noisy machine does not fail the bench.

Run: ``.venv/bin/python bench/census.py [n_objects] [repeats]``
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tokdiag.probes.census import IMPLEMENTATION, take_census, take_census_numpy
from tokdiag.probes.seen import Seen
from tokdiag.probes.sizing import deep_sizes

GOAL = 1.5


class Agent:
    def __init__(self, i: int) -> None:
        self.name = f"agent-{i}"
        self.history: list[dict[str, Any]] = []
        self.step = i


class Point:
    __slots__ = ("x", "y")

    def __init__(self, x: float, y: float) -> None:
        self.x, self.y = x, y


@dataclass
class Event:
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)


def build_heap(target: int) -> list[Any]:
    """About ``target`` extra gc-tracked objects, returned in one list that keeps them alive."""
    keep: list[Any] = []
    before = len(gc.get_objects())
    i = 0
    while len(gc.get_objects()) - before < target:
        for _ in range(2000):
            agent = Agent(i)
            for j in range(3):
                agent.history.append({
                    "role": "user" if j % 2 else "assistant",
                    "content": f"message {i}-{j} " * (1 + j),
                    "meta": {"step": i, "tokens": [i, j, i + j], "ids": (i, j, "x")},
                })
            keep.append(agent)
            keep.append(Event("tool", {"args": [f"a{i}", {"k": i}]}, [f"t{i}"]))
            keep.append([Point(i, j) for j in range(2)])
            keep.append({f"key{i}", f"key{i + 1}"})
            keep.append((f"s{i}", [i]))
            i += 1
    return keep


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return statistics.median(times)


def main() -> None:
    print(
        f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other processes inflate all timings)"
    )
    target = int(sys.argv[1]) if len(sys.argv) > 1 else 400_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    import objgraph
    from pympler import muppy, summary

    keep = build_heap(target - len(gc.get_objects()))
    gc.collect()
    heap = gc.get_objects()
    # what the census probe sees after a watch probe claimed the agents' graphs
    seen = Seen()
    deep_sizes([o for o in keep if type(o) is Agent][: len(keep) // 20], seen)
    owned = seen

    # the three compared with the goal run interleaved, round by round, so load drift hits them alike
    trio: dict[str, Callable[[], object]] = {
        "Counter(map(type, heap))": lambda: Counter(map(type, heap)),
        "tokdiag take_census(heap)": lambda: take_census(heap),
        f"tokdiag take_census(heap, {len(owned):,} owned ids)": lambda: take_census(heap, owned),
        "  + untracked=True (what the probe runs)": lambda: take_census(heap, owned, untracked=True),
        "tokdiag take_census_numpy(heap) (no compiler)": lambda: take_census_numpy(heap),
        "  + untracked=True": lambda: take_census_numpy(heap, owned, untracked=True),
    }
    samples: dict[str, list[float]] = {name: [] for name in trio}
    for _ in range(repeats):
        for name, fn in trio.items():
            samples[name].append(median_time(fn, 1))
    rows = [(name, statistics.median(ts)) for name, ts in samples.items()]
    floor, ours, ours_owned, ours_untracked, _numpy, _numpy_untracked = (t for _name, t in rows)
    counted = take_census(heap, untracked=True)
    n_all = sum(n for n, _b, _u in counted.values())
    rows.append(("objgraph.typestats()", median_time(objgraph.typestats, max(3, repeats // 2))))
    rows.append(("pympler summarize(muppy.get_objects())",
                 median_time(lambda: summary.summarize(muppy.get_objects()), 1)))

    print(f"census implementation in use: {IMPLEMENTATION}")
    print(f"heap: {len(heap):,} gc-tracked objects, {len(set(map(type, heap))):,} types; "
          f"median CPU time of {repeats} (pympler: 1 run)")
    print(f"{'method':48s} {'seconds':>9s} {'x floor':>8s}")
    for name, t in rows:
        print(f"{name:48s} {t:9.4f} {t / floor:7.2f}x")
    ratio = ours / floor
    print(f"goal: take_census <= {GOAL}x Counter(map(type, heap)): {ratio:.2f}x -> "
          f"{'met' if ratio <= GOAL else 'NOT met'}")
    print(f"with owned ids: {ours_owned / floor:.2f}x (one lookup per object in the snapshot's id set)")
    print(f"with untracked objects (the probe's census): {ours_untracked / floor:.2f}x the floor, "
          f"{ours_untracked / ours_owned:.2f}x the tracked-only census; it counts {n_all:,} objects in all "
          f"({n_all - len(heap):,} untracked) -> {'within' if ours_untracked / floor <= GOAL else 'above'} {GOAL}x")
    heap.clear()  # release what was measured (the lambdas above close over `heap`: `del` would unbind their cell)
    keep.clear()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
