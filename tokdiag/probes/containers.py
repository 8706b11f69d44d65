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

import collections
import enum
import functools
import gc
import sys
import time
import types
from collections.abc import Callable, Collection, Iterator
from itertools import compress
from typing import Any

from tokdiag._clevel import (
    distinct_types,
    flags,
    instance_attr,
    is_one_of,
    is_subtype,
    lookup,
    module_name,
    mro,
    type_dict,
)
from tokdiag.errors import ConfigError
from tokdiag.probes.base import OnceWarnings, SnapshotContext
from tokdiag.probes.sizing import deep_sizes, unsized_message
from tokdiag.records import BYTES, ENTRIES, SECONDS, Record

__all__ = ["ContainerProbe", "discover", "path_label"]

_LRU = functools._lru_cache_wrapper
# the C member of ModuleType: a module subclass cannot override it
_MODULE_DICT = types.ModuleType.__dict__["__dict__"].__get__  # type: ignore[index]
_CODE = types.FunctionType.__dict__["__code__"].__get__
_FUNC = {id(classmethod): classmethod.__dict__["__func__"].__get__,
         id(staticmethod): staticmethod.__dict__["__func__"].__get__}
_LENGTHS: tuple[tuple[type, Callable[[Any], int]], ...] = (
    (dict, dict.__len__), (list, list.__len__), (set, set.__len__), (collections.deque, collections.deque.__len__))
_HEAPTYPE = 1 << 9
_MANAGED_DICT = 1 << 4
_MEMBER = types.MemberDescriptorType
_GETSET = types.GetSetDescriptorType
_MISSING = object()
_KEEP_DUNDER = "__warningregistry__"
_NOT_HOLDERS = frozenset({"typing", "typing_extensions", "enum"})
_NOT_HOLDER_BASES: tuple[type, ...] = (enum.Enum, BaseException, types.ModuleType)

Path = tuple[str, ...]
"""``(module, attribute, attribute, ...)``: ``("logging", "Logger", "manager", "loggerDict")``."""

# what a value is to the walk, decided once per class (by id) per discovery
_SKIP, _CONTAINER, _CLASS, _INSTANCE = range(4)


def path_label(path: Path) -> str:
    """``"logging:Logger.manager.loggerDict"``: the subject of a container, a ``"module:attr"`` target.

    >>> path_label(("logging", "Logger", "manager", "loggerDict"))
    'logging:Logger.manager.loggerDict'
    """
    return f"{path[0]}:{'.'.join(path[1:])}"


def _length_of(t: type) -> Callable[[Any], int] | None:
    """The C ``__len__`` that reads a container of class ``t`` (an lru_cache wrapper: its currsize); None otherwise."""
    if t is _LRU:
        return _lru_length
    for base, length in _LENGTHS:
        if t is base or is_subtype(t, base):
            return length
    return None


_LENGTH_OF_EXACT: dict[int, Callable[[Any], int]] = {id(base): length for base, length in _LENGTHS}


def _lru_length(wrapper: Any) -> int:
    return _LRU.cache_info(wrapper).currsize  # the C method: what functools reports


def _length(obj: Any) -> int | None:
    """The number of entries of ``obj`` when it is a container, by the C method of its builtin base; else None."""
    length = _length_of(type(obj))
    return None if length is None else length(obj)


def _is_module(obj: object) -> bool:
    t = type(obj)
    return t is types.ModuleType or is_subtype(t, types.ModuleType)


def _own(name: object) -> bool:
    """Whether a module is tokdiag's (its state is not the measured program's)."""
    return type(name) is str and (name == "tokdiag" or name.startswith("tokdiag."))


def _followed(name: object) -> bool:
    return type(name) is str and (not name.startswith("__") or name == _KEEP_DUNDER)


def step(obj: Any, name: str) -> Any:
    """The value under ``name`` of ``obj`` as the walk reads it (``_MISSING`` when there is none).

    A module: its dict; a class: its own ``__dict__`` (not inherited); any
    other object: its instance attribute (dict or slot, never a property).
    """
    t = type(obj)
    if t is types.ModuleType or is_subtype(t, types.ModuleType):
        return _MODULE_DICT(obj).get(name, _MISSING)
    if is_subtype(t, type):
        return type_dict(obj).get(name, _MISSING)
    return instance_attr(obj, name, _MISSING)


def _module_sizes() -> dict[str, int]:
    """``{name: entries of its dict}`` of the modules in ``sys.modules`` (tokdiag's excepted)."""
    sizes: dict[str, int] = {}
    for name, module in list(sys.modules.items()):
        if type(name) is str and (type(module) is types.ModuleType or _is_module(module)) and not _own(name):
            sizes[name] = len(_MODULE_DICT(module))
    return sizes


def _getter(holder: Any) -> Callable[[str, Any], Any]:
    """``get(name, default)`` reading attributes of ``holder`` as :func:`step` does, for many names."""
    t = type(holder)
    if t is types.ModuleType or is_subtype(t, types.ModuleType):
        return _MODULE_DICT(holder).get
    if is_subtype(t, type):
        return type_dict(holder).get
    return functools.partial(instance_attr, holder)


def resolve(path: Path) -> Any:
    """The object at ``path`` now, or ``_MISSING`` (a module gone, an attribute rebound to nothing)."""
    obj: Any = sys.modules.get(path[0], _MISSING)
    if obj is _MISSING or not _is_module(obj):
        return _MISSING
    for name in path[1:]:
        obj = step(obj, name)
        if obj is _MISSING:
            return _MISSING
    return obj


class _Walk:
    """One discovery: what each class is to the walk, and the names to read on instances of it."""

    def __init__(self) -> None:
        self.kinds: dict[int, int] = {}
        self.names: dict[int, tuple[str, ...]] = {}

    def worth(self, holder: Any) -> Iterator[tuple[Any, Any, int]]:
        """``(name, value, kind)`` of the attributes of ``holder`` (a module, a class, an instance) worth following.

        Of a module's or a class's dict, in C loops: the values' classes
        (each classified once per discovery), then only the values that are
        not skipped (most are functions) come back to Python.
        """
        if _is_module(holder):
            d: Any = _MODULE_DICT(holder)
        elif is_subtype(type(holder), type):
            d = type_dict(holder)
        else:
            for key, value in self.attributes(holder, type(holder)):
                kind = self.kind(type(value))
                if kind != _SKIP:
                    yield key, value, kind
            return
        keys, values = list(d), list(d.values())  # one C loop each, same order
        if len(keys) != len(values):
            return  # changed in between (another thread): found at the next discovery
        kinds = self.kinds
        for t in distinct_types(values):
            if id(t) not in kinds:
                self.kind(t)
        codes = list(map(kinds.__getitem__, map(id, map(type, values))))
        for i in compress(range(len(codes)), codes):  # _SKIP is 0
            yield keys[i], values[i], codes[i]

    def kind(self, t: type) -> int:
        k = self.kinds.get(id(t))
        if k is None:
            k = self.kinds[id(t)] = self._kind(t)
        return k

    @staticmethod
    def _kind(t: type) -> int:
        """A container, a class, an instance worth reading (a program's object that may hold one), or neither.

        Instances are followed when their class is written in Python (a
        function in the dict of a class of its MRO, or slots), and is not a
        descriptor (a ``property``, ``cached_property``: class attributes
        that compute values, not hold them), an enum (members hold atoms),
        an exception (tracebacks, not registries) or a ``typing`` construct.
        """
        if _length_of(t) is not None:
            return _CONTAINER
        if is_subtype(t, type):
            return _CLASS
        if not flags(t) & _HEAPTYPE or module_name(t) in _NOT_HOLDERS:
            return _SKIP
        if any(is_subtype(t, b) for b in _NOT_HOLDER_BASES) or lookup(t, "__get__") is not None:
            return _SKIP
        for k in mro(t):
            if flags(k) & _HEAPTYPE and any(type(v) is types.FunctionType or type(v) is _MEMBER
                                            for v in list(type_dict(k).values())):
                return _INSTANCE
        return _SKIP

    def attribute_names(self, t: type) -> tuple[str, ...]:
        """Names an instance of ``t`` may hold: ``co_names`` of its classes' methods, and its slots.

        Names the class itself defines (methods, class attributes,
        properties) are left out: :func:`tokdiag._clevel.instance_attr`
        would not read them from the instance anyway.
        """
        got = self.names.get(id(t))
        if got is not None:
            return got
        names: dict[str, None] = {}
        for k in mro(t):
            if not flags(k) & _HEAPTYPE:
                continue
            for key, v in list(type_dict(k).items()):
                if type(v) is _MEMBER:
                    names[key] = None
                    continue
                unwrap = _FUNC.get(id(type(v)))  # a classmethod's or staticmethod's function
                if unwrap is not None:
                    v = unwrap(v)
                if type(v) is types.FunctionType:
                    names.update(dict.fromkeys(_CODE(v).co_names))
        out = tuple(n for n in names if _followed(n) and is_one_of(type(lookup(t, n)), (type(None), _MEMBER)))
        self.names[id(t)] = out
        return out

    def attributes(self, obj: Any, t: type) -> Iterator[tuple[str, Any]]:
        """``(name, value)`` of ``obj``'s instance attributes worth following, without making its ``__dict__``."""
        refs = gc.get_referents(obj)
        d = self._made_dict(obj, t, refs)
        if d is not None:
            yield from ((k, v) for k, v in list(dict.items(d)) if _followed(k))
            return
        wanted = {id(r) for r in refs if r is not t and self.kind(type(r)) != _SKIP}
        if not wanted:
            return
        for name in self.attribute_names(t):
            v = instance_attr(obj, name, _MISSING)
            if v is not _MISSING and id(v) in wanted:
                yield name, v

    @staticmethod
    def _made_dict(obj: Any, t: type, refs: list[Any]) -> dict[str, Any] | None:
        """``obj.__dict__`` when it exists already (never made here but in one rare case below), else None.

        An instance of a managed-dict class (3.11+) whose dict was made has
        exactly ``[its dict, its class]`` as referents; otherwise its
        referents are its inline values. (One inline attribute that is a
        dict looks the same: then the getset makes the dict, once.) Any
        other class keeps its dict at an offset, among its referents.
        """
        dicts = [r for r in refs if type(r) is dict]
        if not dicts or (flags(t) & _MANAGED_DICT and not (len(refs) == 2 and refs[1] is t)):
            return None
        getter = lookup(t, "__dict__")
        if type(getter) is not _GETSET or not is_subtype(t, getter.__objclass__):
            return None  # no C getset: a property or a Python descriptor, not to be called
        try:
            d = getter.__get__(obj, t)
        except Exception:
            return None
        return d if type(d) is dict and any(d is r for r in dicts) else None


def discover(hops: int = 3, modules: Collection[str] | None = None) -> dict[Path, int]:
    """``{path: length}`` of the containers reachable from the modules within ``hops`` attributes.

    See the module docstring for the walk. Tokdiag's own modules are left
    out; ``modules`` (names) limits the walk to those.

    >>> import logging
    >>> found = discover()
    >>> ("logging", "Logger", "manager", "loggerDict") in found
    True
    """
    enabled = gc.isenabled()
    gc.disable()  # the walk makes many small tuples: no collection of the whole heap in the middle of it
    try:
        return _discover(hops, modules)
    finally:
        if enabled:
            gc.enable()


def _discover(hops: int, modules: Collection[str] | None) -> dict[Path, int]:
    walk = _Walk()
    met: set[int] = set()
    found: dict[Path, int] = {}
    level: list[tuple[Path, Any]] = []
    for name, module in list(sys.modules.items()):
        if _own(name) or type(name) is not str or not _is_module(module) or id(module) in met:
            continue
        if modules is not None and name not in modules:
            continue
        met.add(id(module))
        level.append(((name,), module))
    for hop in range(hops):
        deeper: list[tuple[Path, Any]] = []
        last = hop + 1 == hops
        for path, holder in level:
            root = path[0]
            for key, value, kind in walk.worth(holder):
                if (last and kind != _CONTAINER) or id(value) in met:
                    continue
                if type(key) is not str or (key[:2] == "__" and key != _KEEP_DUNDER):
                    continue
                if kind == _CLASS and module_name(value) != root:
                    continue  # found under the module that defines it
                met.add(id(value))
                if kind == _CONTAINER:
                    found[(*path, key)] = _length(value)  # type: ignore[assignment]
                else:
                    deeper.append(((*path, key), value))
        level = deeper
    return found


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
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if arg == "max_new" else 1):
                raise ConfigError(f"ContainerProbe({arg}={value!r}): pass a whole number >= 1, e.g. {arg}=10")
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
        sizes = _module_sizes()
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
            n = None if obj is _MISSING else _length(obj)
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
            get = None if holder is _MISSING else _getter(holder)
            if get is None:
                del self._groups[holder_path]
                continue
            gone: list[str] = []
            for name, n0 in names.items():
                obj = get(name, _MISSING)
                length = _LENGTH_OF_EXACT.get(id(type(obj))) or _length_of(type(obj))
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
