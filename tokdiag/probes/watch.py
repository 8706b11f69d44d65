"""Watch probe: instances of named classes, their count and reachable bytes.

Patterns match classes by qualified name (``"app.agents.RewardAgent"``),
bare name (``"RewardAgent"``) or glob (``"*.MemoryEventMessage"``). A class
is matched against the patterns once and remembered by weak reference, so
the probe keeps no class (and no instance) alive.

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

from tokdiag.errors import ConfigError, TokdiagWarning
from tokdiag.probes.base import SnapshotContext
from tokdiag.probes.census import type_name
from tokdiag.records import BYTES, OBJECTS, Record
from tokdiag.probes.sizing import deep_sizes


def _matches(pattern: str, t: type) -> bool:
    qual = type_name(t)
    if pattern == qual:
        return True
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(qual, pattern)
    return "." not in pattern and getattr(t, "__name__", None) == pattern


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
            subs = type.__subclasses__(t) if isinstance(t, type) else []
        except TypeError:
            subs = []
        stack.extend(subs)
    return out


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
        # type -> pattern, by weak reference (classes can be garbage collected)
        self._decided: weakref.WeakKeyDictionary[type, str | None] = weakref.WeakKeyDictionary()
        self.matched: dict[str, set[str]] = {p: set() for p in self.patterns}
        self._primed = False

    def _pattern_for(self, t: type) -> str | None:
        try:
            return self._decided[t]
        except KeyError:
            pass
        except TypeError:  # a type that refuses weak references: decide every time
            return next((p for p in self.patterns if _matches(p, t)), None)
        found = next((p for p in self.patterns if _matches(p, t)), None)
        self._decided[t] = found
        if found is not None:
            self.matched[found].add(type_name(t))
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
        kinds = set(map(type, heap))
        watched = {t for t in kinds if self._pattern_for(t) is not None}
        # Count every class a pattern has matched so far, even at zero instances.
        by_class: dict[str, list[Any]] = {name: [] for names in self.matched.values() for name in names}
        if watched:
            for obj in compress(heap, map(watched.__contains__, map(type, heap))):
                by_class.setdefault(type_name(type(obj)), []).append(obj)
        recs: list[Record] = []
        order = {p: i for i, p in enumerate(self.patterns)}

        def rank(name: str) -> int:
            return min((order[p] for p, names in self.matched.items() if name in names), default=len(order))

        try:
            for name in sorted(by_class, key=lambda n: (rank(n), n)):
                instances = by_class[name]
                recs.append(Record("watch", name, "count", float(len(instances)), OBJECTS))
                if self.sizes:
                    recs.append(Record("watch", name, "bytes", float(deep_sizes(instances, ctx.seen)), BYTES))
        finally:
            by_class.clear()
            del kinds, watched
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
        names = sorted({getattr(t, "__name__", "") for t in classes} | {type_name(t) for t in classes})
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


