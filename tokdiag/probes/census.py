"""Census probe: count and shallow bytes per type in one pass over the heap.

The pass is C loops only: ``map(type, heap)`` counted with ``Counter``;
per-object ``sys.getsizeof`` only for types whose instances vary in size
(``dict``, ``list``, ``str``, ...), selected with ``itertools.compress``;
fixed-size types are ``count * size``. ``bench/census.py`` measures it
against ``Counter(map(type, gc.get_objects()))``, objgraph and pympler.

Only gc-tracked objects are listed by ``gc.get_objects()``: atoms (``str``,
``bytes``, ``int``) and dicts of atoms mostly are not, so their bytes show
up under the container that holds them only in deep sizes (watch and cache
probes), never here. This is the census' meaning, as in objgraph.
"""

from __future__ import annotations

import sys
import weakref
from collections import Counter
from itertools import compress
from typing import Any

import numpy as np
import pandas as pd

from tokdiag.probes.base import SnapshotContext
from tokdiag.records import BYTES, OBJECTS, Record
from tokdiag.sizing import ALIGN

# Keyed by type, held weakly: a measuring tool must not keep classes alive.
_name_cache: weakref.WeakKeyDictionary[type, str] = weakref.WeakKeyDictionary()


def type_name(t: type) -> str:
    """Qualified name of a type: ``"builtins.dict"``, ``"app.agents.RewardAgent"``."""
    name = _name_cache.get(t)
    if name is None:
        module = getattr(t, "__module__", None) or "?"
        qual = getattr(t, "__qualname__", None) or getattr(t, "__name__", "?")
        name = f"{module}.{qual}"
        try:
            _name_cache[t] = name
        except TypeError:
            pass
    return name


_fixed_cache: weakref.WeakKeyDictionary[type, int | None] = weakref.WeakKeyDictionary()


def _fixed_size(t: type, sample: object) -> int | None:
    """Aligned size shared by every instance of ``t``, or None when sizes vary."""
    if t in _fixed_cache:
        return _fixed_cache[t]
    size: int | None = None
    try:
        if getattr(t, "__itemsize__", 1) == 0 and getattr(t, "__sizeof__", None) is object.__sizeof__:
            size = (sys.getsizeof(sample) + ALIGN - 1) & ~(ALIGN - 1)
    except Exception:
        size = None
    _fixed_cache[t] = size
    return size


def _aligned_sizes(objs: list[Any]) -> np.ndarray:
    try:
        sizes = np.fromiter(map(sys.getsizeof, objs), dtype=np.int64, count=len(objs))
    except Exception:
        sizes = np.fromiter((_safe_getsizeof(o) for o in objs), dtype=np.int64, count=len(objs))
    return (sizes + (ALIGN - 1)) & ~(ALIGN - 1)


def _safe_getsizeof(o: object) -> int:
    try:
        return sys.getsizeof(o)
    except Exception:
        return 0


def _bytes_by_type(objs: list[Any], kinds: list[type]) -> dict[type, int]:
    """Sum of aligned shallow sizes per type for ``objs`` (one C pass + bincount)."""
    if not objs:
        return {}
    code = {t: i for i, t in enumerate(kinds)}
    codes = np.fromiter(map(code.__getitem__, map(type, objs)), dtype=np.int64, count=len(objs))
    sums = np.bincount(codes, weights=_aligned_sizes(objs), minlength=len(kinds))
    return {t: int(sums[i]) for i, t in enumerate(kinds)}


def take_census(heap: list[Any], owned_ids: set[int] | None = None) -> dict[str, tuple[int, int, int]]:
    """``{type name: (count, bytes, unowned bytes)}`` over ``heap``.

    ``unowned bytes`` leaves out objects whose id is in ``owned_ids`` (bytes
    a cache or watched class already owns); it equals ``bytes`` when
    ``owned_ids`` is None.
    """
    counts = Counter(map(type, heap))
    sized: dict[type, int] = {}
    variable: set[type] = set()
    new = {t for t in counts if t not in _fixed_cache}
    if new:  # one sample per type not seen before (C-level pass)
        samples = dict(zip(map(type, compress(heap, map(new.__contains__, map(type, heap)))),
                           compress(heap, map(new.__contains__, map(type, heap)))))
        for t in new:
            _fixed_size(t, samples[t])
        samples.clear()
    for t, n in counts.items():
        fixed = _fixed_cache[t]
        if fixed is None:
            variable.add(t)
        else:
            sized[t] = fixed * n
    var_objs = list(compress(heap, map(variable.__contains__, map(type, heap)))) if variable else []
    var_kinds = list(variable)
    sized.update(_bytes_by_type(var_objs, var_kinds))
    del var_objs
    owned: dict[type, int] = {}
    if owned_ids:
        owned_objs = list(compress(heap, map(owned_ids.__contains__, map(id, heap))))
        owned_kinds = list(set(map(type, owned_objs)))
        owned = _bytes_by_type(owned_objs, owned_kinds)
        del owned_objs
    out: dict[str, tuple[int, int, int]] = {}
    for t, n in counts.items():
        name = type_name(t)
        b = sized[t]
        u = b - owned.get(t, 0)
        prev = out.get(name)
        if prev is not None:  # two distinct classes with one qualified name
            n, b, u = n + prev[0], b + prev[1], u + prev[2]
        out[name] = (n, b, u)
    return out


def census(*, collect: bool = True) -> pd.DataFrame:
    """Count and shallow bytes per type over the whole heap, largest first.

    >>> df = census()
    >>> list(df.columns)
    ['type', 'count', 'bytes']
    >>> bool((df["type"] == "builtins.dict").any())
    True
    """
    import gc

    if collect:
        gc.collect()
    heap = gc.get_objects()
    try:
        rows = take_census(heap)
    finally:
        del heap
    df = pd.DataFrame(
        [(name, c, b) for name, (c, b, _u) in rows.items()], columns=["type", "count", "bytes"]
    )
    return df.sort_values(["bytes", "count"], ascending=False, ignore_index=True)


class CensusProbe:
    """Per-type count and shallow bytes, plus bytes not owned by caches or watched classes.

    To keep journals small only types that matter are written: at least
    ``min_bytes`` bytes or ``min_count`` objects, or a count that moved by
    ``min_growth`` since the first snapshot. Once a type is written it is
    written at every later snapshot (the probe holds only its name and first
    count) so its series stays continuous; a type first written late was
    below those thresholds before.
    """

    name = "census"

    def __init__(self, *, min_bytes: int = 64 * 1024, min_count: int = 500, min_growth: int = 50) -> None:
        if min(min_bytes, min_count, min_growth) < 0:
            raise ValueError(f"min_bytes={min_bytes}, min_count={min_count}, min_growth={min_growth}: must be >= 0")
        self.min_bytes = min_bytes
        self.min_count = min_count
        self.min_growth = min_growth
        self._kept: set[str] = set()
        self._first: dict[str, int] | None = None

    def collect(self, ctx: SnapshotContext) -> list[Record]:
        rows = take_census(ctx.heap, ctx.seen.ids if len(ctx.seen) else None)
        if self._first is None:
            self._first = {name: n for name, (n, _b, _u) in rows.items()}
        first = self._first
        recs: list[Record] = []
        for name, (n, b, u) in rows.items():
            if name not in self._kept:
                if b < self.min_bytes and n < self.min_count and abs(n - first.get(name, 0)) < self.min_growth:
                    continue
                self._kept.add(name)
            recs.append(Record("census", name, "count", float(n), OBJECTS))
            recs.append(Record("census", name, "bytes", float(b), BYTES))
            recs.append(Record("census", name, "unowned_bytes", float(u), BYTES))
        for name in self._kept - rows.keys():  # all instances gone: say so
            recs.append(Record("census", name, "count", 0.0, OBJECTS))
            recs.append(Record("census", name, "bytes", 0.0, BYTES))
            recs.append(Record("census", name, "unowned_bytes", 0.0, BYTES))
        return recs
