"""Watch probe: instances of named classes, their count and reachable bytes.

Patterns match classes by qualified name (``"app.agents.RewardAgent"``),
bare name (``"RewardAgent"``) or glob: a glob with a dot is matched against
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

Reachable bytes are partitioned: the snapshot's shared ``Seen`` already
holds what the caches own, and classes are sized in pattern order, so an
agent referenced by a message is counted once, under whichever was listed
first.
"""

from __future__ import annotations

import difflib
import fnmatch
import warnings
import weakref
from itertools import compress
from typing import Any, Sequence

from tokdiag._clevel import HAVE_GC, bare_name, classes_hash_by_identity, distinct_types, flags, is_subtype, type_name
from tokdiag.errors import ConfigError, TokdiagWarning
from tokdiag.probes.base import OnceWarnings, SnapshotContext
from tokdiag.records import BYTES, OBJECTS, Record
from tokdiag.probes.sizing import deep_sizes, unsized_message


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _matches(pattern: str, t: type) -> bool:
    qual = type_name(t)
    if pattern == qual:
        return True
    if _is_glob(pattern):
        return fnmatch.fnmatchcase(qual, pattern) or ("." not in pattern and fnmatch.fnmatchcase(bare_name(t), pattern))
    return "." not in pattern and bare_name(t) == pattern


def all_classes() -> list[type]:
    """Every class currently alive, found by walking ``__subclasses__`` from ``object``."""
    out: list[type] = []
    seen: set[int] = set()
    stack: list[type] = [object]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        out.append(t)
        try:
            subs = type.__subclasses__(t) if is_subtype(type(t), type) else []
        except TypeError:
            subs = []
        stack.extend(subs)
    return out


def untracked_message(name: str) -> str:
    """The warning for a watched class whose instances the garbage collector never lists.

    >>> untracked_message("numpy.ndarray")[:60]
    'watch: numpy.ndarray instances are not tracked by the garbag'
    """
    return (f"watch: {name} instances are not tracked by the garbage collector (the class has no GC "
            "support), so gc.get_objects() never lists them and they cannot be counted; no series is "
            "recorded for it. Watch the class that holds them, or name their container as a cache")


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
            decided[key] = (weakref.ref(t, lambda _r, key=key: decided.pop(key, None)), found)
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
        by_id = not classes_hash_by_identity()  # a metaclass's own __hash__/__eq__ must not run
        watched = {id(t) if by_id else t for t in distinct_types(heap) if self._pattern_for(t) is not None}
        # Count every class a pattern has matched so far, even at zero instances (not the untracked ones).
        by_class: dict[str, list[Any]] = {name: [] for names in self.matched.values() for name in names
                                          if name not in self._untracked}
        if watched:
            kinds = map(id, map(type, heap)) if by_id else map(type, heap)
            for obj in compress(heap, map(watched.__contains__, kinds)):
                by_class.setdefault(type_name(type(obj)), []).append(obj)
        recs: list[Record] = []
        order = {p: i for i, p in enumerate(self.patterns)}

        def rank(name: str) -> int:
            return min((order[p] for p, names in self.matched.items() if name in names), default=len(order))

        unsized: dict[str, int] = {}
        try:
            for name in sorted(by_class, key=lambda n: (rank(n), n)):
                instances = by_class[name]
                recs.append(Record("watch", name, "count", float(len(instances)), OBJECTS))
                if self.sizes:
                    recs.append(Record("watch", name, "bytes", float(deep_sizes(instances, ctx.seen, unsized)), BYTES))
        finally:
            by_class.clear()
            del watched
        for name, n in unsized.items():
            self.warned.warn(f"unsized {name}", "watch: " + unsized_message({name: n}))
        return recs

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


