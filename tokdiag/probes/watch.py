"""Watch probe: instances of named classes, their count and reachable bytes.

Patterns match classes by qualified name (``"app.agents.RewardAgent"``),
the name a loaded module exports them under (``"asyncio.Task"``, which is
``_asyncio.Task``: read from the module's dict, no module ``__getattr__``
runs), bare name (``"RewardAgent"``) or glob: a glob with a dot is matched against
qualified names (``"*.MemoryEventMessage"``, ``"app.agents.*"``), one
without a dot against bare names as well (``"Reward*"``). A class is matched
against the patterns once and remembered by weak reference, so the probe
keeps no class (and no instance) alive. Classes are told apart by identity
and their names read from the C struct (:mod:`tokdiag._clevel`): a
metaclass's ``__hash__`` or ``__getattribute__`` never runs.

Instances are found in ``gc.get_objects()``, which lists only objects the
garbage collector tracks. Instances of a class without GC support (numpy's
``ndarray``, most C types) are never there: such a class gets no series at
all, and a :class:`~tokdiag.errors.TokdiagWarning` says so once, rather than
a count of 0 that reads as "none alive".

Instances are never listed together: one byte per heap object says which
watched class it belongs to, and instances are sized a few thousand at a
time, so the probe's own memory stays small with millions of instances
(issue 9, E15).

Reachable bytes are partitioned: the snapshot's shared ``Seen`` already
holds what the caches own, and classes are sized in pattern order, so an
agent referenced by a message is counted once, under whichever was listed
first.
"""

from __future__ import annotations

import difflib
import fnmatch
import sys
import types
import warnings
import weakref
from collections.abc import Iterator
from itertools import repeat
from operator import itemgetter
from typing import Any, Sequence

import numpy as np

from tokdiag._clevel import (
    HAVE_GC,
    bare_name,
    classes_hash_by_identity,
    distinct_types,
    flags,
    is_subtype,
    module_dict,
    subclasses_of,
    type_name,
)
from tokdiag.errors import ConfigError, TokdiagWarning
from tokdiag.probes.base import OnceWarnings, SnapshotContext
from tokdiag.probes.footprint import checkpoint
from tokdiag.probes.sizing import deep_sizes, unsized_message
from tokdiag.records import BYTES, OBJECTS, Record


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _matches(pattern: str, t: type) -> bool:
    qual = type_name(t)
    if pattern == qual:
        return True
    if _is_glob(pattern):
        return fnmatch.fnmatchcase(qual, pattern) or ("." not in pattern and fnmatch.fnmatchcase(bare_name(t), pattern))
    if "." not in pattern:
        return bare_name(t) == pattern
    return _exported(pattern) is t


def _exported(pattern: str) -> type | None:
    """The class a loaded module exports under the dotted name ``pattern`` (``"asyncio.Task"``), or None.

    Read from the module's own dict: a module's ``__getattr__`` never runs,
    and a module not imported yet exports nothing.
    """
    name, _, attr = pattern.rpartition(".")
    module = sys.modules.get(name)
    if module is None or not is_subtype(type(module), types.ModuleType):
        return None
    value = dict.get(module_dict(module), attr)
    return value if value is not None and is_subtype(type(value), type) else None


def all_classes() -> list[type]:
    """Every class currently alive, found by walking ``__subclasses__`` from ``object``."""
    return list(subclasses_of(object))


def untracked_message(name: str) -> str:
    """The warning for a watched class whose instances the garbage collector never lists.

    >>> untracked_message("numpy.ndarray")[:60]
    'watch: numpy.ndarray instances are not tracked by the garbag'
    """
    return (f"watch: {name} instances are not tracked by the garbage collector (the class has no GC "
            "support), so gc.get_objects() never lists them and they cannot be counted; no series is "
            "recorded for it. Watch the class that holds them, or name their container as a cache")


_BATCH = 4096
"""Instances sized per call of :func:`deep_sizes`."""

_SCAN = 1 << 20
"""Heap positions scanned per slice of the code array (8 MiB of positions at most)."""


def _class_codes(heap: list[Any], classes: list[type]) -> np.ndarray:
    """One small int per object of ``heap``: ``1 + i`` for an instance of ``classes[i]``, 0 otherwise.

    Classes are looked up by identity (by ``id`` when some metaclass alive
    defines its own ``__hash__``/``__eq__``, which must not run); one C
    loop, one byte per object while there are fewer than 255 classes.
    """
    dtype = np.uint8 if len(classes) < 255 else np.int32
    if not classes:
        return np.zeros(0, dtype=dtype)
    by_id = not classes_hash_by_identity()
    table: dict[Any, int] = {(id(t) if by_id else t): k + 1 for k, t in enumerate(classes)}
    kinds = map(id, map(type, heap)) if by_id else map(type, heap)
    codes = np.fromiter(map(table.get, kinds, repeat(0)), dtype=dtype, count=len(heap))
    checkpoint()
    return codes


def _batches(heap: list[Any], codes: np.ndarray, wanted: list[int]) -> Iterator[list[Any]]:
    """The heap objects whose code is in ``wanted``, in heap order, at most :data:`_BATCH` per list."""
    if not wanted or not codes.size:
        return
    for lo in range(0, len(codes), _SCAN):
        part = codes[lo:lo + _SCAN]
        hit = part == wanted[0]
        for c in wanted[1:]:
            hit |= part == c
        at = np.flatnonzero(hit)
        del hit
        for b in range(0, len(at), _BATCH):
            pos = (at[b:b + _BATCH] + lo).tolist()
            yield [heap[pos[0]]] if len(pos) == 1 else list(itemgetter(*pos)(heap))


class WatchProbe:
    """Count and partitioned reachable bytes of instances of the watched classes."""

    name = "watch"

    def __init__(self, patterns: Sequence[str], *, sizes: bool = True) -> None:
        if isinstance(patterns, str):
            patterns = [patterns]
        bad = [p for p in patterns if not isinstance(p, str) or not p.strip()]
        if bad:
            raise ConfigError(
                f"watch={list(patterns)!r}: {bad[0]!r} is not a class name; pass names such as "
                "'RewardAgent', 'app.agents.RewardAgent' or '*.MemoryEventMessage'"
            )
        self.patterns: list[str] = list(dict.fromkeys(p.strip() for p in patterns))
        self.sizes = sizes
        # id(type) -> (weak reference to it, matching pattern or None). Keyed by id: hashing a
        # class runs its metaclass's __hash__. An entry dies with its class.
        self._decided: dict[int, tuple[weakref.ref[type], str | None]] = {}
        self.matched: dict[str, set[str]] = {p: set() for p in self.patterns}
        self._untracked: set[str] = set()  # matched classes without GC support: never counted
        self.warned = OnceWarnings()
        self._primed = False

    def _pattern_for(self, t: type) -> str | None:
        key = id(t)
        hit = self._decided.get(key)
        if hit is not None and hit[0]() is t:
            return hit[1]
        found = next((p for p in self.patterns if _matches(p, t)), None)
        decided = self._decided
        try:
            decided[key] = (weakref.ref(t, lambda _r, key=key: decided.pop(key, None)), found)  # type: ignore[misc]
        except TypeError:  # a class that refuses weak references: decided again next time
            pass
        if found is not None:
            name = type_name(t)
            self.matched[found].add(name)
            if not flags(t) & HAVE_GC:
                self._untracked.add(name)
                self.warned.warn(f"untracked {name}", untracked_message(name))
        return found

    def _prime(self) -> None:
        """Match every class alive now, so a class with no instances yet is counted as 0."""
        for t in all_classes():
            self._pattern_for(t)
        self._primed = True

    def collect(self, ctx: SnapshotContext) -> list[Record]:
        if not self._primed:
            self._prime()
        heap = ctx.heap
        classes = [t for t in distinct_types(heap) if self._pattern_for(t) is not None]
        # Count every class a pattern has matched so far, even at zero instances (not the untracked ones).
        names = {name for names in self.matched.values() for name in names if name not in self._untracked}
        names.update(type_name(t) for t in classes)
        order = {p: i for i, p in enumerate(self.patterns)}

        def rank(name: str) -> int:
            return min((order[p] for p, names in self.matched.items() if name in names), default=len(order))

        codes = _class_codes(heap, classes)  # per heap object: 1 + index of its class in `classes`, or 0
        by_name: dict[str, list[int]] = {}
        for k, t in enumerate(classes):
            by_name.setdefault(type_name(t), []).append(k + 1)  # two classes of one name: one series
        del classes
        recs: list[Record] = []
        unsized: dict[str, int] = {}
        try:
            for name in sorted(names, key=lambda n: (rank(n), n)):
                count, size = self._measure(heap, codes, by_name.get(name, []), ctx, unsized)
                recs.append(Record("watch", name, "count", float(count), OBJECTS))
                if self.sizes:
                    recs.append(Record("watch", name, "bytes", float(size), BYTES))
        finally:
            del codes
        for name, n in unsized.items():
            self.warned.warn(f"unsized {name}", "watch: " + unsized_message({name: n}))
        return recs

    def _measure(self, heap: list[Any], codes: np.ndarray, wanted: list[int], ctx: SnapshotContext,
                 unsized: dict[str, int]) -> tuple[int, int]:
        """Count and reachable bytes of the heap objects whose code is in ``wanted``, in batches.

        The instances are never listed together: positions are found in
        slices of the code array and sized :data:`_BATCH` at a time, so the
        probe's own memory is one byte per heap object plus one batch.
        """
        count = size = 0
        for batch in _batches(heap, codes, wanted):
            count += len(batch)
            if self.sizes:
                size += deep_sizes(batch, ctx.seen, unsized)
            del batch
        return count, size

    def unmatched(self) -> dict[str, list[str]]:
        """Patterns that matched no class so far, each with close matches among loaded classes."""
        missing = [p for p in self.patterns if not self.matched[p]]
        if not missing:
            return {}
        # one last look: a class may exist with no instance alive
        classes = all_classes()
        for p in list(missing):
            for t in classes:
                if _matches(p, t):
                    self.matched[p].add(type_name(t))
            if self.matched[p]:
                missing.remove(p)
        if not missing:
            return {}
        names = sorted({bare_name(t) for t in classes} | {type_name(t) for t in classes})
        del classes
        out: dict[str, list[str]] = {}
        for p in missing:
            key = p.rsplit(".", 1)[-1].strip("*?[]") if any(c in p for c in "*?[") or "." in p else p
            pool = [n for n in names if "." not in n] if "." not in p else names
            close = difflib.get_close_matches(key if "." not in p else p, pool, n=3, cutoff=0.6)
            out[p] = close
        return out

    def warn_unmatched(self, stacklevel: int = 3) -> dict[str, list[str]]:
        """Warn (``TokdiagWarning``) for each pattern that matched no class anywhere in the process."""
        missing = self.unmatched()
        for p, close in missing.items():
            hint = f"; did you mean {', '.join(close)}?" if close else (
                "; check the spelling, or import the module that defines it before tracking")
            warnings.warn(
                f"watch: no class matches {p!r}{hint} (its count and bytes were not measured)",
                TokdiagWarning, stacklevel=stacklevel)
        return missing


