"""Census probe: count and shallow bytes per type in one pass over the heap.

Two implementations give identical numbers (``tests/test_census_exact.py``):

- ``tokdiag._speedups`` (``tokdiag/_speedups.c``, built by ``pip install`` when a
  C compiler is there): one C loop, the type looked up in a pointer-keyed
  table, the size read by calling the type's C ``__sizeof__`` directly;
- the numpy path, used when the extension is not built: C loops only, over
  slices of the heap: ``map(type, slice)`` turned into dense type codes and
  counted with ``numpy.bincount``; fixed-size types are ``count * size``;
  objects of types whose instances vary in size (``dict``, ``list``,
  ``tuple``, ...) are grouped by type and sized with one
  ``map(type.__sizeof__, group)`` per type.

:data:`IMPLEMENTATION` names the one in use. ``bench/census.py`` measures
both against ``Counter(map(type, gc.get_objects()))``, objgraph and pympler.

Only gc-tracked objects are listed by ``gc.get_objects()``: atoms (``str``,
``bytes``, ``int``) and dicts of atoms mostly are not, so their bytes show
up under the container that holds them only in deep sizes (watch and cache
probes), never here. This is the census' meaning, as in objgraph.
"""

from __future__ import annotations

import sys
import types
import weakref
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd

from tokdiag.probes.base import SnapshotContext
from tokdiag.records import BYTES, OBJECTS, Record
from tokdiag.probes.sizing import ALIGN, Seen, shallow_size

from tokdiag._native import speedups as _speedups

IMPLEMENTATION = "C" if _speedups is not None else "numpy"
"""Which census runs: ``"C"`` (tokdiag._speedups) or ``"numpy"`` (no compiler at install)."""

Owned = Seen | set[int] | None
"""What a census leaves out of ``unowned bytes``: a snapshot's :class:`Seen`, a set of ids, or nothing."""

# Keyed by type, held weakly: a measuring tool must not keep classes alive.
_name_cache: weakref.WeakKeyDictionary[type, str] = weakref.WeakKeyDictionary()


def type_name(t: type) -> str:
    """Qualified name of a type: ``"builtins.dict"``, ``"app.agents.RewardAgent"``."""
    try:
        name = _name_cache.get(t)
    except TypeError:  # a class whose metaclass makes it unhashable: named, not cached
        name = None
    if name is None:
        module = getattr(t, "__module__", None) or "?"
        qual = getattr(t, "__qualname__", None) or getattr(t, "__name__", "?")
        name = f"{module}.{qual}"
        try:
            _name_cache[t] = name
        except TypeError:
            pass
    return name


_MRO = type.__dict__["__mro__"]
_TYPE_DICT = type.__dict__["__dict__"]
_ITEMSIZE = type.__dict__["__itemsize__"]
_OBJECT_SIZEOF = object.__dict__["__sizeof__"]


def _lookup_sizeof(t: type) -> object | None:
    """``__sizeof__`` found on the MRO of ``t``, as ``sys.getsizeof`` finds it (no metaclass ``__getattribute__``)."""
    for k in _MRO.__get__(t, type):
        d = _TYPE_DICT.__get__(k, type)
        if "__sizeof__" in d:
            return d["__sizeof__"]
    return None


def _sizer(t: type, sample: object) -> tuple[int, Callable[[Any], int], int]:
    """How instances of ``t`` are sized, decided on one ``sample``: ``(fixed, f, extra)``.

    ``fixed >= 0``: every instance has that size (``__itemsize__ == 0`` and
    ``__sizeof__`` is ``object.__sizeof__``), already rounded up. Otherwise
    ``sys.getsizeof(o) == f(o) + extra``: ``sys.getsizeof`` looks
    ``__sizeof__`` up on the object's type, calls it and adds the
    GC/pre-header bytes, which depend only on the type; calling the type's
    C-level ``__sizeof__`` directly skips the lookup and the bound method,
    about half the cost per object, and ``extra`` (those header bytes) is
    measured on the sample. Classes (their header depends on the class),
    Python-level ``__sizeof__`` and a C ``__sizeof__`` borrowed from an
    unrelated type keep ``sys.getsizeof``. The same rules as
    ``tokdiag/_speedups.c``, so both census paths agree.
    """
    plain = (-1, sys.getsizeof, 0)
    if issubclass(t, type):
        return plain
    descr = _lookup_sizeof(t)
    try:
        if descr is _OBJECT_SIZEOF and _ITEMSIZE.__get__(t, type) == 0:
            return ((sys.getsizeof(sample) + ALIGN - 1) & ~(ALIGN - 1), sys.getsizeof, 0)
        if type(descr) is types.MethodDescriptorType and issubclass(t, descr.__objclass__):  # type: ignore[attr-defined]
            return (-1, descr, sys.getsizeof(sample) - descr(sample))  # type: ignore[operator]
    except Exception:
        pass
    return plain


def _segment_sizes(f: Callable[[Any], int], extra: int, objs: tuple[Any, ...]) -> np.ndarray:
    """``getsizeof`` rounded up to :data:`ALIGN` for each of ``objs`` (all of one type)."""
    try:
        sizes = np.fromiter(map(f, objs), dtype=np.int64, count=len(objs))
        if extra:
            sizes += extra
    except Exception:  # an object whose __sizeof__ raises counts 0 (shallow_size says so, one by one)
        sizes = np.fromiter(map(shallow_size, objs), dtype=np.int64, count=len(objs))
    return (sizes + (ALIGN - 1)) & ~(ALIGN - 1)


_CHUNK = 4096
"""Objects per slice of the heap: small enough that a slice's objects are
still in the CPU cache when their sizes are read right after their types."""


class _Codes(dict[Any, int]):
    """Type (or type id) -> dense code, assigned in order of first sight by ``__missing__`` (called from C)."""

    def __missing__(self, key: Any) -> int:
        c = self[key] = len(self)
        return c


def take_census(heap: list[Any], owned: Owned = None) -> dict[str, tuple[int, int, int]]:
    """``{type name: (count, bytes, unowned bytes)}`` over ``heap``.

    ``unowned bytes`` leaves out the objects in ``owned`` (a :class:`Seen`
    or a set of ids: bytes a cache or watched class already owns); it
    equals ``bytes`` when ``owned`` is None or empty. Bytes per type are identical to summing
    ``getsizeof`` rounded up to 8 over every object, whichever
    :data:`IMPLEMENTATION` runs.
    """
    if _speedups is None:
        return take_census_numpy(heap, owned)
    return take_census_c(heap, owned)


def _owned_sorted(owned: Owned) -> np.ndarray | None:
    """The ids in ``owned`` as a sorted int64 array, or None when there are none."""
    if not owned:
        return None
    if isinstance(owned, Seen):
        return owned.sorted_ids()
    arr = np.fromiter(owned, dtype=np.int64, count=len(owned))
    arr.sort()
    return arr


def take_census_c(heap: list[Any], owned: Owned = None) -> dict[str, tuple[int, int, int]]:
    """:func:`take_census` by ``tokdiag._speedups.count``: one C loop over ``heap``."""
    if _speedups is None:
        raise ImportError("tokdiag._speedups is not built (no C compiler at install); use take_census_numpy")
    if isinstance(owned, Seen) and isinstance(owned.ids, _speedups.IdSet):
        arg: object = owned.ids  # looked up in its own table, no copy
    else:
        arg = _owned_sorted(owned)
    rows = _speedups.count(heap, arg, ALIGN)
    return _by_name((t, n, b, b - ob) for t, n, b, ob in rows)


def take_census_numpy(heap: list[Any], owned: Owned = None) -> dict[str, tuple[int, int, int]]:
    """:func:`take_census` without the C extension.

    Types are keyed by themselves; when a class cannot be hashed (its
    metaclass defines ``__eq__`` without ``__hash__``) the census starts
    over keyed by ``id(type)`` (the census keeps each type alive while it
    runs, so its id stays its own), a little slower.
    """
    try:
        return _census_numpy(heap, owned, by_id=False)
    except TypeError:
        return _census_numpy(heap, owned, by_id=True)


def _census_numpy(heap: list[Any], owned: Owned, *, by_id: bool) -> dict[str, tuple[int, int, int]]:
    """The numpy census (see :func:`take_census_numpy`).

    One pass in slices of :data:`_CHUNK` objects, C loops only: each
    object's type is mapped to a dense code (``numpy.fromiter`` over
    ``map(codes.__getitem__, map(type, slice))``), counts are a
    ``numpy.bincount`` of the codes; only objects of types whose size varies
    are sized, grouped by type (a stable ``argsort`` of their codes and one
    ``operator.itemgetter`` gather) so each group is one
    ``map(type.__sizeof__, group)`` (see :func:`_sizer`, decided afresh at
    every call so a ``__sizeof__`` replaced at run time is honoured); fixed-size types
    are ``count * size``. The ``id`` check for ``owned`` runs only when there
    are owned ids, as one ``numpy.searchsorted`` per slice into the sorted
    owned ids.
    """
    codes = _Codes()
    get_code = codes.__getitem__
    kinds: list[type] = []
    fixed: list[int] = []  # per code: aligned size, or -1 when sizes vary
    sizers: list[tuple[Callable[[Any], int], int]] = []  # per code: f, extra (variable sizes only)
    is_var = np.zeros(0, dtype=bool)
    var_bytes: list[int] = []  # per code: bytes of variable-size objects
    own_var_bytes: list[int] = []  # per code: the part of var_bytes in owned objects
    code_parts: list[np.ndarray] = []
    own_code_parts: list[np.ndarray] = []
    owned_sorted = _owned_sorted(owned)
    for start in range(0, len(heap), _CHUNK):
        chunk = heap[start:start + _CHUNK]
        n = len(chunk)
        keys = map(id, map(type, chunk)) if by_id else map(type, chunk)
        cc = np.fromiter(map(get_code, keys), dtype=np.intp, count=n)
        code_parts.append(cc)
        if len(codes) != len(kinds):  # types first met in this slice: one sample each
            for c in range(len(kinds), len(codes)):
                sample = chunk[int(np.argmax(cc == c))]
                size, f, extra = _sizer(type(sample), sample)
                kinds.append(type(sample))
                fixed.append(size)
                sizers.append((f, extra))
                var_bytes.append(0)
                own_var_bytes.append(0)
                del sample
            is_var = np.array([f < 0 for f in fixed], dtype=bool)
        own = _is_owned(chunk, owned_sorted) if owned_sorted is not None else None
        if own is not None and own.any():
            own_code_parts.append(cc[own])
        else:
            own = None
        var_at = np.flatnonzero(is_var[cc])
        if var_at.size:  # variable-size objects, grouped by type: one C loop per type
            var_codes = cc[var_at]
            order = np.argsort(var_codes, kind="stable")
            var_codes = var_codes[order]
            var_at = var_at[order]
            at = var_at.tolist()
            objs = itemgetter(*at)(chunk) if len(at) > 1 else (chunk[at[0]],)
            own_var = own[var_at] if own is not None else None
            cuts = (np.flatnonzero(np.diff(var_codes)) + 1).tolist()
            for lo, hi in zip([0, *cuts], [*cuts, len(at)]):
                c = int(var_codes[lo])
                f, extra = sizers[c]
                sizes = _segment_sizes(f, extra, objs[lo:hi])
                var_bytes[c] += int(sizes.sum())
                if own_var is not None:
                    own_var_bytes[c] += int(sizes[own_var[lo:hi]].sum())
            del objs
        del chunk
    k = len(kinds)
    fixed_arr = np.maximum(np.array(fixed, dtype=np.int64), 0)
    counts = np.bincount(np.concatenate(code_parts), minlength=k) if code_parts else np.zeros(0, np.int64)
    total = counts * fixed_arr + np.array(var_bytes, dtype=np.int64)
    owned_bytes = np.array(own_var_bytes, dtype=np.int64)
    if own_code_parts:
        owned_bytes += np.bincount(np.concatenate(own_code_parts), minlength=k) * fixed_arr
    rows = [(t, int(counts[c]), int(total[c]), int(total[c]) - int(owned_bytes[c])) for c, t in enumerate(kinds)]
    del kinds
    return _by_name(rows)


def _by_name(rows: Iterable[tuple[type, int, int, int]]) -> dict[str, tuple[int, int, int]]:
    """``{type name: (count, bytes, unowned bytes)}`` from per-type rows.

    Two distinct classes with one qualified name are added together.
    """
    out: dict[str, tuple[int, int, int]] = {}
    for t, n, b, u in rows:
        name = type_name(t)
        prev = out.get(name)
        if prev is not None:
            n, b, u = n + prev[0], b + prev[1], u + prev[2]
        out[name] = (n, b, u)
    return out


def _is_owned(objs: list[Any], owned_sorted: np.ndarray) -> np.ndarray:
    """Mask of ``objs`` whose id is in ``owned_sorted`` (``numpy.searchsorted``, no Python loop)."""
    ids = np.fromiter(map(id, objs), dtype=np.int64, count=len(objs))
    pos = np.searchsorted(owned_sorted, ids)
    np.minimum(pos, len(owned_sorted) - 1, out=pos)
    return owned_sorted[pos] == ids


def _leave_out_tokdiag(rows: dict[str, tuple[int, int, int]], ctx: SnapshotContext) -> None:
    """Take the snapshot's own id sets out of the census.

    Without the C extension the shared ``seen`` is a Python set of one int
    per object the caches and watched classes reached (8 MB for one
    cl100k_base Encoding), alive while the census lists the heap; counted,
    it would show as a growing ``builtins.set`` owned by nobody. These sets
    existed before the heap was listed, so each is in it exactly once, and
    none is in ``seen`` itself. (The C ``IdSet`` is not gc-tracked: it is
    never in the heap.)
    """
    name = type_name(set)
    if name not in rows:
        return
    n, b, u = rows[name]
    for own in ctx.own_containers():
        size = (sys.getsizeof(own) + ALIGN - 1) & ~(ALIGN - 1)
        n, b, u = n - 1, b - size, u - size
    rows[name] = (n, b, u)


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
        rows = take_census(ctx.heap, ctx.seen)
        _leave_out_tokdiag(rows, ctx)
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
