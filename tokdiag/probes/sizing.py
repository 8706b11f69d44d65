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
one C call per batch (:class:`~tokdiag.probes.seen.Seen`; ``tokdiag._speedups.IdSet``
when the extension is built) and sizes summed by type in one C call per batch
(``tokdiag._speedups.count``, or the numpy loops of :func:`~tokdiag.probes.shallow.rows_numpy`). A
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

Owners without double counting: pass one :class:`~tokdiag.probes.seen.Seen` to several calls and
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
sample instance (see :func:`~tokdiag.probes.shallow.managed_dict_extra`).

Another thread may change what is being measured (services have threads).
Every level of the walk is read with one C call (``gc.get_referents``),
which no other thread can interrupt; the bulk path for vocabularies reads a
dict in several slices, so it checks that the dict did not change under it
and otherwise tries again, then leaves the dict to the general walk.
"""

from __future__ import annotations

import gc
import operator
import types
import warnings
from collections.abc import Iterable
from itertools import chain, compress, islice, repeat
from typing import Any

from tokdiag._clevel import distinct_types, is_subtype, type_name
from tokdiag._native import speedups
from tokdiag.errors import TokdiagWarning
from tokdiag.probes.footprint import checkpoint
from tokdiag.probes.seen import Seen
from tokdiag.probes.shallow import ALIGN, MAX_OBJECT_BYTES, managed_dict_extra, object_size, rows_by_type, shallow_size
from tokdiag.probes.vocab import VOCAB_MIN, vocab_dict_size, vocab_entries_size

__all__ = ["ALIGN", "MAX_OBJECT_BYTES", "deep_size", "deep_sizes", "referents", "shallow_size", "unsized_message"]

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
        fast = vocab_dict_size(obj)
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
            refs = speedups.referents(top.obj, top.start, top.step)  # type: ignore[attr-defined]
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
    size = object_size(o)
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
            rows = rows_by_type(new)
            kinds = [r[0] for r in rows]
            for t, _n, b, _o, bad in rows:
                total += b
                if bad:
                    name = type_name(t)
                    missed[name] = missed.get(name, 0) + bad
            del rows
            total += managed_dict_extra(new, kinds)
            del kinds
        group: list[Any] = []  # wide containers small enough to list together
        n_group = 0
        for o in wide:
            total += _wide_size(o, missed)
            n = len(o)  # an exact builtin container: its own C length
            if type(o) is dict:
                if n >= VOCAB_MIN:
                    entries = vocab_entries_size(o, ids)  # vocabularies: entries sized in bulk, not walked
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
