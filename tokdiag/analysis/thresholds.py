"""The numbers a verdict is decided by, and why: the fewest snapshots, the least growth that can be a leak, and
the shares that tell a step, a slowdown and a wiggle.

:mod:`tokdiag.analysis.classification` says where each one enters the
judgement of a series; the calibration tests in ``tests/test_verdicts.py``
hold them to both sides (no false leaks on trendless noisy series, no
misses at realistic noise).

>>> PRACTICAL_MIN["bytes"] // 1024, MIN_SNAPSHOTS
(64, 4)
"""

from __future__ import annotations

__all__ = ["MIN_SNAPSHOTS", "PRACTICAL_MIN", "RESOLUTION", "SLOWDOWN", "STEP_SHARE"]

MIN_SNAPSHOTS = 4
"""Fewer snapshots than this are ``inconclusive``.

With three points a jump and a trend fit equally well; the fourth is the
first that can contradict one of them.
"""

PRACTICAL_MIN: dict[str, float] = {
    "bytes": 64 * 1024,
    "objects": 8.0,
    "entries": 8.0,
    "blocks": 16.0,
    "calls": 8.0,
    "files": 8.0,
}
"""Least total growth over the judged window (the tail) that can be a leak, per unit.

Why these numbers:

- ``bytes``, 64 KiB: RSS moves by 4 KiB pages, pymalloc hands out 16 KiB
  pools and glibc grows and trims the heap top in 128 KiB steps, and an
  interpreter warming up (type attribute caches, interned strings, code
  caches) adds tens of KB on its own. Growth below 64 KiB over a whole
  window is what the allocator and the interpreter do by themselves; a real
  1 KB/step leak passes it after 64 steps.
- ``objects`` / ``entries``, 8: counts are exact, so noise is handled by the
  interval; the minimum only keeps one or two lazily created singletons
  (the second call of something creating one more helper object) from
  being called a leak. A cache fed a new key every step passes it after 8
  steps.
- ``blocks``, 16: tracemalloc block counts per site are exact but churn
  more than type counts.
- ``calls``, 8: cumulative counters (only judged with ``counters=True``).
- ``files``, 8: files under a directory (the disk probe), exact like objects.

Units not listed get 0: only the interval decides.

One exception for exact counts (objects, entries, blocks, files): when the count
rose at *every* snapshot of the judged window (at least five snapshots),
the minimum drops to that rise. Six agents kept by six tasks are a leak
even though six is below eight: a singleton rises once, not every time.
"""

STEP_SHARE = 0.8
"""A change is a ``step`` when one snapshot interval holds at least this share of it."""

SLOWDOWN = 0.5
"""Growth has slowed when the last half of the tail is surely below this share of the tail slope."""

RESOLUTION = 1e-3
"""Share of the practical minimum below which wiggles cannot start a new regime (66 B for bytes).

A near-exact series (bytes on disk, deep sizes) has a robust noise of 0,
and a warm-up split would then be believed for a few bytes of difference
(JSON records of unequal length), leaving a short tail judged alone.
"""
