"""The heap, and the backward walk over it: who refers to the sampled instances, and who to those.

The heap is every gc-tracked object, oldest first (:func:`heap`). The C
walk (``tokdiag._heapwalk``) reads it straight from the collector's
generation lists when it can (:data:`DIRECT`), with no list of a million
objects to build and free; otherwise it reads a ``gc.get_objects()`` list.
:func:`Walk` searches back from the sampled instances in *passes* over the
heap rather than one heap scan per level of a breadth-first search
(:class:`PyWalk` is the same algorithm in Python, with the same results):

- one pass traverses every object once (its C ``tp_traverse``, what
  ``gc.get_referents`` does); an object that refers to a reached object is
  reached at once, so the objects after it in the same pass see it;
- the first pass runs newest first. A leak is old containers (a module's
  dict, a registry, a history list) holding new objects, so each holder on
  the chain comes after what it holds and the whole chain, however long, is
  found in that one pass; each later pass turns round and follows one more
  change of direction (a new message holding an old agent);
- an instance's own ``__dict__`` (an exact dict nothing else refers to) is
  looked through in the same step: CPython 3.11+ makes it on first use
  (``vars(obj)``, many attributes), newer than the values in it, which
  would otherwise turn the pass round twice;
- the namespaces of loaded modules and ``sys.modules`` are reached but never
  searched past (roots); a class is reached only as the root of its own
  namespace dict, never through its instances; objects named as blocked
  (tokdiag's own) are never reached.

A pass that reaches nothing new means the search is complete. Every
reference found between reached objects is recorded, as a pair of node
numbers (holder, held), at least once. Objects tracked after the walk was
made (the search's own lists) are never part of its heap.

``walk.outside(objs, holders)`` counts, per object, the references that
come from outside Python's heap: its reference count minus what the heap's
objects, the walk and the lists named as holders hold, which is how the
collector itself tells an object held from C (``atexit``, a C extension's
state, a running frame's stack) from garbage.

:func:`newest` picks the sampled instances: the last ones of the heap.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Sequence
from functools import partial
from itertools import compress, islice
from operator import is_not
from typing import Any, TypeGuard

import numpy as np

from tokdiag._clevel import flags, is_subtype

try:
    from tokdiag import _heapwalk
except ImportError:  # built without a C compiler: the Python loops below
    _heapwalk = None

__all__ = ["CLASS", "DIRECT", "PLAIN", "ROOT", "PyWalk", "Walk", "heap", "newest"]

PLAIN, ROOT, BLOCKED, CLASS = 0, 1, 2, 3
"""Kinds of known objects: reached and searched past, a root, never reached, a class (root of its namespace)."""

DIRECT = _heapwalk is not None and _heapwalk.direct()
"""Whether the C walk reads the collector's generation lists here (else a ``gc.get_objects()`` list)."""

_BLOCK = 256
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class defined in Python
_TYPE_DICT = type.__dict__["__dict__"].__get__  # a mappingproxy of a class's dict, from the C struct
# a C-level predicate (no Python frame per item); a TypeGuard so that filter(_not_none, ...) yields ints
_not_none: Callable[[int | None], TypeGuard[int]] = partial(is_not, None)  # type: ignore[assignment]


def heap() -> list[Any]:
    """Every gc-tracked object, oldest first: generation 2, then 1, then 0, each in the collector's order.

    The collector appends an object to the youngest generation when it starts
    tracking it and keeps that order when it promotes survivors, so this is
    allocation order, except that a collection moves an object whose only
    referrers come after it behind them. The lists of generations 0 and 1
    are taken first (they are then young objects themselves, not in
    generation 2), so the result never contains itself or them.
    """
    g0 = gc.get_objects(0)
    g1 = gc.get_objects(1)
    out = gc.get_objects(2)
    out += g1
    out += g0
    return out


def newest(classes: Sequence[type], limit: int, objs: list[Any] | None = None, until: Any = None) -> list[Any]:
    """Up to ``limit`` objects whose type is exactly one of ``classes`` (by identity), newest first.

    From the heap: ``objs`` (a :func:`heap` list), else the collector's lists.
    With ``until`` (a tracked object), only the objects after it.
    """
    if _heapwalk is not None and (objs is not None or DIRECT):
        return _heapwalk.newest(list(classes), limit, objs, until)
    rev = (heap() if objs is None else objs)[::-1]
    if until is not None:
        ids = list(map(id, rev))
        if id(until) in ids:
            del rev[ids.index(id(until)):]  # int comparisons only: no __eq__ of the program's runs
    kinds = {id(t) for t in classes}
    return list(islice(compress(rev, map(kinds.__contains__, map(id, map(type, rev)))), limit))


def Walk(seeds: Sequence[Any], roots: Sequence[Any], blocked: Sequence[Any], max_nodes: int = 1 << 22) -> Any:  # noqa: N802
    """A new search: ``tokdiag._heapwalk.Walk`` when the extension was built (on the collector's lists
    when :data:`DIRECT`, else on a :func:`heap` list), else :class:`PyWalk`."""
    if _heapwalk is None:
        return PyWalk(seeds, roots, blocked, max_nodes)
    return _heapwalk.Walk(seeds, roots, blocked, max_nodes, None if DIRECT else heap())


class PyWalk:
    """The search of ``tokdiag._heapwalk.Walk`` in Python, on a :func:`heap` list (see the module docstring)."""

    direct = False

    def __init__(self, seeds: Sequence[Any], roots: Sequence[Any], blocked: Sequence[Any],
                 max_nodes: int = 1 << 22) -> None:
        self._heap = heap()  # first: the lists below (holding the seeds) are not part of it
        self._slots: dict[int, list[int]] = {}  # id -> [node or -1, kind]
        self._plain: set[int] = set()  # ids of the reached objects that are searched past
        self._objs: list[Any] = []
        self._kinds = bytearray()
        self._added: list[int] = []
        self._edges: list[int] = []
        self._pass = 0
        self._max = max_nodes
        self.truncated = False
        for o in seeds:
            s = self._slots.setdefault(id(o), [-1, PLAIN])
            if s[0] < 0:
                self._reach(o, s)
        for group, kind in ((roots, ROOT), (blocked, BLOCKED)):
            for o in group:
                self._slots.setdefault(id(o), [-1, kind])
        self._known = list(roots) + list(blocked)  # held, as the C walk holds them

    def __len__(self) -> int:
        return len(self._objs)

    def _reach(self, o: Any, s: list[int]) -> int:
        if s[0] >= 0:
            return s[0]
        if len(self._objs) >= self._max:
            self.truncated = True
            return -1
        s[0] = len(self._objs)
        if s[1] == PLAIN:
            self._plain.add(id(o))
        self._objs.append(o)
        self._kinds.append(s[1])
        self._added.append(self._pass)
        return s[0]

    def _is_new(self, held: int) -> bool:
        """Whether a reference to ``held`` may not be recorded yet (``edge_may_be_new`` in C)."""
        a = self._added[held]
        return a >= self._pass - 1 and (a > 0 or self._pass == 1)

    def _is_plain(self, oid: int) -> bool:
        s = self._slots.get(oid)
        return s is not None and s[0] >= 0 and s[1] == PLAIN

    def run(self, newest_first: bool) -> int:
        """One pass over the heap (newest first when asked); the number of objects reached in it."""
        objs = self._heap
        before = len(self._objs)
        self._pass += 1
        n = len(objs)
        starts = range((n - 1) // _BLOCK * _BLOCK, -1, -_BLOCK) if newest_first else range(0, n, _BLOCK)
        for start in starts:
            stop = min(start + _BLOCK, n)
            if self._plain.isdisjoint(map(id, gc.get_referents(*objs[start:stop]))):
                continue  # nothing in this block refers to a reached object (a class refers to its dict)
            for j in range(stop - 1, start - 1, -1) if newest_first else range(start, stop):
                self._one(objs[j])  # (no copy of the block holds the objects while they are looked at)
        return len(self._objs) - before

    def _one(self, o: Any) -> None:
        slots = self._slots
        so = slots.get(id(o))
        if so is not None and so[1] == BLOCKED:
            return
        if is_subtype(type(o), type):
            d = gc.get_referents(_TYPE_DICT(o))  # the mappingproxy's one referent: the class's own dict
            sd = slots.get(id(d[0])) if d else None
            if sd is None or sd[0] < 0 or sd[1] != PLAIN:
                return
            if so is None:
                so = slots[id(o)] = [-1, CLASS]
            holder = self._reach(o, so)
            if holder >= 0 and self._is_new(sd[0]):
                self._edges += (holder, sd[0])
            return
        hits: list[int] = []
        seen: set[int] = set()
        looks: list[tuple[Any, list[int]]] = []  # dicts looked through, with what they hold
        heap_owner = flags(type(o)) & _HEAPTYPE
        kids = gc.get_referents(o)
        c = None
        for c in kids:
            if c is o:
                continue
            s = slots.get(id(c))
            if s is None:
                # o's own __dict__: references are o's, ``kids``, ``c``, getrefcount's argument, the heap list's
                if heap_owner and type(c) is dict and sys.getrefcount(c) == 4 + gc.is_tracked(c):
                    inner = [slots[id(x)][0] for x in gc.get_referents(c)
                             if x is not c and x is not o and self._is_plain(id(x))]
                    if inner:
                        looks.append((c, inner))
                continue
            if s[0] >= 0 and s[1] == PLAIN and s[0] not in seen:
                seen.add(s[0])
                hits.append(s[0])
        del kids, c
        if not hits and not looks:
            return
        if so is None:
            so = slots[id(o)] = [-1, PLAIN]
        holder = self._reach(o, so)
        if holder < 0:
            return
        for h in hits:
            if self._is_new(h):
                self._edges += (holder, h)
        for d, inner in looks:
            dn = self._reach(d, slots.setdefault(id(d), [-1, PLAIN]))
            if dn >= 0:
                self._edges += (holder, dn)
                for h in inner:
                    self._edges += (dn, h)

    def nodes(self) -> list[Any]:
        return list(self._objs)

    def kinds(self) -> bytes:
        return bytes(self._kinds)

    def edges(self) -> bytes:
        return np.asarray(self._edges, dtype=np.int32).tobytes()

    def outside(self, objs: list[Any], holders: tuple[list[Any], ...]) -> list[int]:
        """Per object of ``objs``: its references from outside the heap, this walk, ``objs`` and ``holders``.

        Its reference count, minus the references the heap's objects hold to
        it, minus its occurrences in the heap list, in this walk's own lists,
        in ``objs`` and in each list of ``holders``. The caller must hold no
        other reference to these objects (no local variable bound to one).
        """
        want: dict[int, int] = {}
        for k, i in enumerate(map(id, objs)):
            want.setdefault(i, k)
        counts = [0] * len(objs)
        get = want.get
        objs_heap = self._heap
        for s in range(0, len(objs_heap), _BLOCK):
            for k in filter(_not_none, map(get, map(id, gc.get_referents(*objs_heap[s:s + _BLOCK])))):
                counts[k] += 1
        for lst in (objs_heap, self._objs, self._known, objs, *holders):
            for k in filter(_not_none, map(get, map(id, lst))):
                counts[k] += 1
        out = [0] * len(objs)
        for k in range(len(objs)):
            # getrefcount's argument is the only reference this loop adds (objs[k] is bound to no name)
            out[k] = sys.getrefcount(objs[k]) - 1 - counts[want[id(objs[k])]]
        return out
