"""C-level sizes of single objects, and sizes summed by type over a list of objects.

``shallow_size(obj)`` is what ``sys.getsizeof`` says for every class that
does not override ``__sizeof__`` in Python, read without running code of the
measured program (see :mod:`tokdiag.probes.sizing` for why). :func:`rows`
sums sizes by type over a list of objects in one C call
(``tokdiag._speedups.count``) or in numpy loops (:func:`rows_numpy`), and
:func:`managed_dict_extra` adds the ``__dict__`` that Python 3.11+ instances
with a managed dict have not materialised yet.
"""

from __future__ import annotations

import gc
import struct
import sys
import types
import weakref
from collections.abc import Callable, Iterable
from itertools import compress, repeat
from operator import is_
from typing import Any

import numpy as np

from tokdiag._clevel import (
    basicsize,
    classes_hash_by_identity,
    flags,
    is_subtype,
    itemsize,
    lookup,
    mro,
    type_dict,
)
from tokdiag._native import speedups

__all__ = ["ALIGN", "CHUNK", "MANAGED_DICT_OVERHEAD", "MAX_OBJECT_BYTES", "Rows", "aligned", "managed_dict_extra",
           "object_size", "rows_by_type", "rows_numpy", "shallow_size"]

ALIGN = 8
"""Sizes are rounded up to a multiple of this (pympler's default ``align``)."""

MAX_OBJECT_BYTES = 1 << 48
"""A size above this (256 TiB, more than x86-64 can address) is not believed: the object counts
0 bytes and is reported as unsized, so one lying C ``__sizeof__`` cannot wreck a total."""

MANAGED_DICT_OVERHEAD = 48
"""Estimated bytes of a materialised instance ``__dict__`` header (CPython 3.11, 64-bit)."""

_Py_TPFLAGS_MANAGED_DICT = 1 << 4
_Py_TPFLAGS_MANAGED_WEAKREF = 1 << 3  # 3.12+
_Py_TPFLAGS_HEAPTYPE = 1 << 9
_Py_TPFLAGS_HAVE_GC = 1 << 14

# What sys.getsizeof adds to __sizeof__ (CPython 3.11-3.13, _PySys_GetSizeOf): the GC header of a
# GC type, two pointers before instances with a managed dict (3.12+: or managed weakrefs), and on
# 3.13+ nothing for a static type. tests/test_census_exact.py checks it against sys.getsizeof.
_GC_HEAD = sys.getsizeof([]) - [].__sizeof__()
_PREHEADER = 2 * struct.calcsize("P")
_PREHEADER_FLAGS = _Py_TPFLAGS_MANAGED_DICT | (_Py_TPFLAGS_MANAGED_WEAKREF if sys.version_info >= (3, 12) else 0)
_STATIC_TYPES_HAVE_NO_HEADER = sys.version_info >= (3, 13)
_OBJECT_SIZEOF = object.__dict__["__sizeof__"]

# --------------------------------------------------------------------------- C-level sizes


def _header(t: type) -> int:
    """Bytes ``sys.getsizeof`` adds to ``__sizeof__`` for instances of ``t`` (see ``_GC_HEAD``)."""
    f = flags(t)
    return (_GC_HEAD if f & _Py_TPFLAGS_HAVE_GC else 0) + (_PREHEADER if f & _PREHEADER_FLAGS else 0)


def _c_sizeof(t: type) -> Any:
    """The C ``__sizeof__`` that ``t`` inherits: the first ``__sizeof__`` on its MRO that is a C
    method of a class ``t`` derives from (Python functions, and C methods borrowed from an
    unrelated class, are passed over); ``object.__sizeof__`` at the latest."""
    for k in mro(t):
        d = type_dict(k)
        if "__sizeof__" in d:
            m = d["__sizeof__"]
            if type(m) is types.MethodDescriptorType and is_subtype(t, m.__objclass__):
                return m
    return _OBJECT_SIZEOF


def _sizer(t: type, limit: int = MAX_OBJECT_BYTES) -> tuple[int | None, Callable[[Any], int], int]:
    """How the C-level size of instances of ``t`` is read: ``(fixed, f, header)``.

    ``fixed`` is not None: every instance has that size (not rounded;
    ``object.__sizeof__`` with ``__itemsize__ == 0``, no call needed).
    Otherwise the size of ``o`` is ``f(o) + header``, where ``f`` is the C
    ``__sizeof__`` itself (one C call per object, no lookup, no bound
    method). The same rules as ``tokdiag/_speedups.c``, so both agree.
    """
    header = _header(t)
    m = _c_sizeof(t)
    if m is _OBJECT_SIZEOF and itemsize(t) == 0:
        size = basicsize(t) + header
        if size <= limit:
            return size, m, header
    if _STATIC_TYPES_HAVE_NO_HEADER and t is type:
        def per_class(o: Any, m: Any = m, header: int = header) -> int:
            return m(o) + (header if flags(o) & _Py_TPFLAGS_HEAPTYPE else 0)
        return None, per_class, 0
    return None, m, header


def _one_size(f: Callable[[Any], int], header: int, o: object, limit: int = MAX_OBJECT_BYTES) -> int:
    """``f(o)``, or -1 when it raises an ``Exception`` or is not an int in ``0 .. limit - header``."""
    try:
        v = f(o)
    except Exception:
        return -1
    return v if type(v) is int and 0 <= v <= limit - header else -1


def object_size(obj: object) -> int:
    """The C-level size of ``obj``, not rounded; -1 when it cannot be read."""
    if speedups is not None:
        return speedups.size(obj, MAX_OBJECT_BYTES)
    fixed, f, header = _sizer(type(obj))
    if fixed is not None:
        return fixed
    v = _one_size(f, header, obj)
    return v + header if v >= 0 else -1


def shallow_size(obj: object) -> int:
    """The C-level size of ``obj`` rounded up to 8 bytes; 0 when it cannot be read.

    ``sys.getsizeof(obj)`` for every object whose class does not override
    ``__sizeof__`` in Python; for one that does, the size of its C struct
    (the override never runs: see the module docstring).

    >>> shallow_size([]) == sys.getsizeof([])
    True
    >>> class Odd(list):
    ...     def __sizeof__(self):
    ...         raise RuntimeError("never called")
    >>> shallow_size(Odd()) > 0
    True
    """
    size = object_size(obj)
    return (size + ALIGN - 1) & ~(ALIGN - 1) if size >= 0 else 0


def aligned(sizes: np.ndarray) -> int:
    return int(((sizes + (ALIGN - 1)) & ~(ALIGN - 1)).sum())


Rows = list[tuple[type, int, int, int, int]]
"""Per type: ``(type, count, bytes, owned bytes, unsized objects)``."""

CHUNK = 4096
"""Objects per slice in :func:`rows_numpy`: small enough that a slice's objects are
still in the CPU cache when their sizes are read right after their types."""


class _Codes(dict[Any, int]):
    """Type (or type id) -> dense code, assigned in order of first sight by ``__missing__`` (called from C)."""

    def __missing__(self, key: Any) -> int:
        c = self[key] = len(self)
        return c


def _segment_sizes(f: Callable[[Any], int], header: int, objs: tuple[Any, ...],
                   limit: int) -> tuple[np.ndarray, int]:
    """Sizes rounded up to :data:`ALIGN` of ``objs`` (all of one type), and how many are unsized (0 bytes)."""
    try:
        raw = np.fromiter(map(f, objs), dtype=np.int64, count=len(objs))
    except Exception:  # a C __sizeof__ that raised, or a size beyond int64: one by one
        raw = np.fromiter((_one_size(f, header, o, limit) for o in objs), dtype=np.int64, count=len(objs))
    bad = (raw < 0) | (raw > limit - header)
    sizes = np.where(bad, 0, (raw + header + (ALIGN - 1)) & ~(ALIGN - 1))
    return sizes, int(bad.sum())


def _is_owned(objs: list[Any], owned_sorted: np.ndarray) -> np.ndarray:
    """Mask of ``objs`` whose id is in ``owned_sorted`` (``numpy.searchsorted``, no Python loop)."""
    ids = np.fromiter(map(id, objs), dtype=np.int64, count=len(objs))
    pos = np.searchsorted(owned_sorted, ids)
    np.minimum(pos, len(owned_sorted) - 1, out=pos)
    return owned_sorted[pos] == ids


def rows_numpy(heap: list[Any], owned_sorted: np.ndarray | None = None, limit: int = MAX_OBJECT_BYTES) -> Rows:
    """:data:`Rows` over ``heap`` without the C extension (what ``tokdiag._speedups.count`` returns).

    One pass in slices of :data:`CHUNK` objects, C loops only: each
    object's type is mapped to a dense code (``numpy.fromiter`` over
    ``map(codes.__getitem__, map(type, slice))``; keyed by ``id(type)``
    instead, about twice the cost, when some metaclass alive defines its
    own ``__hash__`` or ``__eq__``, which must not run:
    :func:`tokdiag._clevel.classes_hash_by_identity`), counts are a
    ``numpy.bincount`` of the codes; only objects of types whose size varies
    are sized, grouped by type (a stable ``argsort`` of their codes and one
    ``operator.itemgetter`` gather) so each group is one ``map(f, group)``
    with ``f`` the type's C ``__sizeof__`` (see :func:`_sizer`, decided
    afresh at every call); fixed-size types are ``count * size``. The ``id``
    check for ``owned_sorted`` (sorted int64 ids) runs only when there are
    owned ids, as one ``numpy.searchsorted`` per slice. Sizes above ``limit``
    are not believed (unsized, 0 bytes).
    """
    from operator import itemgetter

    codes = _Codes()
    get_code = codes.__getitem__
    kinds: list[type] = []
    fixed: list[int] = []  # per code: aligned size, or -1 when sizes vary
    sizers: list[tuple[Callable[[Any], int], int]] = []  # per code: f, header (variable sizes only)
    is_var = np.zeros(0, dtype=bool)
    var_bytes: list[int] = []  # per code: bytes of variable-size objects
    own_var_bytes: list[int] = []  # per code: the part of var_bytes in owned objects
    unsized: list[int] = []
    code_parts: list[np.ndarray] = []
    own_code_parts: list[np.ndarray] = []
    by_id = not classes_hash_by_identity()
    for start in range(0, len(heap), CHUNK):
        chunk = heap[start:start + CHUNK]
        n = len(chunk)
        cc = np.fromiter(map(get_code, map(id, map(type, chunk)) if by_id else map(type, chunk)),
                         dtype=np.intp, count=n)
        code_parts.append(cc)
        if len(codes) != len(kinds):  # types first met in this slice
            for c in range(len(kinds), len(codes)):
                t = type(chunk[int(np.argmax(cc == c))])
                size, f, header = _sizer(t, limit)
                kinds.append(t)
                fixed.append(-1 if size is None else (size + ALIGN - 1) & ~(ALIGN - 1))
                sizers.append((f, header))
                var_bytes.append(0)
                own_var_bytes.append(0)
                unsized.append(0)
                del t
            is_var = np.array([f < 0 for f in fixed], dtype=bool)
        own = _is_owned(chunk, owned_sorted) if owned_sorted is not None and owned_sorted.size else None
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
            for lo, hi in zip([0, *cuts], [*cuts, len(at)], strict=False):
                c = int(var_codes[lo])
                f, header = sizers[c]
                sizes, bad = _segment_sizes(f, header, objs[lo:hi], limit)
                var_bytes[c] += int(sizes.sum())
                unsized[c] += bad
                if own_var is not None:
                    own_var_bytes[c] += int(sizes[own_var[lo:hi]].sum())
            del objs
        del chunk
    k = len(kinds)
    fixed_arr = np.maximum(np.array(fixed, dtype=np.int64), 0)
    counts = np.bincount(np.concatenate(code_parts), minlength=k) if code_parts else np.zeros(0, np.int64)
    owned_counts = (np.bincount(np.concatenate(own_code_parts), minlength=k) if own_code_parts
                    else np.zeros(k, np.int64))
    cap = (1 << 63) - 1  # totals saturate there, as in the C loop
    rows = [(t, int(counts[c]),
             min(cap, int(counts[c]) * int(fixed_arr[c]) + var_bytes[c]),
             min(cap, int(owned_counts[c]) * int(fixed_arr[c]) + own_var_bytes[c]),
             unsized[c])
            for c, t in enumerate(kinds)]
    del kinds
    return rows


def rows_by_type(objs: list[Any]) -> Rows:
    """:data:`Rows` of ``objs``: the C loop when the extension is built, else :func:`rows_numpy`."""
    if speedups is not None:
        return speedups.count(objs, None, ALIGN, MAX_OBJECT_BYTES)
    return rows_numpy(objs)


# --------------------------------------------------------------------------- managed dicts
# id(class) -> (weak reference to the class, bytes of its instances' materialised __dict__).
# Keyed by id, not by class: hashing a class runs its metaclass's __hash__.
_managed_dict_size: dict[int, tuple[weakref.ref[type], int]] = {}


def _remember_dict_size(t: type, size: int) -> None:
    key = id(t)

    def forget(_r: weakref.ref[type], key: int = key) -> None:
        _managed_dict_size.pop(key, None)

    _managed_dict_size[key] = (weakref.ref(t, forget), size)


def _materialised_dict_size(o: object, t: type, n_values: int) -> tuple[int, bool]:
    """``(bytes of o.__dict__ once materialised, whether it was materialised now)``.

    The dict is made by the C ``__dict__`` getset CPython gives the class;
    a class whose ``__dict__`` is anything else (a property, a Python
    descriptor) gets an estimate instead: nothing of the class runs.
    """
    getter = lookup(t, "__dict__")
    if type(getter) is types.GetSetDescriptorType and is_subtype(t, getter.__objclass__):
        try:
            d = getter.__get__(o, t)
        except Exception:
            d = None
        if type(d) is dict:
            return shallow_size(d), True
    return MANAGED_DICT_OVERHEAD + ALIGN * n_values, False


def managed_dict_extra(objs: list[Any], kinds: Iterable[type]) -> int:
    """Size of the not-yet-materialised ``__dict__`` of Python 3.11+ instances.

    Instances of one class share their dict keys, so the materialised dict
    of every instance has the same size: it is measured once per class on
    one sample instance (which therefore gets a real ``__dict__``, ~64 bytes,
    made by CPython's C getset, never by the class's own code) and reused.
    An instance whose dict is materialised already has ``[dict, class]`` as
    referents; the walk counts that dict, so it adds nothing here.
    """
    extra = 0
    for t in kinds:
        if flags(t) & _Py_TPFLAGS_MANAGED_DICT:
            group = list(compress(objs, map(is_, map(type, objs), repeat(t))))
            extra += _managed_extra_of(t, group)
            del group
    return extra


def _managed_extra_of(t: type, group: list[Any]) -> int:
    """:func:`managed_dict_extra` for ``group``, instances of ``t``: one ``gc.get_referents`` for all.

    A heap type's instance lists its class last among its referents, so the
    class's positions in the joint list split it per instance (checked:
    an attribute whose value is the class itself would add a split; then
    each instance is looked at alone).
    """
    refs = gc.get_referents(*group)
    if len(group) == 1:
        ends = np.array([len(refs) - 1])
    else:
        ends = np.flatnonzero(np.fromiter(map(is_, refs, repeat(t)), dtype=bool, count=len(refs)))
        if len(ends) != len(group):
            del refs, ends
            return sum(_managed_extra_of(t, [o]) for o in group)
    lengths = np.diff(ends, prepend=-1)  # referents per instance, the class included
    materialised = np.zeros(len(group), dtype=bool)
    for i in np.flatnonzero(lengths == 2).tolist():  # [dict, class]: materialised (or one attribute, a dict)
        materialised[i] = type(refs[int(ends[i]) - 1]) is dict and refs[int(ends[i])] is t
    del refs
    todo = np.flatnonzero(~materialised)
    if not todo.size:
        return 0
    known = _managed_dict_size.get(id(t))
    if known is not None and known[0]() is t:
        return int(todo.size) * known[1]
    first = int(todo[0])
    size, made = _materialised_dict_size(group[first], t, int(lengths[first]))
    _remember_dict_size(t, size)
    # a sample materialised now has its dict as a referent: the walk counts it
    return (int(todo.size) - (1 if made else 0)) * size
