"""The walk that finds containers from the modules: ``discover()``, ``{path: length}`` within a few hops.

See :mod:`tokdiag.probes.containers` for what is followed and why; the paths
and the C-level lookups the walk takes are in
:mod:`tokdiag.probes.container_paths`.
"""

from __future__ import annotations

import enum
import gc
import sys
import types
from collections.abc import Collection, Iterator
from itertools import compress
from typing import Any

from tokdiag._clevel import (
    distinct_types,
    flags,
    instance_attr,
    is_one_of,
    is_subtype,
    lookup,
    module_dict,
    module_name,
    mro,
    type_dict,
)
from tokdiag.probes.container_paths import (
    KEEP_DUNDER,
    MISSING,
    Path,
    followed,
    is_module,
    length,
    length_of,
    own,
)

__all__ = ["discover", "discover_now"]

_CODE = types.FunctionType.__dict__["__code__"].__get__
_FUNC = {id(classmethod): classmethod.__dict__["__func__"].__get__,
         id(staticmethod): staticmethod.__dict__["__func__"].__get__}
_HEAPTYPE = 1 << 9
_MANAGED_DICT = 1 << 4
_MEMBER = types.MemberDescriptorType
_GETSET = types.GetSetDescriptorType
_NOT_HOLDERS = frozenset({"typing", "typing_extensions", "enum"})
_NOT_HOLDER_BASES: tuple[type, ...] = (enum.Enum, BaseException, types.ModuleType)


# what a value is to the walk, decided once per class (by id) per discovery
_SKIP, _CONTAINER, _CLASS, _INSTANCE = range(4)


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
        if is_module(holder):
            d: Any = module_dict(holder)
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
        if length_of(t) is not None:
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
        out = tuple(n for n in names if followed(n) and is_one_of(type(lookup(t, n)), (type(None), _MEMBER)))
        self.names[id(t)] = out
        return out

    def attributes(self, obj: Any, t: type) -> Iterator[tuple[str, Any]]:
        """``(name, value)`` of ``obj``'s instance attributes worth following, without making its ``__dict__``."""
        refs = gc.get_referents(obj)
        d = self._made_dict(obj, t, refs)
        if d is not None:
            yield from ((k, v) for k, v in list(dict.items(d)) if followed(k))
            return
        wanted = {id(r) for r in refs if r is not t and self.kind(type(r)) != _SKIP}
        if not wanted:
            return
        for name in self.attribute_names(t):
            v = instance_attr(obj, name, MISSING)
            if v is not MISSING and id(v) in wanted:
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
        return discover_now(hops, modules)
    finally:
        if enabled:
            gc.enable()


def discover_now(hops: int, modules: Collection[str] | None) -> dict[Path, int]:
    walk = _Walk()
    met: set[int] = set()
    found: dict[Path, int] = {}
    level: list[tuple[Path, Any]] = []
    for name, module in list(sys.modules.items()):
        if own(name) or type(name) is not str or not is_module(module) or id(module) in met:
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
                if type(key) is not str or (key[:2] == "__" and key != KEEP_DUNDER):
                    continue
                if kind == _CLASS and module_name(value) != root:
                    continue  # found under the module that defines it
                met.add(id(value))
                if kind == _CONTAINER:
                    found[(*path, key)] = length(value)  # type: ignore[assignment]
                else:
                    deeper.append(((*path, key), value))
        level = deeper
    return found
