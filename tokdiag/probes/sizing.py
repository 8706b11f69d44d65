"""Deep sizes of object graphs, fast on the shapes that matter.

``deep_size(obj)`` is the number of bytes reachable from ``obj``, with the
meaning of :func:`pympler.asizeof.asizeof`: every reachable object counted
once (by identity), sizes from ``sys.getsizeof`` rounded up to 8 bytes, and
classes, modules, functions and code objects not followed (they are shared
program structure, not data).

It walks the graph breadth-first in batches: one ``gc.get_referents(*batch)``
call per level, identities de-duplicated in one C call per level
(:class:`Seen`; ``tokdiag._speedups.IdSet`` when the extension is built)
and sizes summed with ``numpy.fromiter(map(sys.getsizeof, ...))``. A 150k-entry
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
from collections.abc import Collection, Iterable
from itertools import islice
from typing import Any

import numpy as np

from tokdiag._native import speedups

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


class _PyIdSet:
    """:class:`tokdiag._speedups.IdSet` in Python (a set of ``id`` ints), when the extension is not built."""

    __slots__ = ("ints",)

    def __init__(self) -> None:
        self.ints: set[int] = set()

    def __len__(self) -> int:
        return len(self.ints)

    def __contains__(self, obj: object) -> bool:
        return id(obj) in self.ints

    def take_new(self, objs: Iterable[Any], skip: frozenset[type]) -> list[Any]:
        objs = list(objs)
        batch = dict(zip(map(id, objs), objs))
        for k in batch.keys() & self.ints:
            del batch[k]
        skipped = {id(t) for t in _types_of(list(batch.values())) if issubclass(t, type) or any(t is s for s in skip)}
        if skipped:
            for k in [k for k, o in batch.items() if id(type(o)) in skipped]:
                del batch[k]
        self.ints.update(batch.keys())
        return list(batch.values())

    def contains_any(self, objs: Iterable[object]) -> bool:
        return not self.ints.isdisjoint(map(id, objs))

    def add_all(self, objs: Iterable[object]) -> None:
        self.ints.update(map(id, objs))

    def ids(self) -> bytes:
        return np.fromiter(self.ints, dtype=np.uint64, count=len(self.ints)).tobytes()


_IdSet = speedups.IdSet if speedups is not None else _PyIdSet  # the Python one without a C compiler


class Seen:
    """Identities already counted, shared between calls to split bytes between owners.

    Holds identities only, never the objects, so it keeps nothing alive.
    Valid while the objects it saw are alive: use one ``Seen`` within one
    snapshot. With the C extension an identity costs 8 bytes in a table
    the OS gets back when the ``Seen`` is dropped (no int objects, nothing
    left behind in the allocator of the measured process); without it, an
    ``int`` in a Python set.
    """

    __slots__ = ("ids",)

    def __init__(self) -> None:
        self.ids = _IdSet()

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, obj: object) -> bool:
        return obj in self.ids

    def sorted_ids(self) -> np.ndarray:
        """The ids counted, as a sorted int64 array."""
        arr = np.frombuffer(self.ids.ids(), dtype=np.uint64).astype(np.int64)
        arr.sort()
        return arr

    def python_containers(self) -> tuple[object, ...]:
        """The gc-tracked containers this ``Seen`` allocated (a census must not count them)."""
        return (self.ids.ints,) if isinstance(self.ids, _PyIdSet) else ()


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


def _managed_dict_extra(objs: list[Any], kinds: Iterable[type]) -> int:
    """Size of the not-yet-materialised ``__dict__`` of Python 3.11+ instances.

    Instances of one class share their dict keys, so the materialised dict
    of every instance has the same size: it is measured once per class on
    one sample instance (which therefore gets a real ``__dict__``, ~64 bytes)
    and reused.
    """
    managed = {id(t) for t in kinds if t.__flags__ & _Py_TPFLAGS_MANAGED_DICT}
    if not managed:
        return 0
    extra = 0
    unhashable: dict[int, int] = {}  # classes whose metaclass makes them unhashable: cached for this call
    for o in objs:
        t = type(o)
        if id(t) not in managed:
            continue
        refs = gc.get_referents(o)
        if len(refs) == 2 and type(refs[0]) is dict and refs[1] is t:
            # dict already materialised (or the one attribute is a dict: then
            # the estimate is skipped for this instance); the walk counts it
            continue
        try:
            size = _managed_dict_size.get(t)
            cache: Any = _managed_dict_size
        except TypeError:
            size, cache = unhashable.get(id(t)), None
        if size is None:
            try:
                size = shallow_size(o.__dict__)  # this sample now has a real dict: the walk counts it
            except Exception:
                size = MANAGED_DICT_OVERHEAD + ALIGN * len(refs)
                extra += size
            if cache is not None:
                cache[t] = size
            else:
                unhashable[id(t)] = size
            continue
        extra += size
    return extra


_BYTES_BASE = sys.getsizeof(b"")
_INT_ZERO = sys.getsizeof(0)
_INT_ONE_DIGIT = sys.getsizeof(1)
_INT_DIGIT = sys.getsizeof(2**30) - _INT_ONE_DIGIT  # bytes per 30-bit digit


def _aligned(sizes: np.ndarray) -> int:
    return int(((sizes + (ALIGN - 1)) & ~(ALIGN - 1)).sum())


_VOCAB_SLICE = 8192
"""Entries per numpy slice when sizing a vocabulary: 64 KiB arrays stay under
glibc's initial mmap threshold (128 KiB), so they are reused from the heap
instead of raising that threshold for the measured process (a 1.2 MB array
per vocabulary freed after each snapshot left ~6 MiB of RSS behind)."""


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def _vocab_dict_size(d: dict[Any, Any]) -> int | None:
    """Exact deep size of a ``dict[bytes, int]`` (a BPE vocabulary) without a per-entry Python loop.

    Applies only to a root dict with ``bytes`` keys and ``int`` values whose
    values are pairwise distinct: then no two entries share an object (keys
    of one dict are distinct objects; distinct values are distinct objects;
    a bytes key cannot be an int value), so no identity set is needed.
    Distinctness is checked with a bitmap over the values' range, which must
    be dense (ranks are ``0..n-1``). Returns ``None`` when the shape does not
    match; the general walk then runs.
    """
    n = len(d)
    if n < 1024:
        return None
    try:
        if set(map(type, d)) != {bytes} or set(map(type, d.values())) != {int}:
            return None
    except TypeError:  # a key or value whose class is unhashable (its metaclass): not a vocabulary
        return None
    keys, values = iter(d), iter(d.values())
    total = shallow_size(d)
    parts: list[np.ndarray] = []
    try:
        for start in range(0, n, _VOCAB_SLICE):
            m = min(_VOCAB_SLICE, n - start)
            v = np.fromiter(islice(values, m), dtype=np.int64, count=m)
            key_sizes = np.fromiter(map(len, islice(keys, m)), dtype=np.int64, count=m) + _BYTES_BASE
            magnitude = np.abs(v)
            digits = (magnitude >= 1).astype(np.int64) + (magnitude >= 2**30) + (magnitude >= 2**60)
            value_sizes = np.where(digits == 0, _INT_ZERO, _INT_ONE_DIGIT + (digits - 1) * _INT_DIGIT)
            total += _aligned(key_sizes) + _aligned(value_sizes)
            parts.append(v)
    except OverflowError:  # a value beyond int64
        return None
    lo = min(int(v.min()) for v in parts)
    hi = max(int(v.max()) for v in parts)
    if hi - lo >= 8 * n:
        return None  # too sparse for the bitmap: the general walk decides
    bits = np.zeros((hi - lo) // 8 + 1, dtype=np.uint8)  # one bit per possible value: n / 8 bytes for ranks
    for v in parts:
        off = v - lo
        np.bitwise_or.at(bits, off >> 3, np.left_shift(1, off & 7).astype(np.uint8))
    if int(_POPCOUNT[bits].sum()) != n:
        return None  # a value repeats: two entries may share an int object
    return total


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


def _types_of(objs: list[Any]) -> Collection[type]:
    """The distinct types of ``objs``: a set, or by identity when a metaclass makes a class unhashable."""
    try:
        return set(map(type, objs))
    except TypeError:
        ts = list(map(type, objs))
        return dict(zip(map(id, ts), ts)).values()


def deep_sizes(objs: Iterable[object], seen: Seen | None = None) -> int:
    """Bytes reachable from any of ``objs``, each object counted once."""
    ids = (seen if seen is not None else Seen()).ids
    frontier = list(objs)
    total = 0
    while frontier:
        objs_level = ids.take_new(frontier, _SKIP_TYPES)  # not counted before, each once; no classes etc.
        frontier = []
        if not objs_level:
            break
        kinds = _types_of(objs_level)
        total += _aligned_total(objs_level)
        total += _managed_dict_extra(objs_level, kinds)
        if any(t is dict for t in kinds):  # vocabularies anywhere in the graph: entries sized in bulk, not walked
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


def _vocab_entries_size(d: dict[Any, Any], ids: Any) -> int | None:
    """Bytes of the keys and values of a ``dict[bytes, int]`` vocabulary met inside a graph, in bulk.

    Same shape test as :func:`_vocab_dict_size` (bytes keys, distinct int
    values, so no entry shares an object with another). When none of the
    entries was counted before (one C-level check over the keys and one
    over the values), their sizes are summed with numpy and they are marked
    counted in ``ids`` (a :class:`Seen`'s id set) so later owners do not
    count them again. Returns None when the shape does not match or some
    entry was already counted: the general walk then runs.
    """
    fast = _vocab_dict_size(d)
    if fast is None:
        return None
    if ids.contains_any(d) or ids.contains_any(d.values()):
        return None
    ids.add_all(d)
    ids.add_all(d.values())
    return fast - shallow_size(d)
