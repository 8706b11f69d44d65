"""Deep sizes of object graphs, fast on the shapes that matter.

``deep_size(obj)`` is the number of bytes reachable from ``obj``, with the
meaning of :func:`pympler.asizeof.asizeof`: every reachable object counted
once (by identity), sizes rounded up to 8 bytes, and classes, modules,
functions and code objects not followed (they are shared program
structure, not data).

Sizes are C-level sizes (:func:`shallow_size`): measuring never runs code of
the measured program. ``sys.getsizeof`` calls a ``__sizeof__`` written in
Python, and such methods do things: pandas' runs ``memory_usage(deep=True)``
and builds Series at every call (each left a dead weak reference in the
copy-on-write lists of the DataFrames it measured, a false leak in every
later run of the process); a ``MagicMock``'s records the call and makes a
child mock, which the next level of the walk then sizes, without end. So
tokdiag takes the first ``__sizeof__`` written in C that the class really
inherits (``list.__sizeof__`` for a list subclass; ``object.__sizeof__``,
which is ``tp_basicsize + tp_itemsize * Py_SIZE``, at the latest) and adds
the GC header bytes ``sys.getsizeof`` adds. For every class that does not
override ``__sizeof__`` in Python this is exactly ``sys.getsizeof``; for one
that does, it is what the C struct occupies, a deliberate departure.

It walks the graph in batches of :data:`_BATCH` objects: one
``gc.get_referents(*batch)`` call per batch, identities de-duplicated in
one C call per batch (:class:`Seen`; ``tokdiag._speedups.IdSet`` when the
extension is built) and sizes summed by type in one C call per batch
(``tokdiag._speedups.count``, or the numpy loops of :func:`_rows_numpy`). A
150k-entry ``dict[bytes, int]`` (a BPE vocabulary) is therefore a few C
loops instead of 300k Python iterations; see ``bench/sizing.py`` for the
measured ratio against pympler.

Its own memory is bounded whatever the graph (issue 9, E15; measured by
``bench/footprint.py``): batches are taken depth first from a stack of
pending referent lists, so a wide level is never listed whole; a container
of :data:`_WIDE` items or more is read in slices of its referents
(``tokdiag._speedups.referents``); and the C ``IdSet`` is a bitmap of the
address space (1/64 of the memory the counted objects span), not a table
of ids.

Objects the garbage collector does not track (``str``, ``bytes``, ``int``,
dicts holding only atoms) are invisible to ``gc.get_objects()`` but are
referents of what holds them, so the walk sees them. Each level's referents
are ``gc.get_referents`` plus the keys of its dicts (:func:`referents`):
CPython 3.11+ does not visit the keys of a dict whose keys are all ``str``
(they cannot make a cycle), so ``gc.get_referents({"x" * 10_000: 1})`` is
``[1]`` and a walk by referents alone would miss the 10 KB key.

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
Python 3.11). tokdiag does not: it follows the inline values and adds the
size of the dict pympler would have counted, measured once per class on one
sample instance (see ``_managed_dict_extra``).

Another thread may change what is being measured (services have threads).
Every level of the walk is read with one C call (``gc.get_referents``),
which no other thread can interrupt; the bulk path for vocabularies reads a
dict in several slices, so it checks that the dict did not change under it
and otherwise tries again, then leaves the dict to the general walk.
"""

from __future__ import annotations

import gc
import operator
import struct
import sys
import types
import warnings
import weakref
from collections.abc import Callable, Iterable
from itertools import chain, compress, islice, repeat
from operator import is_
from typing import Any

import numpy as np

from tokdiag._clevel import basicsize, classes_hash_by_identity, distinct_types, flags, is_subtype, itemsize, lookup, mro, type_dict, type_name
from tokdiag._native import speedups
from tokdiag.errors import TokdiagWarning
from tokdiag.probes.footprint import checkpoint

__all__ = ["Seen", "deep_size", "deep_sizes", "referents", "shallow_size", "ALIGN", "MAX_OBJECT_BYTES"]

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


def _size(obj: object) -> int:
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
    size = _size(obj)
    return (size + ALIGN - 1) & ~(ALIGN - 1) if size >= 0 else 0


def _aligned(sizes: np.ndarray) -> int:
    return int(((sizes + (ALIGN - 1)) & ~(ALIGN - 1)).sum())


Rows = list[tuple[type, int, int, int, int]]
"""Per type: ``(type, count, bytes, owned bytes, unsized objects)``."""

_CHUNK = 4096
"""Objects per slice in :func:`_rows_numpy`: small enough that a slice's objects are
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


def _rows_numpy(heap: list[Any], owned_sorted: np.ndarray | None = None, limit: int = MAX_OBJECT_BYTES) -> Rows:
    """:data:`Rows` over ``heap`` without the C extension (what ``tokdiag._speedups.count`` returns).

    One pass in slices of :data:`_CHUNK` objects, C loops only: each
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
    for start in range(0, len(heap), _CHUNK):
        chunk = heap[start:start + _CHUNK]
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
            for lo, hi in zip([0, *cuts], [*cuts, len(at)]):
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


def _rows(objs: list[Any]) -> Rows:
    """:data:`Rows` of ``objs``: the C loop when the extension is built, else :func:`_rows_numpy`."""
    if speedups is not None:
        return speedups.count(objs, None, ALIGN, MAX_OBJECT_BYTES)
    return _rows_numpy(objs)


# --------------------------------------------------------------------------- identities


class _PyIdSet:
    """:class:`tokdiag._speedups.IdSet` in Python (a set of ``id`` ints), when the extension is not built."""

    __slots__ = ("ints",)

    def __init__(self) -> None:
        self.ints: set[int] = set()

    def __len__(self) -> int:
        return len(self.ints)

    def __contains__(self, obj: object) -> bool:
        return id(obj) in self.ints

    def take_new(self, objs: Iterable[Any], skip: frozenset[type], wide: list[Any] | None = None,
                 wide_min: int = sys.maxsize) -> list[Any]:
        objs = list(objs)
        batch = dict(zip(map(id, objs), objs))
        for k in batch.keys() & self.ints:
            del batch[k]
        skip_ids = {id(t) for t in skip}
        skipped = {id(t) for t in distinct_types(list(batch.values())) if id(t) in skip_ids or is_subtype(t, type)}
        if skipped:
            for k in [k for k, o in batch.items() if id(type(o)) in skipped]:
                del batch[k]
        self.ints.update(batch.keys())
        out = list(batch.values())
        if wide is None:
            return out
        kinds = {id(k) for k in _WIDE_KINDS}
        narrow = []
        for o in out:
            (wide if id(type(o)) in kinds and len(o) >= wide_min else narrow).append(o)
        return narrow

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
    snapshot. With the C extension an identity is one bit of a bitmap of
    the address space (1 KiB per 64 KiB region holding a counted object;
    ``ids.nbytes`` says how much), which the OS gets back when the ``Seen``
    is dropped (no int objects, nothing left behind in the allocator of the
    measured process); without it, an ``int`` in a Python set (~60 bytes).
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
        return (self.ids.ints,) if type(self.ids) is _PyIdSet else ()


# --------------------------------------------------------------------------- managed dicts


# id(class) -> (weak reference to the class, bytes of its instances' materialised __dict__).
# Keyed by id, not by class: hashing a class runs its metaclass's __hash__.
_managed_dict_size: dict[int, tuple[weakref.ref[type], int]] = {}


def _remember_dict_size(t: type, size: int) -> None:
    key = id(t)
    _managed_dict_size[key] = (weakref.ref(t, lambda _r, key=key: _managed_dict_size.pop(key, None)), size)


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


def _managed_dict_extra(objs: list[Any], kinds: Iterable[type]) -> int:
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
    """:func:`_managed_dict_extra` for ``group``, instances of ``t``: one ``gc.get_referents`` for all.

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


# --------------------------------------------------------------------------- vocabularies


_BYTES_BASE = sys.getsizeof(b"")
_INT_ZERO = sys.getsizeof(0)
_INT_ONE_DIGIT = sys.getsizeof(1)
_INT_DIGIT = sys.getsizeof(2**30) - _INT_ONE_DIGIT  # bytes per 30-bit digit


_VOCAB_SLICE = 8192
"""Entries per numpy slice when sizing a vocabulary: 64 KiB arrays stay under
glibc's initial mmap threshold (128 KiB), so they are reused from the heap
instead of raising that threshold for the measured process (a 1.2 MB array
per vocabulary freed after each snapshot left ~6 MiB of RSS behind)."""

_VOCAB_TRIES = 3
"""Reads of a vocabulary that another thread keeps changing before the general walk takes it."""

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)
_ONLY_BYTES = {id(bytes)}
_ONLY_INT = {id(int)}


def _vocab_dict_size(d: dict[Any, Any]) -> int | None:
    """Exact deep size of a ``dict[bytes, int]`` (a BPE vocabulary) without a per-entry Python loop.

    Applies only to a root dict with ``bytes`` keys and ``int`` values whose
    values are pairwise distinct: then no two entries share an object (keys
    of one dict are distinct objects; distinct values are distinct objects;
    a bytes key cannot be an int value), so no identity set is needed.
    Distinctness is checked with a bitmap over the values' range, which must
    be dense (ranks are ``0..n-1``). Returns ``None`` when the shape does not
    match; the general walk then runs.

    The dict is read in slices, with Python code in between, so another
    thread may change it half-way: the read is repeated (up to
    :data:`_VOCAB_TRIES` times) until the dict had the same size before and
    after, and otherwise left to the general walk (``None``).
    """
    for _ in range(_VOCAB_TRIES):
        n = len(d)
        if n < _VOCAB_MIN:
            return None
        try:
            size = _vocab_dict_size_once(d, n)
        except (RuntimeError, ValueError):  # changed while read: "dictionary changed size", "iterator too short"
            continue
        if size is None or len(d) == n:
            return size
    return None


def _vocab_dict_size_once(d: dict[Any, Any], n: int) -> int | None:
    if set(map(id, map(type, d))) != _ONLY_BYTES or set(map(id, map(type, d.values()))) != _ONLY_INT:
        return None  # types by identity: a class is never hashed
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
    if next(keys, None) is not None:
        raise RuntimeError("dictionary grew while read")
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
    try:
        if ids.contains_any(d) or ids.contains_any(d.values()):
            return None
        ids.add_all(d)
        ids.add_all(d.values())
    except RuntimeError:  # another thread changed the dict between the two C loops: sizes stand
        pass
    return fast - shallow_size(d)


# --------------------------------------------------------------------------- the walk


def deep_size(obj: object, seen: Seen | None = None) -> int:
    """Bytes reachable from ``obj`` that ``seen`` has not counted yet.

    >>> deep_size(b"") == deep_size(b"") > 0
    True
    >>> deep_size({b"a": 1}) > deep_size({})
    True

    Classes, modules, functions and code objects are neither counted nor
    followed. ``seen`` (optional) is updated in place. Sizes are C-level
    (:func:`shallow_size`): no method of the measured objects runs.
    """
    if seen is None and type(obj) is dict:
        fast = _vocab_dict_size(obj)  # type: ignore[arg-type]
        if fast is not None:
            return fast
    return deep_sizes([obj], seen)


_BATCH = 4096
"""Objects taken per step of the walk: what one step allocates (the new objects, their
referents) stays in the hundreds of KiB whatever the size of the graph."""

_WIDE = 64
"""Exact dicts, lists, tuples, sets and frozensets with at least this many items are not
listed with the rest of their batch: their items are read in slices of at most :data:`_SLICE`
(a batch's referents then number at most ``_BATCH * _WIDE``)."""

_SLICE = 65536
"""Referents per slice of a wide container (``tokdiag._speedups.referents``)."""

_WIDE_KINDS = (dict, list, tuple, set, frozenset)


class _Slices:
    """A container too big to list at once: its referents in slices of ``step``."""

    __slots__ = ("obj", "start", "step")

    def __init__(self, obj: Any, n_refs: int) -> None:
        self.obj = obj
        self.start = 0
        self.step = max(_SLICE, n_refs // 16 + 1)  # at most ~16 slices: each one traverses from the start


class _Keys:
    """The keys of a dict too big to list at once, read in slices of :data:`_SLICE` (C ``dict.keys``)."""

    __slots__ = ("keys",)

    def __init__(self, obj: dict[Any, Any]) -> None:
        self.keys = iter(_DICT_KEYS(obj))

    def take(self) -> list[Any]:
        try:
            return list(islice(self.keys, _SLICE))
        except RuntimeError:  # another thread resized the dict: the keys read so far are what it had
            return []


def _next_batch(pending: list[Any]) -> list[Any] | None:
    """The next batch of at most :data:`_BATCH` objects from the top of the walk's stack (None when done).

    The stack holds lists of referents and :class:`_Slices`; an exhausted entry is popped before
    its batch is returned, so a chain a million objects long keeps the stack one entry deep.
    """
    while pending:
        top = pending[-1]
        if type(top) is _Keys:
            refs = top.take()
            if len(refs) < _SLICE:
                pending.pop()
            if not refs:
                continue
            pending.append(refs)
            continue
        if type(top) is _Slices:
            refs = speedups.referents(top.obj, top.start, top.step)  # type: ignore[union-attr]
            top.start += len(refs)
            if len(refs) < top.step:
                pending.pop()
            if not refs:
                continue
            if len(refs) <= _BATCH:
                return refs
            pending.append(refs)
            continue
        if len(top) <= _BATCH:
            pending.pop()
            if top:
                return top
            continue
        batch = top[-_BATCH:]
        del top[-_BATCH:]
        return batch
    return None


def _wide_size(o: Any, missed: dict[str, int]) -> int:
    size = _size(o)
    if size < 0:
        name = type_name(type(o))
        missed[name] = missed.get(name, 0) + 1
        return 0
    return (size + ALIGN - 1) & ~(ALIGN - 1)


def deep_sizes(objs: Iterable[object], seen: Seen | None = None, unsized: dict[str, int] | None = None) -> int:
    """Bytes reachable from any of ``objs``, each object counted once.

    An object whose size cannot be read (its C ``__sizeof__`` raised, or
    said more than :data:`MAX_OBJECT_BYTES`) counts 0 bytes and is still
    followed. ``unsized``, when given, is updated with ``{type name: number
    of such objects}`` for the caller to report; without it, a
    :class:`~tokdiag.errors.TokdiagWarning` names them.

    The walk's own memory is bounded (issue 9, E15): it takes
    :data:`_BATCH` objects at a time from a stack of pending referent lists
    (depth first, so a wide level is never listed whole), and a container of
    :data:`_WIDE` items or more is read in slices (its ``tp_traverse`` run
    by ``tokdiag._speedups.referents``; without the extension,
    ``gc.get_referents`` lists it whole). A container that another thread
    changes between two of its slices may have entries missed or read
    twice at that snapshot (twice is harmless: identities are counted once).
    """
    ids = (seen if seen is not None else Seen()).ids
    missed: dict[str, int] = {} if unsized is None else unsized
    pending: list[Any] = [list(objs)]
    total = 0
    slicing = speedups is not None
    while (batch := _next_batch(pending)) is not None:
        wide: list[Any] = []
        new = ids.take_new(batch, _SKIP_TYPES, wide, _WIDE)  # not counted before, each once; no classes etc.
        del batch
        if new:
            rows = _rows(new)
            kinds = [r[0] for r in rows]
            for t, _n, b, _o, bad in rows:
                total += b
                if bad:
                    name = type_name(t)
                    missed[name] = missed.get(name, 0) + bad
            del rows
            total += _managed_dict_extra(new, kinds)
            del kinds
        group: list[Any] = []  # wide containers small enough to list together
        n_group = 0
        for o in wide:
            total += _wide_size(o, missed)
            n = len(o)  # an exact builtin container: its own C length
            if type(o) is dict:
                if n >= _VOCAB_MIN:
                    entries = _vocab_entries_size(o, ids)  # vocabularies: entries sized in bulk, not walked
                    if entries is not None:
                        total += entries
                        continue
                n *= 2
            if slicing and n >= _SLICE:
                pending.append(_Slices(o, n))
                if type(o) is dict:  # its str keys, which its tp_traverse may skip, in slices too
                    pending.append(_Keys(o))
                continue
            group.append(o)
            n_group += n
            if n_group >= _SLICE:
                pending.append(referents(group))
                group, n_group = [], 0
        del wide
        if group:
            pending.append(referents(group))
        del group
        if new:
            pending.append(referents(new))
        checkpoint()  # this step's temporaries are alive: the peak a snapshot's meter records
        del new
    if unsized is None and missed:
        warnings.warn(unsized_message(missed), TokdiagWarning, stacklevel=2)
    return total


_DICT_KEYS = dict.keys  # the C method: a dict subclass's own keys() never runs


def referents(objs: list[Any]) -> list[Any]:
    """``gc.get_referents(*objs)`` plus the keys of the dicts (and dict subclasses) among ``objs``.

    CPython 3.11+'s ``dict_traverse`` passes over the keys of a dict whose
    keys are all ``str``; they are data all the same. A key may come twice
    (a dict with other keys visits them): callers deduplicate by identity.
    Only C loops: no method of the objects runs, and no other thread can
    change a dict half-way.

    >>> len(gc.get_referents({"x" * 10: 1})), len(referents([{"x" * 10: 1}]))
    (1, 2)
    """
    out = gc.get_referents(*objs)
    for t in distinct_types(objs):
        if t is dict or is_subtype(t, dict):
            dicts = compress(objs, map(operator.is_, map(type, objs), repeat(t)))
            out.extend(chain.from_iterable(map(_DICT_KEYS, dicts)))
    return out


def unsized_message(unsized: dict[str, int]) -> str:
    """The warning for objects counted 0 bytes because their size could not be read.

    >>> unsized_message({"app.Blob": 3})
    'sizes: 3 app.Blob objects counted 0 bytes: their C __sizeof__ raised or said more than 2**48 bytes'
    """
    what = ", ".join(f"{n} {name}" for name, n in sorted(unsized.items()))
    return f"sizes: {what} objects counted 0 bytes: their C __sizeof__ raised or said more than 2**48 bytes"
