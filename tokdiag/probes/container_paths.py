"""Paths from a module to a container: ``("logging", "Logger", "manager", "loggerDict")``, followed and measured.

The container probe (:mod:`tokdiag.probes.containers`) names what it finds
by such a path and resolves it again at every snapshot (:func:`resolve`):
one attribute at a time through C-level lookups (:func:`step`), no
``getattr`` on the objects, and lengths read by the container's own C
``__len__`` (:func:`length`).
"""

from __future__ import annotations

import collections
import functools
import sys
import types
from collections.abc import Callable
from typing import Any

from tokdiag._clevel import (
    instance_attr,
    is_subtype,
    module_dict,
    type_dict,
)

__all__ = [
    "KEEP_DUNDER", "LENGTH_OF_EXACT", "MISSING", "Path", "followed", "getter", "is_module", "length",
    "length_of", "module_sizes", "own", "path_label", "resolve", "step",
]

_LRU = functools._lru_cache_wrapper
# the C member of ModuleType: a module subclass cannot override it
_LENGTHS: tuple[tuple[type, Callable[[Any], int]], ...] = (
    (dict, dict.__len__), (list, list.__len__), (set, set.__len__), (collections.deque, collections.deque.__len__))
MISSING = object()
KEEP_DUNDER = "__warningregistry__"

Path = tuple[str, ...]
"""``(module, attribute, attribute, ...)``: ``("logging", "Logger", "manager", "loggerDict")``."""



def path_label(path: Path) -> str:
    """``"logging:Logger.manager.loggerDict"``: the subject of a container, a ``"module:attr"`` target.

    >>> path_label(("logging", "Logger", "manager", "loggerDict"))
    'logging:Logger.manager.loggerDict'
    """
    return f"{path[0]}:{'.'.join(path[1:])}"


def length_of(t: type) -> Callable[[Any], int] | None:
    """The C ``__len__`` that reads a container of class ``t`` (an lru_cache wrapper: its currsize); None otherwise."""
    if t is _LRU:
        return _lru_length
    for base, length in _LENGTHS:
        if t is base or is_subtype(t, base):
            return length
    return None


LENGTH_OF_EXACT: dict[int, Callable[[Any], int]] = {id(base): length for base, length in _LENGTHS}


def _lru_length(wrapper: Any) -> int:
    return _LRU.cache_info(wrapper).currsize  # the C method: what functools reports


def length(obj: Any) -> int | None:
    """The number of entries of ``obj`` when it is a container, by the C method of its builtin base; else None."""
    length = length_of(type(obj))
    return None if length is None else length(obj)


def is_module(obj: object) -> bool:
    t = type(obj)
    return t is types.ModuleType or is_subtype(t, types.ModuleType)


def own(name: object) -> bool:
    """Whether a module is tokdiag's (its state is not the measured program's)."""
    return type(name) is str and (name == "tokdiag" or name.startswith("tokdiag."))


def followed(name: object) -> bool:
    return type(name) is str and (not name.startswith("__") or name == KEEP_DUNDER)


def step(obj: Any, name: str) -> Any:
    """The value under ``name`` of ``obj`` as the walk reads it (``MISSING`` when there is none).

    A module: its dict; a class: its own ``__dict__`` (not inherited); any
    other object: its instance attribute (dict or slot, never a property).
    """
    t = type(obj)
    if t is types.ModuleType or is_subtype(t, types.ModuleType):
        return module_dict(obj).get(name, MISSING)
    if is_subtype(t, type):
        return type_dict(obj).get(name, MISSING)
    return instance_attr(obj, name, MISSING)


def module_sizes() -> dict[str, int]:
    """``{name: entries of its dict}`` of the modules in ``sys.modules`` (tokdiag's excepted)."""
    sizes: dict[str, int] = {}
    for name, module in list(sys.modules.items()):
        if type(name) is str and (type(module) is types.ModuleType or is_module(module)) and not own(name):
            sizes[name] = len(module_dict(module))
    return sizes


def getter(holder: Any) -> Callable[[str, Any], Any]:
    """``get(name, default)`` reading attributes of ``holder`` as :func:`step` does, for many names."""
    t = type(holder)
    if t is types.ModuleType or is_subtype(t, types.ModuleType):
        return module_dict(holder).get
    if is_subtype(t, type):
        return type_dict(holder).get
    return functools.partial(instance_attr, holder)


def resolve(path: Path) -> Any:
    """The object at ``path`` now, or ``MISSING`` (a module gone, an attribute rebound to nothing)."""
    obj: Any = sys.modules.get(path[0], MISSING)
    if obj is MISSING or not is_module(obj):
        return MISSING
    for name in path[1:]:
        obj = step(obj, name)
        if obj is MISSING:
            return MISSING
    return obj
