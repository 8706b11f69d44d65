"""Census probe: count and shallow bytes per type in one pass over the heap.

Two implementations give identical numbers (``tests/test_census_exact.py``):

- ``tokdiag._speedups`` (``tokdiag/_speedups.c``, built by ``pip install`` when a
  C compiler is there): one C loop, the type looked up in a pointer-keyed
  table, the size read by calling the type's C ``__sizeof__`` directly;
- the numpy path, used when the extension is not built
  (:func:`tokdiag.probes.sizing._rows_numpy`): C loops only, over slices of the
  heap: ``map(type, slice)`` turned into dense type codes by id and counted
  with ``numpy.bincount``; fixed-size types are ``count * size``; objects of
  types whose instances vary in size (``dict``, ``list``, ``tuple``, ...)
  are grouped by type and sized with one ``map(c_sizeof, group)`` per type.

Sizes are C-level sizes (:func:`tokdiag.probes.sizing.shallow_size`): the census
never runs code of the measured program. A ``__sizeof__`` written in Python
is not called (pandas' builds Series at every call; a ``MagicMock``'s makes
child mocks): such objects count the bytes of their C struct, a deliberate
departure from ``sys.getsizeof``. Classes are told apart by identity, never
hashed, so a metaclass's ``__hash__`` or ``__getattribute__`` never runs.

:data:`IMPLEMENTATION` names the one in use. ``bench/census.py`` measures
both against ``Counter(map(type, gc.get_objects()))``, objgraph and pympler.

Only gc-tracked objects are listed by ``gc.get_objects()``: atoms (``str``,
``bytes``, ``int``) and dicts of atoms mostly are not, so their bytes show
up under the container that holds them only in deep sizes (watch and cache
probes), never here. This is the census' meaning, as in objgraph.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from tokdiag._clevel import type_name
from tokdiag._native import speedups as _speedups
from tokdiag.probes.base import OnceWarnings, SnapshotContext
from tokdiag.records import BYTES, OBJECTS, Record
from tokdiag.probes.sizing import ALIGN, MAX_OBJECT_BYTES, Rows, Seen, _rows_numpy, shallow_size, unsized_message

__all__ = ["IMPLEMENTATION", "CensusProbe", "census", "take_census", "take_census_c", "take_census_numpy",
           "type_name"]

IMPLEMENTATION = "C" if _speedups is not None else "numpy"
"""Which census runs: ``"C"`` (tokdiag._speedups) or ``"numpy"`` (no compiler at install)."""

Owned = Seen | set[int] | None
"""What a census leaves out of ``unowned bytes``: a snapshot's :class:`Seen`, a set of ids, or nothing."""


def take_census(heap: list[Any], owned: Owned = None,
                unsized: dict[str, int] | None = None) -> dict[str, tuple[int, int, int]]:
    """``{type name: (count, bytes, unowned bytes)}`` over ``heap``.

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
        return take_census_numpy(heap, owned, unsized)
    return take_census_c(heap, owned, unsized)


def _owned_sorted(owned: Owned) -> np.ndarray | None:
    """The ids in ``owned`` as a sorted int64 array, or None when there are none."""
    if not owned:
        return None
    if type(owned) is Seen:
        return owned.sorted_ids()
    arr = np.fromiter(owned, dtype=np.int64, count=len(owned))
    arr.sort()
    return arr


def take_census_c(heap: list[Any], owned: Owned = None,
                  unsized: dict[str, int] | None = None) -> dict[str, tuple[int, int, int]]:
    """:func:`take_census` by ``tokdiag._speedups.count``: one C loop over ``heap``."""
    if _speedups is None:
        raise ImportError("tokdiag._speedups is not built (no C compiler at install); use take_census_numpy")
    if type(owned) is Seen and type(owned.ids) is _speedups.IdSet:
        arg: object = owned.ids  # looked up in its own table, no copy
    else:
        arg = _owned_sorted(owned)
    return _by_name(_speedups.count(heap, arg, ALIGN, MAX_OBJECT_BYTES), unsized)


def take_census_numpy(heap: list[Any], owned: Owned = None,
                      unsized: dict[str, int] | None = None) -> dict[str, tuple[int, int, int]]:
    """:func:`take_census` without the C extension (:func:`tokdiag.probes.sizing._rows_numpy`)."""
    return _by_name(_rows_numpy(heap, _owned_sorted(owned), MAX_OBJECT_BYTES), unsized)


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

    Bytes are C-level sizes (:func:`tokdiag.probes.sizing.shallow_size`): no
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

    To keep journals small only types that matter are written: at least
    ``min_bytes`` bytes or ``min_count`` objects, or a count that moved by
    ``min_growth`` since the first snapshot. Once a type is written it is
    written at every later snapshot (the probe holds only its name and first
    count) so its series stays continuous; a type first written late was
    below those thresholds before.

    Objects whose size cannot be read count 0 bytes; a
    :class:`~tokdiag.errors.TokdiagWarning` names their type once per run
    (``warned.messages``).
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
        self.warned = OnceWarnings()

    def collect(self, ctx: SnapshotContext) -> list[Record]:
        unsized: dict[str, int] = {}
        rows = take_census(ctx.heap, ctx.seen, unsized)
        for name, n in unsized.items():
            self.warned.warn(f"unsized {name}", "census: " + unsized_message({name: n}))
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
