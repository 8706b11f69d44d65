"""Census probe: count and shallow bytes per type in one pass over the heap.

Two implementations give identical numbers (``tests/test_census_exact.py``):

- ``tokdiag._speedups`` (``tokdiag/_speedups.c``, built by ``pip install`` when a
  C compiler is there): one C loop, the type looked up in a pointer-keyed
  table, the size read by calling the type's C ``__sizeof__`` directly;
- the numpy path, used when the extension is not built
  (:func:`tokdiag.probes.shallow.rows_numpy`): C loops only, over slices of the
  heap: ``map(type, slice)`` turned into dense type codes by id and counted
  with ``numpy.bincount``; fixed-size types are ``count * size``; objects of
  types whose instances vary in size (``dict``, ``list``, ``tuple``, ...)
  are grouped by type and sized with one ``map(c_sizeof, group)`` per type.

Sizes are C-level sizes (:func:`tokdiag.probes.shallow.shallow_size`): the census
never runs code of the measured program. A ``__sizeof__`` written in Python
is not called (pandas' builds Series at every call; a ``MagicMock``'s makes
child mocks): such objects count the bytes of their C struct, a deliberate
departure from ``sys.getsizeof``. Classes are told apart by identity, never
hashed, so a metaclass's ``__hash__`` or ``__getattribute__`` never runs.

:data:`IMPLEMENTATION` names the one in use. ``bench/census.py`` measures
both against ``Counter(map(type, gc.get_objects()))``, objgraph and pympler.

Objects the garbage collector does not track
------------------------------------------------
``gc.get_objects()`` lists only gc-tracked objects: atoms (``str``, ``bytes``,
``bytearray``, ``int``, ``float``) never are, and CPython untracks tuples and
dicts that hold only such atoms. A leak of ``sink.append(bytearray(10_000))``
is invisible to a census of the listed heap (objgraph's meaning). With
``untracked=True`` (what :class:`CensusProbe` runs) the census also counts
every untracked object that a listed object references, directly or through
other untracked ones (a tuple of strings), each once, under its own type,
with its C-level size: the referents come from the C ``tp_traverse`` of each
object (what ``gc.get_referents`` returns), and the keys of every dict are
read too, because CPython 3.11+ does not visit the keys of a dict whose keys
are all ``str`` (they cannot make a cycle) though they are data. Classes are
not counted (program structure), and neither is what only a running frame,
a C extension's static state or an object made after the heap was listed
refers to.

The C loop looks an object up in its id table only when more than one
reference points to it (``Py_REFCNT > 1``): an object with one reference
can be met once only, and most strings and numbers of a heap are held by
one container. On a heap of ~1M tracked objects that reach ~850k untracked
ones, the census with untracked objects costs about 1.5x the counting
floor, 3x the tracked-only census (``bench/census.py``; figures in
bench/README.md). The numpy path does the same walk with
``gc.get_referents`` in slices and costs several times more.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from itertools import filterfalse
from typing import Any, cast

import numpy as np
import pandas as pd

from tokdiag._clevel import type_name
from tokdiag._native import speedups as _speedups
from tokdiag.errors import check_whole
from tokdiag.probes.base import OnceWarnings, SnapshotContext
from tokdiag.probes.seen import IdSet, Seen
from tokdiag.probes.shallow import ALIGN, CHUNK, MAX_OBJECT_BYTES, Rows, rows_numpy, shallow_size
from tokdiag.probes.sizing import referents, unsized_message
from tokdiag.records import BYTES, OBJECTS, Record

__all__ = ["IMPLEMENTATION", "CensusProbe", "census", "take_census", "take_census_c", "take_census_numpy",
           "type_name"]

IMPLEMENTATION = "C" if _speedups is not None else "numpy"
"""Which census runs: ``"C"`` (tokdiag._speedups) or ``"numpy"`` (no compiler at install)."""

_NO_SKIP: frozenset[type] = frozenset()

Owned = Seen | set[int] | None
"""What a census leaves out of ``unowned bytes``: a snapshot's :class:`Seen`, a set of ids, or nothing."""


def take_census(heap: list[Any], owned: Owned = None, unsized: dict[str, int] | None = None, *,
                untracked: bool = False, skip: Sequence[object] = ()) -> dict[str, tuple[int, int, int]]:
    """``{type name: (count, bytes, unowned bytes)}`` over ``heap``.

    With ``untracked``, the objects the gc does not track that the objects
    of ``heap`` reach are counted too, each once, with their type (see the
    module docstring); the referents of the objects in ``skip`` (tokdiag's
    own id sets) are not followed.

    ``unowned bytes`` leaves out the objects in ``owned`` (a :class:`Seen`
    or a set of ids: bytes a cache or watched class already owns); it
    equals ``bytes`` when ``owned`` is None or empty. Bytes per type are
    identical to summing the C-level size rounded up to 8 over every object
    (``sys.getsizeof`` for every class without a Python ``__sizeof__``),
    whichever :data:`IMPLEMENTATION` runs. Objects whose size cannot be
    read count 0 bytes; ``unsized``, when given, receives ``{type name:
    number of them}``.
    """
    if _speedups is None:
        return take_census_numpy(heap, owned, unsized, untracked=untracked, skip=skip)
    return take_census_c(heap, owned, unsized, untracked=untracked, skip=skip)


def _owned_sorted(owned: Owned) -> np.ndarray | None:
    """The ids in ``owned`` as a sorted int64 array, or None when there are none."""
    if not owned:
        return None
    if type(owned) is Seen:
        return owned.sorted_ids()
    arr = np.fromiter(cast("set[int]", owned), dtype=np.int64, count=len(owned))  # not a Seen: a set of ids
    arr.sort()
    return arr


def take_census_c(heap: list[Any], owned: Owned = None, unsized: dict[str, int] | None = None, *,
                  untracked: bool = False, skip: Sequence[object] = ()) -> dict[str, tuple[int, int, int]]:
    """:func:`take_census` by ``tokdiag._speedups.count``: one C loop over ``heap``."""
    if _speedups is None:
        raise ImportError("tokdiag._speedups is not built (no C compiler at install); use take_census_numpy")
    if type(owned) is Seen and type(owned.ids) is _speedups.IdSet:
        arg: object = owned.ids  # looked up in its own table, no copy
    else:
        arg = _owned_sorted(owned)
    return _by_name(_speedups.count(heap, arg, ALIGN, MAX_OBJECT_BYTES, untracked, tuple(skip)), unsized)


def take_census_numpy(heap: list[Any], owned: Owned = None, unsized: dict[str, int] | None = None, *,
                      untracked: bool = False, skip: Sequence[object] = ()) -> dict[str, tuple[int, int, int]]:
    """:func:`take_census` without the C extension (:func:`tokdiag.probes.shallow.rows_numpy`)."""
    owned_sorted = _owned_sorted(owned)
    rows = rows_numpy(heap, owned_sorted, MAX_OBJECT_BYTES)
    if untracked:
        rows += _untracked_rows_numpy(heap, owned_sorted, skip)
    return _by_name(rows, unsized)


_UNTRACKED_BATCH = 65536
"""Untracked objects sized together by :func:`rows_numpy` (each call has a fixed cost)."""


def _untracked_rows_numpy(heap: list[Any], owned_sorted: np.ndarray | None, skip: Sequence[object]) -> Rows:
    """:data:`Rows` of the untracked objects that ``heap`` reaches, each once (the numpy path's walk).

    Level by level over slices of the heap: ``gc.get_referents`` of a slice
    plus the keys of its dicts (:func:`tokdiag.probes.sizing.referents`),
    those the gc does not track (``itertools.filterfalse(gc.is_tracked)``),
    the ones not met before (an id set), then their own referents in turn
    (untracked tuples and dicts hold more). What is found is sized by
    :func:`rows_numpy` in batches of :data:`_UNTRACKED_BATCH`.
    """
    skip_ids = {id(o) for o in skip}
    met = IdSet()
    rows: Rows = []
    found: list[Any] = []
    for start in range(0, len(heap), 4 * CHUNK):
        level = heap[start:start + 4 * CHUNK]
        if skip_ids:
            level = [o for o in level if id(o) not in skip_ids]
        while level:
            level = met.take_new(list(filterfalse(gc.is_tracked, referents(level))), _NO_SKIP)  # no classes
            found += level
        if len(found) >= _UNTRACKED_BATCH:
            rows += rows_numpy(found, owned_sorted, MAX_OBJECT_BYTES)
            found = []
    if found:
        rows += rows_numpy(found, owned_sorted, MAX_OBJECT_BYTES)
    del found, level
    return rows


def _by_name(rows: Rows, unsized: dict[str, int] | None) -> dict[str, tuple[int, int, int]]:
    """``{type name: (count, bytes, unowned bytes)}`` from per-type rows (owned bytes -> unowned).

    Two distinct classes with one qualified name are added together.
    """
    out: dict[str, tuple[int, int, int]] = {}
    for t, n, b, ob, bad in rows:
        name = type_name(t)
        u = b - ob
        prev = out.get(name)
        if prev is not None:
            n, b, u = n + prev[0], b + prev[1], u + prev[2]
        out[name] = (n, b, u)
        if bad and unsized is not None:
            unsized[name] = unsized.get(name, 0) + bad
    return out


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
        size = shallow_size(own)
        n, b, u = n - 1, b - size, u - size
    rows[name] = (n, b, u)


def census(*, collect: bool = True) -> pd.DataFrame:
    """Count and shallow bytes per type over the whole heap, largest first.

    Bytes are C-level sizes (:func:`tokdiag.probes.shallow.shallow_size`): no
    ``__sizeof__`` written in Python runs.

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

    Counts untracked objects too (``untracked=True``, the default: a
    ``bytearray`` leak is ``builtins.bytearray``, not "unexplained"); see
    the module docstring for what that walk reaches and costs.

    To keep journals small not every type is written. A type is written from
    the first snapshot at which either holds:

    - it is large: at least ``min_bytes`` bytes or ``min_count`` objects;
    - it grew (or shrank) since the run's first snapshot by at least
      ``min_growth`` objects or ``min_bytes_growth`` bytes: the practical
      minimum of the verdicts (8 objects, 64 KiB), so a class made once per
      step is written after 8 steps, within three snapshots at ``every=3``.
      At most ``max_new`` such types start being written at one snapshot
      (those that changed most in bytes, then in count) and ``max_growers``
      in a run; past that a :class:`~tokdiag.errors.TokdiagWarning` says so.
      A new agent per task grows a whole object graph by one instance a
      task, types of equal size that bytes cannot rank: in real AWorld 0.3.2
      (``tests/test_owners_aworld.py``, ``every=5``) 81 types pass the
      minimum at one snapshot, ~100 over the run, ``httpx.Client`` among
      them. ``max_new=100`` writes them all when they pass it (with 20,
      ``httpx.Client`` waited until step 20).

    Once written, a type is written at every later snapshot (the probe keeps
    its name) so its series stays continuous. A type first written late
    whose first snapshot held some of it also gets ``count_at_start``,
    ``bytes_at_start`` and ``unowned_bytes_at_start``, its figures at the
    run's first snapshot, once: the ledger measures its growth from there
    (without them it would count everything the type held at the start as
    growth). The probe keeps every type's first figures, 24 bytes a type.

    Objects whose size cannot be read count 0 bytes; a
    :class:`~tokdiag.errors.TokdiagWarning` names their type once per run
    (``warned.messages``).
    """

    name = "census"

    def __init__(self, *, min_bytes: int = 64 * 1024, min_count: int = 500, min_growth: int = 8,
                 min_bytes_growth: int = 64 * 1024, max_new: int = 100, max_growers: int = 200,
                 untracked: bool = True) -> None:
        given = {"min_bytes": min_bytes, "min_count": min_count, "min_growth": min_growth,
                 "min_bytes_growth": min_bytes_growth, "max_new": max_new, "max_growers": max_growers}
        for arg, value in given.items():
            check_whole(arg, value, 0, f"CensusProbe takes a whole number >= 0, e.g. {arg}=8")
        self.min_bytes = min_bytes
        self.min_count = min_count
        self.min_growth = min_growth
        self.min_bytes_growth = min_bytes_growth
        self.max_new = max_new
        self.max_growers = max_growers
        self.untracked = untracked
        self._kept: set[str] = set()
        self._growers = 0
        self._first: dict[str, int] | None = None  # type name -> row of _start
        self._start = np.zeros((0, 3), dtype=np.int64)  # count, bytes, unowned bytes at the first snapshot
        self.warned = OnceWarnings()

    def collect(self, ctx: SnapshotContext) -> list[Record]:
        unsized: dict[str, int] = {}
        rows = take_census(ctx.heap, ctx.seen, unsized, untracked=self.untracked, skip=ctx.own_containers())
        for name, n in unsized.items():
            self.warned.warn(f"unsized {name}", "census: " + unsized_message({name: n}))
        _leave_out_tokdiag(rows, ctx)
        if self._first is None:
            self._first = {name: i for i, name in enumerate(rows)}
            self._start = np.array(list(rows.values()), dtype=np.int64).reshape(-1, 3)
        recs: list[Record] = []
        for name in self._new_growers(rows):
            i = self._first.get(name)
            if i is not None and self._start[i].any():
                n0, b0, u0 = (float(v) for v in self._start[i])
                recs += [Record("census", name, "count_at_start", n0, OBJECTS),
                         Record("census", name, "bytes_at_start", b0, BYTES),
                         Record("census", name, "unowned_bytes_at_start", u0, BYTES)]
        for name, (n, b, u) in rows.items():
            if name not in self._kept:
                if b < self.min_bytes and n < self.min_count:
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

    def _new_growers(self, rows: dict[str, tuple[int, int, int]]) -> list[str]:
        """Types not written yet that changed by the practical minimum since the first snapshot (added to ``_kept``)."""
        assert self._first is not None
        first, start = self._first, self._start
        moved: list[tuple[int, int, str]] = []
        for name, (n, b, _u) in rows.items():
            if name in self._kept:
                continue
            i = first.get(name)
            dn, db = (n, b) if i is None else (n - int(start[i, 0]), b - int(start[i, 1]))
            if abs(dn) >= self.min_growth or abs(db) >= self.min_bytes_growth:
                moved.append((abs(db), abs(dn), name))
        if not moved:
            return []
        moved.sort(reverse=True)
        room = min(self.max_new, self.max_growers - self._growers)
        if len(moved) > room:
            self.warned.warn("growers", f"census: {len(moved)} types changed by the practical minimum at one "
                                        f"snapshot; only the {max(room, 0)} that changed most in bytes are written "
                                        f"(max_new={self.max_new}, max_growers={self.max_growers} per run: raise "
                                        "them to see more)")
        chosen = [name for _db, _dn, name in moved[:max(room, 0)]]
        self._kept.update(chosen)
        self._growers += len(chosen)
        return chosen
