"""Deep sizes of object graphs, fast on the shapes that matter.

``deep_size(obj)`` is the number of bytes reachable from ``obj``, with the
meaning of :func:`pympler.asizeof.asizeof`: every reachable object counted
once (by identity), sizes from ``sys.getsizeof`` rounded up to 8 bytes, and
classes, modules, functions and code objects not followed (they are shared
program structure, not data).

It walks the graph breadth-first in batches: one ``gc.get_referents(*batch)``
call per level, identities de-duplicated with C-level set operations and
sizes summed with ``numpy.fromiter(map(sys.getsizeof, ...))``. A 150k-entry
``dict[bytes, int]`` (a BPE vocabulary) is therefore two levels of C loops
instead of 300k Python iterations; see ``bench/sizing.py`` for the measured
ratio against pympler.

Objects the garbage collector does not track (``str``, ``bytes``, ``int``,
dicts holding only atoms) are invisible to ``gc.get_objects()`` but are
referents of what holds them, so the walk sees them.

Owners without double counting: pass one :class:`Seen` to several calls and
each byte goes to the first owner that reaches it::

    >>> seen = Seen()
    >>> payload = b"x" * 1000
    >>> a, b = [payload], [payload]
    >>> deep_size(a, seen) > 1000 > deep_size(b, seen)
    True

Python 3.11+ instances with a *managed* ``__dict__`` keep their attribute
values inline until someone reads ``obj.__dict__``; pympler reads it (and so
allocates a dict per instance, about 64 bytes measured with tracemalloc on
Python 3.11). tokdiag never materialises it: it follows the inline values and
adds the size of the dict pympler would have counted, measured once per
class on one sample instance (see ``_managed_dict_extra``).
"""

from __future__ import annotations

import gc
import sys
import types
import weakref
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["Seen", "deep_size", "deep_sizes", "shallow_size", "ALIGN"]

ALIGN = 8
"""Sizes are rounded up to a multiple of this (pympler's default ``align``)."""

MANAGED_DICT_OVERHEAD = 48
"""Estimated bytes of a materialised instance ``__dict__`` header (CPython 3.11, 64-bit)."""

_Py_TPFLAGS_MANAGED_DICT = 1 << 4

# Program structure, not data: never counted, never followed.
_SKIP_TYPES: frozenset[type] = frozenset({
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.BuiltinMethodType,
    types.MethodType,
    types.CodeType,
    types.FrameType,
    types.GetSetDescriptorType,
    types.MemberDescriptorType,
    types.WrapperDescriptorType,
    types.MethodWrapperType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
    type(None),
    type(NotImplemented),
    type(Ellipsis),
    bool,
})


class Seen:
    """Identities already counted, shared between calls to split bytes between owners.

    Holds integers only (``id`` values), never the objects, so it keeps
    nothing alive. Valid while the objects it saw are alive: use one
    ``Seen`` within one snapshot.
    """

    __slots__ = ("ids",)

    def __init__(self) -> None:
        self.ids: set[int] = set()

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, obj: object) -> bool:
        return id(obj) in self.ids


# Keyed by type, held weakly: a measuring tool must not keep classes alive.
_skip_cache: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def _is_skipped_type(t: type) -> bool:
    hit = _skip_cache.get(t)
    if hit is None:
        hit = t in _SKIP_TYPES or issubclass(t, type)
        _skip_cache[t] = hit
    return hit


def _aligned_total(objs: list[Any]) -> int:
    """Sum of ``sys.getsizeof`` over ``objs``, each rounded up to :data:`ALIGN`."""
    if not objs:
        return 0
    try:
        sizes = np.fromiter(map(sys.getsizeof, objs), dtype=np.int64, count=len(objs))
    except Exception:  # an object whose __sizeof__ raises: size one by one
        sizes = np.fromiter((shallow_size(o) for o in objs), dtype=np.int64, count=len(objs))
    return _aligned(sizes)


def shallow_size(obj: object) -> int:
    """``sys.getsizeof(obj)`` rounded up to 8 bytes; 0 when the object refuses to say."""
    try:
        size = sys.getsizeof(obj)
    except Exception:
        return 0
    return (size + ALIGN - 1) & ~(ALIGN - 1)


_managed_dict_size: weakref.WeakKeyDictionary[type, int] = weakref.WeakKeyDictionary()


def _managed_dict_extra(objs: list[Any], kinds: set[type]) -> int:
    """Size of the not-yet-materialised ``__dict__`` of Python 3.11+ instances.

    Instances of one class share their dict keys, so the materialised dict
    of every instance has the same size: it is measured once per class on
    one sample instance (which therefore gets a real ``__dict__``, ~64 bytes)
    and reused.
    """
    managed = {t for t in kinds if t.__flags__ & _Py_TPFLAGS_MANAGED_DICT}
    if not managed:
        return 0
    extra = 0
    for o in objs:
        t = type(o)
        if t not in managed:
            continue
        refs = gc.get_referents(o)
        if len(refs) == 2 and type(refs[0]) is dict and refs[1] is t:
            # dict already materialised (or the one attribute is a dict: then
            # the estimate is skipped for this instance); the walk counts it
            continue
        size = _managed_dict_size.get(t)
        if size is None:
            try:
                size = shallow_size(o.__dict__)
            except Exception:
                size = MANAGED_DICT_OVERHEAD + ALIGN * len(refs)
            _managed_dict_size[t] = size
        extra += size
    return extra


_BYTES_BASE = sys.getsizeof(b"")
_INT_ZERO = sys.getsizeof(0)
_INT_ONE_DIGIT = sys.getsizeof(1)
_INT_DIGIT = sys.getsizeof(2**30) - _INT_ONE_DIGIT  # bytes per 30-bit digit


def _aligned(sizes: np.ndarray) -> int:
    return int(((sizes + (ALIGN - 1)) & ~(ALIGN - 1)).sum())


def _vocab_dict_size(d: dict[Any, Any]) -> int | None:
    """Exact deep size of a ``dict[bytes, int]`` (a BPE vocabulary) without a per-entry Python loop.

    Applies only to a root dict with ``bytes`` keys and ``int`` values whose
    values are pairwise distinct: then no two entries share an object (keys
    of one dict are distinct objects; distinct values are distinct objects;
    a bytes key cannot be an int value), so no identity set is needed.
    Returns ``None`` when the shape does not match; the general walk then runs.
    """
    n = len(d)
    if n < 1024 or set(map(type, d)) != {bytes} or set(map(type, d.values())) != {int}:
        return None
    if len(set(d.values())) != n:
        return None
    try:
        values = np.fromiter(d.values(), dtype=np.int64, count=n)
    except OverflowError:
        return None
    key_sizes = np.fromiter(map(len, d), dtype=np.int64, count=n) + _BYTES_BASE
    magnitude = np.abs(values)
    digits = (magnitude >= 1).astype(np.int64) + (magnitude >= 2**30) + (magnitude >= 2**60)
    value_sizes = np.where(digits == 0, _INT_ZERO, _INT_ONE_DIGIT + (digits - 1) * _INT_DIGIT)
    return shallow_size(d) + _aligned(key_sizes) + _aligned(value_sizes)


def deep_size(obj: object, seen: Seen | None = None) -> int:
    """Bytes reachable from ``obj`` that ``seen`` has not counted yet.

    >>> deep_size(b"") == deep_size(b"") > 0
    True
    >>> deep_size({b"a": 1}) > deep_size({})
    True

    Classes, modules, functions and code objects are neither counted nor
    followed. ``seen`` (optional) is updated in place.
    """
    if seen is None and type(obj) is dict:
        fast = _vocab_dict_size(obj)  # type: ignore[arg-type]
        if fast is not None:
            return fast
    return deep_sizes([obj], seen)


def deep_sizes(objs: Iterable[object], seen: Seen | None = None) -> int:
    """Bytes reachable from any of ``objs``, each object counted once."""
    ids = seen.ids if seen is not None else set()
    frontier = list(objs)
    total = 0
    while frontier:
        batch = dict(zip(map(id, frontier), frontier))
        frontier = []
        already = batch.keys() & ids
        for k in already:
            del batch[k]
        if not batch:
            break
        kinds = set(map(type, batch.values()))
        skipped = {t for t in kinds if _is_skipped_type(t)}
        if skipped:
            for k in [k for k, o in batch.items() if type(o) in skipped]:
                del batch[k]
            kinds -= skipped
        ids.update(batch.keys())
        objs_level = list(batch.values())
        del batch
        total += _aligned_total(objs_level)
        total += _managed_dict_extra(objs_level, kinds)
        if dict in kinds:  # vocabularies anywhere in the graph: entries sized in bulk, not walked
            follow = []
            for o in objs_level:
                entries = _vocab_entries_size(o, ids) if type(o) is dict and len(o) >= _VOCAB_MIN else None
                if entries is None:
                    follow.append(o)
                else:
                    total += entries
            objs_level = follow
        if objs_level:
            frontier = gc.get_referents(*objs_level)
        del objs_level
    return total


_VOCAB_MIN = 1024


def _vocab_entries_size(d: dict[Any, Any], ids: set[int]) -> int | None:
    """Bytes of the keys and values of a ``dict[bytes, int]`` vocabulary met inside a graph, in bulk.

    Same shape test as :func:`_vocab_dict_size` (bytes keys, distinct int
    values, so no entry shares an object with another). When none of the
    entries was counted before (``ids`` disjoint from theirs, one C-level
    check), their sizes are summed with numpy and their ids added to ``ids``
    so later owners do not count them again. Returns None when the shape does
    not match or some entry was already counted: the general walk then runs.
    """
    fast = _vocab_dict_size(d)
    if fast is None:
        return None
    key_ids = list(map(id, d))
    value_ids = list(map(id, d.values()))
    if not (ids.isdisjoint(key_ids) and ids.isdisjoint(value_ids)):
        return None
    ids.update(key_ids)
    ids.update(value_ids)
    return fast - shallow_size(d)
