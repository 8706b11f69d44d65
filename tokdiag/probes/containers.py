"""Containers probe: registries and caches that grow, found from the modules without being named.

Leaks in real libraries are often a module-level container nobody thought
of: ``logging.getLogger(f"req.{i}")`` fills ``Logger.manager.loggerDict``,
``warnings.warn`` with a new text each time fills the caller module's
``__warningregistry__``, a plugin loader fills ``sys.modules``, an
``lru_cache(maxsize=None)`` on request text, a ``_SESSIONS`` dict. This probe
finds such containers by itself and records their length, so an unbounded
one is a ``leak`` in ``entries`` whose subject is its path, and a bounded one
(``re``'s 512-pattern cache, an ``lru_cache(maxsize=128)``) reads ``bounded``.

What it finds
-------------
Starting from every module in ``sys.modules`` (tokdiag's own excepted), it
follows attributes for at most ``hops`` steps: module -> class -> attribute
-> attribute, as in ``logging:Logger.manager.loggerDict`` (a class of the
module, its ``manager`` class attribute, that instance's ``loggerDict``).
Classes are followed only from the module that defines them (a class
imported elsewhere is found under its own module), and instances through
their own attributes; a container ends a path. Containers are ``dict``,
``list``, ``set`` and ``collections.deque`` and their subclasses
(``OrderedDict``, ``defaultdict``, ``Counter``, a ``WeakValueDictionary``'s
``data``), and ``functools.lru_cache`` wrappers. Names starting with ``__``
are not followed (``__all__``, ``__path__``, ``__builtins__``), except
``__warningregistry__``. Each container is found once, under its shortest
path (then the first module in ``sys.modules`` order).

What it never does
------------------
It runs no code of the measured program: no ``getattr`` (a module's
``__getattr__``, a property), no ``len()`` of a subclass (``dict.__len__``
and the like, the C methods, whatever the subclass defines), no hashing
but of ``str`` keys. Module dicts are read through ``ModuleType``'s own
``__dict__`` member, class dicts from the C struct
(:func:`tokdiag._clevel.type_dict`), instance attributes from the instance's
own dict or slots (:func:`tokdiag._clevel.instance_attr`). Python 3.11+
keeps a fresh instance's attributes inline, without a dict, until someone
asks for ``__dict__``; asking would add a dict to every instance the walk
reads that had none (630 of the 735 it reads in a process that imported
AWorld), for the rest of the measured process' life. So an instance whose
dict was never made is read by name instead: its referents say which
values are worth following, and the names come from the ``co_names`` of its
class's methods (``self.loggerDict = {}`` in ``Manager.__init__``) and its
slots. An attribute set only from outside its class's methods is missed
there. Instances are read only when their class is written in Python and is
not a descriptor, an enum, an exception or a ``typing`` construct.

It holds nothing between snapshots but paths (tuples of names) and
lengths: each path is resolved again at every snapshot.

Cost
----
A full discovery walks every module (some 50k-130k attributes in a process
that imported pandas, or AWorld) at the first snapshot and every
``rediscover`` snapshots; in between, a module is walked again only when its
dict changed size (or it is new), one ``len`` per module per snapshot. At
every snapshot each container found is read again by its path (each holder
resolved once): see ``bench/containers.py`` and bench/README.md for the
figures. Only containers whose length moved by
``min_change`` entries (the verdicts' practical minimum, 8) since they were
found are written (a container that appeared during the run under a module
walked before, like the ``__warningregistry__`` a first warning makes, counts
from 0), at most ``max_new`` new ones a snapshot and ``max_series``
a run; once written, a container is written at every later snapshot:
``entries`` and ``bytes`` (its deep size, partitioned with the snapshot's
shared ``Seen`` like a cache's: the probe runs after caches and watched
classes and before the census, so the census' ``unowned_bytes`` leave its
objects out). A container a cache or a watched class already owns (its id
is in the snapshot's ``Seen``) is not written: it has its owner.

The probe's cost goes to ``tracker/tokdiag/containers_s``.
"""
from __future__ import annotations

import time

from tokdiag.errors import check_whole
from tokdiag.probes.base import OnceWarnings, SnapshotContext
from tokdiag.probes.container_paths import (
    LENGTH_OF_EXACT,
    MISSING,
    Path,
    getter,
    length,
    length_of,
    module_sizes,
    path_label,
    resolve,
)
from tokdiag.probes.container_walk import discover
from tokdiag.probes.sizing import deep_sizes, unsized_message
from tokdiag.records import BYTES, ENTRIES, SECONDS, Record

__all__ = ["ContainerProbe", "discover", "path_label"]


class ContainerProbe:
    """Lengths of the containers found from the modules; see the module docstring.

    ``hops``: attributes followed from a module (3 reaches
    ``logging:Logger.manager.loggerDict``). ``rediscover``: a full discovery
    every this many snapshots; in between, a module is walked again when its
    dict changed size (an attribute added: a new module-level dict, a
    ``__warningregistry__``), and a module imported since is walked.
    ``min_change``: entries a container must gain or lose since it was
    found (since the start, for one that appeared during the run) before it
    is written. ``max_new`` / ``max_series``: how many
    start being written at one snapshot / in a run (those that changed most
    first; a :class:`~tokdiag.errors.TokdiagWarning` when more qualify).
    """

    name = "containers"

    def __init__(self, *, hops: int = 3, rediscover: int = 20, min_change: int = 8, max_new: int = 10,
                 max_series: int = 50) -> None:
        given = {"hops": hops, "rediscover": rediscover, "min_change": min_change, "max_new": max_new,
                 "max_series": max_series}
        for arg, value in given.items():
            least = 0 if arg == "max_new" else 1
            check_whole(arg, value, least, f"ContainerProbe takes a whole number >= {least}, e.g. {arg}=10")
        self.hops = hops
        self.rediscover = rediscover
        self.min_change = min_change
        self.max_new = max_new
        self.max_series = max_series
        self._groups: dict[Path, dict[str, int]] = {}  # holder's path -> {attribute: length when found}
        self._kept: dict[Path, str] = {}  # written ones: path -> subject
        self._since = 0  # snapshots since the last full discovery
        self._sizes: dict[str, int] = {}  # the modules walked: name -> entries of their dict then
        self.discoveries = 0  # full ones
        self.warned = OnceWarnings()

    def __len__(self) -> int:
        """How many containers are watched now (found and still there)."""
        return sum(map(len, self._groups.values()))

    def _discover(self, full: bool) -> None:
        """A full discovery, or one of the modules whose dict changed size since they were walked (new ones too).

        A container found under a module walked before, at a name that had
        none, appeared during the run (a ``__warningregistry__`` made by the
        first warning, a cache dict assigned on first use): its length when
        found is growth, so its baseline is 0. Any other container's baseline
        is its length when first found.
        """
        sizes = module_sizes()
        walked = self._sizes
        if full:
            found = discover(self.hops)
            old, groups = self._groups, {}
            self._since = 0
            self.discoveries += 1
        else:
            changed = {name for name, n in sizes.items() if walked.get(name) != n}
            found = discover(self.hops, changed) if changed else {}
            old = groups = self._groups
        for path, n in found.items():
            holder, name = path[:-1], path[-1]
            before = old.get(holder)
            if before is not None and name in before:
                base = before[name]
            elif len(path) == 2 and path[0] in walked:
                base = 0
            else:
                base = n
            groups.setdefault(holder, {})[name] = base
        self._groups = groups
        self._sizes = sizes

    def collect(self, ctx: SnapshotContext) -> list[Record]:
        t0 = time.perf_counter()
        self._since += 1
        self._discover(full=not self.discoveries or self._since >= self.rediscover)
        self._keep(self._moved(ctx))
        recs: list[Record] = []
        unsized: dict[str, int] = {}
        for path, subject in self._kept.items():
            obj = resolve(path)
            n = None if obj is MISSING else length(obj)
            if n is None:  # not there any more: say so
                recs += [Record(self.name, subject, "entries", 0.0, ENTRIES),
                         Record(self.name, subject, "bytes", 0.0, BYTES)]
                continue
            recs.append(Record(self.name, subject, "entries", float(n), ENTRIES))
            recs.append(Record(self.name, subject, "bytes", float(deep_sizes([obj], ctx.seen, unsized)), BYTES))
            del obj
        for name, count in unsized.items():
            self.warned.warn(f"unsized {name}", "containers: " + unsized_message({name: count}))
        recs.append(Record("tracker", "tokdiag", "containers_s", time.perf_counter() - t0, SECONDS))
        return recs

    def _moved(self, ctx: SnapshotContext) -> list[tuple[int, Path]]:
        """``(change, path)`` of the containers not written yet whose length moved by ``min_change``.

        Each holder (a module, a class, an instance) is resolved once, then
        its containers read by name. A container gone (its holder gone, the
        attribute rebound to something else) is dropped until a discovery
        finds one there again.
        """
        moved: dict[int, tuple[int, Path]] = {}  # by id: one container found under two paths is written once
        kept = self._kept
        kept_ids = {id(obj) for obj in map(resolve, kept)}
        minimum = self.min_change
        for holder_path, names in list(self._groups.items()):
            holder = resolve(holder_path)
            get = None if holder is MISSING else getter(holder)
            if get is None:
                del self._groups[holder_path]
                continue
            gone: list[str] = []
            for name, n0 in names.items():
                obj = get(name, MISSING)
                length = LENGTH_OF_EXACT.get(id(type(obj))) or length_of(type(obj))
                if length is None:
                    gone.append(name)
                    continue
                n = length(obj)
                if abs(n - n0) >= minimum and obj not in ctx.seen:  # in seen: a cache or watched class owns it
                    path = (*holder_path, name)
                    if path not in kept and id(obj) not in kept_ids:
                        moved.setdefault(id(obj), (abs(n - n0), path))
            del holder, get
            for name in gone:
                del names[name]
        return list(moved.values())

    def _keep(self, moved: list[tuple[int, Path]]) -> None:
        if not moved:
            return
        moved.sort(reverse=True)
        room = max(0, min(self.max_new, self.max_series - len(self._kept)))
        if len(moved) > room:
            self.warned.warn("series", f"containers: {len(moved)} containers changed by {self.min_change} entries or "
                                       f"more at one snapshot; only the {room} that changed most are written (max_new="
                                       f"{self.max_new}, max_series={self.max_series} per run: raise them to see more)")
        for _change, path in moved[:room]:
            self._kept[path] = path_label(path)
