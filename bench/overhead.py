"""Wall time of a step-heavy workload with and without ``td.track`` at default settings.

The workload does real work per step (about 1-3 ms on a 2-core machine):
it tokenizes a few hundred words of text with one cached tiktoken
``Encoding`` (cl100k_base, read offline from a vocabulary file already on
disk), builds a chat-message dict per turn with metadata, and keeps a
bounded history of the last 500 messages, as an agent service does.

Untracked (A) and tracked (B, ``td.track(step, steps=N, progress=False)``
with every other option at its default: ``every="auto"``, census on,
``gc.collect()`` before each snapshot) are interleaved A B C A B C ... so drift
on a shared machine hits both alike; the medians are compared. The goal
(issue #2) is tracked <= 1.10x untracked; printed, not asserted. The
tracked runs also report how many snapshots were taken and their total
cost (the ``tracker/tokdiag/snapshot_s`` records). A third arm (C) runs
with ``min_snapshots=1`` so the 5% overhead budget alone sets the
schedule: the difference between B and C is what the ``min_snapshots=20``
floor costs on a run this short.

Run: ``.venv/bin/python bench/overhead.py [steps] [pairs]``
"""

from __future__ import annotations

import os
import gc
import statistics
import sys
import time
from collections import deque
from typing import Any

import tokdiag as td
from tokdiag.probes.census import take_census
from tokdiag.workloads.vocab import SAMPLE_TEXT, encoding

GOAL = 1.10


class Workload:
    """One agent-like step: tokenize a turn, build its message, keep a bounded history."""

    def __init__(self, enc: Any) -> None:
        self.enc = enc
        self.history: deque[dict[str, Any]] = deque(maxlen=500)
        words = SAMPLE_TEXT.split()
        self.texts = [" ".join(words[i % len(words):] + words[: i % len(words)]) * 5 for i in range(64)]

    def __call__(self, i: int) -> int:
        text = self.texts[i % len(self.texts)]
        tokens = self.enc.encode(text)
        msg = {
            "role": "user" if i % 2 else "assistant",
            "content": text,
            "meta": {"step": i, "n_tokens": len(tokens), "head": tokens[:32], "tags": [f"t{i % 7}", "bench"]},
        }
        self.history.append(msg)
        total = sum(m["meta"]["n_tokens"] for m in self.history)
        return total


def untracked(enc: Any, steps: int) -> float:
    work = Workload(enc)
    t = time.perf_counter()
    for i in range(steps):
        work(i)
    return time.perf_counter() - t


def tracked(enc: Any, steps: int, **options: Any) -> tuple[float, int, float]:
    work = Workload(enc)
    t = time.perf_counter()
    run = td.track(work, steps=steps, progress=False, **options)
    took = time.perf_counter() - t
    cost = run.series("tracker", "tokdiag", "snapshot_s")
    return took, len(cost), float(cost.sum())


def snapshot_parts(repeats: int = 5) -> dict[str, float]:
    """CPU time of what a default snapshot does first: a full collection, listing the heap, the census."""
    work = Workload(encoding("cl100k_base"))
    for i in range(600):
        work(i)
    parts: dict[str, list[float]] = {"gc.collect()": [], "gc.get_objects()": [], "take_census(heap)": []}
    for _ in range(repeats):
        t = time.process_time()
        gc.collect()
        parts["gc.collect()"].append(time.process_time() - t)
        t = time.process_time()
        heap = gc.get_objects()
        parts["gc.get_objects()"].append(time.process_time() - t)
        t = time.process_time()
        take_census(heap)
        parts["take_census(heap)"].append(time.process_time() - t)
        n = len(heap)
        del heap
    out = {label: statistics.median(ts) for label, ts in parts.items()}
    out[f"(heap: {n:,} gc-tracked objects)"] = 0.0
    return out


def main() -> None:
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other processes inflate all timings)")
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    pairs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    enc = encoding("cl100k_base")
    untracked(enc, 50)  # warm the Encoding's caches
    a_times: list[float] = []
    b_times: list[float] = []
    c_times: list[float] = []
    snaps: list[tuple[int, float]] = []
    budget_snaps: list[int] = []
    for _ in range(pairs):
        a_times.append(untracked(enc, steps))
        took, n, cost = tracked(enc, steps)
        b_times.append(took)
        snaps.append((n, cost))
        took, n, _cost = tracked(enc, steps, min_snapshots=1)
        c_times.append(took)
        budget_snaps.append(n)
    a, b, c = statistics.median(a_times), statistics.median(b_times), statistics.median(c_times)
    print(f"workload: {steps:,} steps, {a / steps * 1e3:.2f} ms per step untracked; {pairs} interleaved rounds")
    print(f"untracked:                     median {a:7.3f} s  {[round(x, 3) for x in a_times]}")
    print(f"tracked, defaults:             median {b:7.3f} s  {[round(x, 3) for x in b_times]}  ({b / a:.3f}x)")
    print(f"tracked, min_snapshots=1:      median {c:7.3f} s  {[round(x, 3) for x in c_times]}  ({c / a:.3f}x, "
          f"{statistics.median(budget_snaps):.0f} snapshots: the 5% budget alone)")
    per_snap = statistics.median(cost / n for n, cost in snaps)
    n_snap = statistics.median(n for n, _cost in snaps)
    print(f"defaults: {n_snap:.0f} snapshots (min_snapshots=20 wins over the 5% budget), "
          f"{per_snap * 1e3:.1f} ms each (gc.collect + probes)")
    need = n_snap * per_snap / (GOAL - 1)
    print(f"  at that cost, {n_snap:.0f} snapshots fit in 10% of a run of >= {need:.1f} s "
          f"(>= {need / steps * 1e3:.1f} ms per step at {steps:,} steps)")
    print("  one snapshot's main parts on this process's heap (median CPU time of 5):")
    for label, part in snapshot_parts().items():
        print(f"    {label:36s} {part * 1e3:7.1f} ms" if part else f"    {label}")
    ratio = b / a
    print(f"goal: tracked (defaults) <= {GOAL:.2f}x untracked: {ratio:.3f}x -> {'met' if ratio <= GOAL else 'NOT met'}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
