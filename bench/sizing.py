"""Time ``td.deep_size`` against ``pympler.asizeof.asizeof`` and compare their answers.

Shapes, measured side by side in one run:

- a real BPE vocabulary: the ~100k-150k entry ``dict[bytes, int]`` read from a
  ``*.tiktoken`` file already on this machine (aworld's ``qwen.tiktoken`` or
  ``cl100k_base.tiktoken``, found offline by
  :func:`tokdiag_workloads.vocab.find_vocabulary`);
- 3,000 nested chat-message dicts (role, content, metadata with lists);
- 3,000 dataclass instances holding strings and dicts.

For each: median wall time of both over several repeats, the ratio, and
the relative difference of the sizes. Goals (issue #2): at least 20x
faster on the vocabulary, sizes at most 1% apart. Printed, not asserted.

tokdiag is timed first on each shape: pympler reads ``obj.__dict__`` of
Python 3.11+ instances and so materialises a dict per instance, which
changes what later measurements see (``tokdiag.probes.sizing`` docstring).

Run: ``.venv/bin/python bench/sizing.py [repeats]``
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pympler import asizeof

import tokdiag as td
from tokdiag.errors import VocabularyNotFound
from tokdiag_workloads.vocab import find_vocabulary, load_ranks

SPEED_GOAL = 20.0
SIZE_GOAL = 0.01


@dataclass
class Message:
    role: str
    content: str
    meta: dict[str, Any] = field(default_factory=dict)


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def load_vocab() -> tuple[str, dict[bytes, int]]:
    for name in ("qwen", "cl100k_base"):
        try:
            path = find_vocabulary(name)
        except (VocabularyNotFound, Exception):
            continue
        return path.name, load_ranks(path)
    raise SystemExit("no vocabulary file on this machine: pip install 'tokdiag[aworld]' (it ships two)")


def main() -> None:
    print(
        f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other processes inflate all timings)"
    )
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    vocab_name, vocab = load_vocab()
    shapes: list[tuple[str, Any]] = [
        (f"vocabulary {vocab_name} ({len(vocab):,} entries)", vocab),
        ("3,000 message dicts", [
            {"role": "user", "content": f"question {i} " * 20, "meta": {"i": i, "tags": ["a", "b"]}}
            for i in range(3000)]),
        ("3,000 dataclass instances", [Message("assistant", f"answer {i} " * 30, {"step": i})
                                       for i in range(3000)]),
    ]
    print(f"median of {repeats} runs each (pympler: {max(1, repeats // 2)})")
    print(f"{'shape':44s} {'tokdiag s':>10s} {'pympler s':>10s} {'speed-up':>9s} "
          f"{'tokdiag B':>12s} {'pympler B':>12s} {'diff':>7s}")
    results = []
    for label, obj in shapes:
        ours_t, ours = median_time(lambda obj=obj: td.deep_size(obj), repeats)
        if obj is vocab:
            ours_t_vocab = ours_t
        theirs_t, theirs = median_time(lambda obj=obj: asizeof.asizeof(obj), max(1, repeats // 2))
        assert isinstance(ours, int) and isinstance(theirs, int)
        diff = abs(ours - theirs) / theirs
        results.append((label, theirs_t / ours_t, diff))
        print(f"{label:44s} {ours_t:10.4f} {theirs_t:10.4f} {theirs_t / ours_t:8.1f}x "
              f"{ours:12,d} {theirs:12,d} {diff:7.3%}")
    # with a shared Seen (as the cache probe calls it) the vocabulary shortcut is off: the batched walk runs
    walk_t, walk = median_time(lambda: td.deep_size(vocab, td.Seen()), repeats)
    print(f"{'  same vocabulary, general walk (shared Seen)':44s} {walk_t:10.4f} {'':10s} "
          f"{results[0][1] * ours_t_vocab / walk_t:8.1f}x {walk:12,d}")
    vocab_speed = results[0][1]
    print(f"goal: deep_size >= {SPEED_GOAL:.0f}x faster than asizeof on the vocabulary: {vocab_speed:.1f}x -> "
          f"{'met' if vocab_speed >= SPEED_GOAL else 'NOT met'}")
    worst = max(r[2] for r in results)
    print(f"goal: sizes <= {SIZE_GOAL:.0%} apart on every shape: worst {worst:.3%} -> "
          f"{'met' if worst <= SIZE_GOAL else 'NOT met'}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
