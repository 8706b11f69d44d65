"""Identities already counted: the set that splits bytes between owners, each byte to the first that reaches it.

One :class:`Seen` is shared by the probes of a snapshot (caches first, then
watched classes, then the census' unowned bytes): a byte reachable from an
earlier owner is not counted again by a later one. It holds identities only,
never the objects, so it keeps nothing alive.

The set behind it is ``tokdiag._speedups.IdSet`` when the extension is built:
a bitmap of the address space (1/64 of the memory the counted objects
span), filled and queried one batch of the walk at a time in C
(``take_new``: the objects of a batch not counted yet, each once, without
classes and the types the walk of :mod:`tokdiag.probes.sizing` skips, wide
containers put aside). Without a C compiler, :class:`_PyIdSet` does the same with a Python
set of ``id`` ints.

>>> seen, a = Seen(), [1, 2]
>>> a in seen, len(seen.ids.take_new([a, a], frozenset())), a in seen
(False, 1, True)
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import numpy as np

from tokdiag._clevel import distinct_types, is_subtype
from tokdiag._native import speedups

__all__ = ["IdSet", "Seen"]

_WIDE_KINDS = (dict, list, tuple, set, frozenset)
"""The exact builtin containers ``take_new`` puts aside as wide (as the C ``IdSet`` does)."""


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
        batch = dict(zip(map(id, objs), objs, strict=False))
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
        narrow: list[Any] = []
        for o in out:
            (wide if id(type(o)) in kinds and len(o) >= wide_min else narrow).append(o)
        return narrow

    def contains_any(self, objs: Iterable[object]) -> bool:
        return not self.ints.isdisjoint(map(id, objs))

    def add_all(self, objs: Iterable[object]) -> None:
        self.ints.update(map(id, objs))

    def ids(self) -> bytes:
        return np.fromiter(self.ints, dtype=np.uint64, count=len(self.ints)).tobytes()


IdSet = speedups.IdSet if speedups is not None else _PyIdSet  # the Python one without a C compiler


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
        self.ids = IdSet()

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
