"""Census probe: count and shallow bytes per type in one pass over the heap.

The pass is C loops only, over slices of the heap: ``map(type, slice)``
counted with ``Counter``; per-object ``sys.getsizeof`` only for types whose
instances vary in size (``dict``, ``list``, ``tuple``, ...), selected with
``itertools.compress``; fixed-size types are ``count * size``. ``bench/census.py`` measures it
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


_CHUNK = 8192
"""Objects per slice of the heap: small enough that a slice's objects are
still in the CPU cache when their sizes are read right after their types."""


def take_census(heap: list[Any], owned_ids: set[int] | None = None) -> dict[str, tuple[int, int, int]]:
    """``{type name: (count, bytes, unowned bytes)}`` over ``heap``.

    ``unowned bytes`` leaves out objects whose id is in ``owned_ids`` (bytes
    a cache or watched class already owns); it equals ``bytes`` when
    ``owned_ids`` is None or empty.

    One pass in slices of :data:`_CHUNK` objects, all C loops: types counted
    with ``Counter.update``; ``sys.getsizeof`` only on objects of types whose
    size varies (selected with ``itertools.compress``), summed per type with
    ``numpy.bincount`` at the end; fixed-size types are ``count * size``.
    The ``id`` check for ``owned_ids`` runs only when there are owned ids.
    Bytes per type are identical to summing ``getsizeof`` rounded up to 8
    over every object (``tests/test_sizing_census.py``).
    """
    counts: Counter[type] = Counter()
    code: dict[type, int] = {}
    fixed: dict[type, int] = {}
    variable: set[type] = set()
    size_parts: list[np.ndarray] = []
    code_parts: list[np.ndarray] = []
    own_size_parts: list[np.ndarray] = []
    own_code_parts: list[np.ndarray] = []
    check_owned = bool(owned_ids)
    owned_contains = owned_ids.__contains__ if owned_ids else None
    for start in range(0, len(heap), _CHUNK):
        chunk = heap[start:start + _CHUNK]
        kinds = list(map(type, chunk))
        counts.update(kinds)
        if len(counts) != len(code):  # types not met before in this census
            for t in counts.keys() - code.keys():
                size = _fixed_cache[t] if t in _fixed_cache else _fixed_size(t, chunk[kinds.index(t)])
                code[t] = len(code)
                if size is None:
                    variable.add(t)
                else:
                    fixed[t] = size
        sel = list(map(variable.__contains__, kinds))
        objs = list(compress(chunk, sel))
        if objs:
            size_parts.append(_aligned_sizes(objs))
            code_parts.append(np.fromiter(map(code.__getitem__, compress(kinds, sel)), np.int64, len(objs)))
        del objs
        if check_owned:
            own = list(map(owned_contains, map(id, chunk)))  # type: ignore[arg-type]
            if any(own):
                objs = list(compress(chunk, own))
                own_size_parts.append(_aligned_sizes(objs))
                own_code_parts.append(np.fromiter(map(code.__getitem__, compress(kinds, own)), np.int64, len(objs)))
                del objs
        del chunk, kinds
    sized = _sum_by_code(code_parts, size_parts, len(code))
    owned = _sum_by_code(own_code_parts, own_size_parts, len(code))
    out: dict[str, tuple[int, int, int]] = {}
    for t, n in counts.items():
        c = code[t]
        b = fixed[t] * n if t in fixed else int(sized[c])
        u = b - int(owned[c])
        name = type_name(t)
        prev = out.get(name)
        if prev is not None:  # two distinct classes with one qualified name
            n, b, u = n + prev[0], b + prev[1], u + prev[2]
        out[name] = (n, b, u)
    return out


def _sum_by_code(codes: list[np.ndarray], sizes: list[np.ndarray], n: int) -> np.ndarray:
    if not codes:
        return np.zeros(n, dtype=np.int64)
    return np.bincount(np.concatenate(codes), weights=np.concatenate(sizes), minlength=n).astype(np.int64)


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
