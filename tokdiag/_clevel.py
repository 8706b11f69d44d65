"""What a measuring tool may ask about an object without running the measured program's code.

Ordinary Python questions run user code: ``t.__name__`` or ``t.__mro__`` on a
class go through its metaclass's ``__getattribute__``; ``isinstance(o, X)``
reads ``o.__class__``, which a property can fake or make raise; putting a
class in a set or a dict key runs its metaclass's ``__hash__``;
``hasattr(o, "x")`` runs ``__getattr__``; ``sys.getsizeof(o)`` runs a
Python-level ``__sizeof__``. The helpers here read the same facts from the C
structures instead, through the descriptors of ``type`` and ``object``
themselves (``type.__dict__["__mro__"].__get__(t)`` is the C getset, whatever
the metaclass says), and compare classes by identity (``id``), never by hash
or ``==``.

>>> class Meta(type):
...     def __getattribute__(cls, name):
...         raise RuntimeError("hostile")
...     def __hash__(cls):
...         raise RuntimeError("hostile")
>>> Hostile = Meta("Hostile", (), {"__module__": "app"})
>>> type_name(Hostile), bare_name(Hostile), is_subtype(Hostile, object)
('app.Hostile', 'Hostile', True)
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from tokdiag._native import speedups

__all__ = [
    "HAVE_GC", "bare_name", "basicsize", "classes_hash_by_identity", "distinct_types", "flags", "instance_attr",
    "is_one_of", "is_subtype", "itemsize", "lookup", "module_dict", "module_name", "mro", "qualname", "subclasses_of",
    "type_dict", "type_name",
]

_T = type.__dict__
_MRO = _T["__mro__"].__get__
_DICT = _T["__dict__"].__get__
_FLAGS = _T["__flags__"].__get__
_BASICSIZE = _T["__basicsize__"].__get__
_ITEMSIZE = _T["__itemsize__"].__get__
_NAME = _T["__name__"].__get__
_QUALNAME = _T["__qualname__"].__get__
_MODULE = _T["__module__"].__get__
_SUBCLASSCHECK = _T["__subclasscheck__"]  # type's own, not an ABC's or a metaclass's override

HAVE_GC = 1 << 14
"""``Py_TPFLAGS_HAVE_GC``: instances of a class without it never appear in ``gc.get_objects()``."""

_MEMBER = types.MemberDescriptorType
_MODULE_DICT = types.ModuleType.__dict__["__dict__"].__get__  # type: ignore[index]


def mro(t: type) -> tuple[type, ...]:
    """``t.__mro__`` read from the C struct (no metaclass ``__getattribute__``)."""
    return _MRO(t)


def module_dict(m: types.ModuleType) -> dict[str, Any]:
    """A module's own dict through ``ModuleType``'s C member.

    A module subclass cannot override it, and no ``__getattr__`` runs."""
    return _MODULE_DICT(m)


def type_dict(t: type) -> Mapping[str, Any]:
    """``t.__dict__`` (a read-only view) read from the C struct."""
    return _DICT(t)


def flags(t: type) -> int:
    """``t.__flags__`` (the ``Py_TPFLAGS_*`` bits) read from the C struct."""
    return _FLAGS(t)


def basicsize(t: type) -> int:
    """``t.__basicsize__`` read from the C struct."""
    return _BASICSIZE(t)


def itemsize(t: type) -> int:
    """``t.__itemsize__`` read from the C struct."""
    return _ITEMSIZE(t)


def is_subtype(t: type, base: type) -> bool:
    """Whether ``base`` is on the MRO of the class ``t`` (``PyType_IsSubtype``).

    Unlike ``issubclass``, never asks ``base``'s metaclass (an ABC's registry
    and its caches hash classes) and never reads ``__class__`` or ``__bases__``.
    """
    return _SUBCLASSCHECK(base, t)


def is_one_of(t: type, classes: tuple[type, ...]) -> bool:
    """``t in classes`` by identity: ``in`` compares with ``==``, and a metaclass's ``__eq__`` would run."""
    return any(t is c for c in classes)


def lookup(t: type, name: str) -> Any:
    """The attribute ``name`` as the class ``t`` defines or inherits it (its MRO's dicts), or None.

    What ``_PyType_Lookup`` finds: no metaclass code, no descriptor called.
    """
    for k in _MRO(t):
        d = _DICT(k)
        if name in d:
            return d[name]
    return None


def _text(value: object) -> str | None:
    return value if type(value) is str else None


def module_name(t: type) -> str:
    """The module that defines ``t`` (``"?"`` when its ``__module__`` is not a string)."""
    try:
        return _text(_MODULE(t)) or "?"
    except AttributeError:
        return "?"


def qualname(t: type) -> str:
    """``t.__qualname__`` from the C struct: ``"Outer.Inner"``."""
    return _text(_QUALNAME(t)) or "?"


def bare_name(t: type) -> str:
    """``t.__name__`` from the C struct: ``"Inner"``."""
    return _text(_NAME(t)) or "?"


def type_name(t: type) -> str:
    """Qualified name of a class: ``"builtins.dict"``, ``"app.agents.RewardAgent"``.

    Read from the C struct, so a metaclass's ``__getattribute__`` or
    ``__hash__`` never runs (this is why nothing caches it by class).
    """
    return f"{module_name(t)}.{qualname(t)}"


_OBJECT_HASH = object.__dict__["__hash__"]
_OBJECT_EQ = object.__dict__["__eq__"]


def classes_hash_by_identity() -> bool:
    """Whether every metaclass alive hashes and compares its classes like ``type`` does, by identity.

    Then classes may be set members and dict keys (a C-speed lookup) without
    any metaclass code running; otherwise key them by ``id``. Walks the
    subclasses of ``type`` (the metaclasses: a few dozen in a large program).
    """
    for m in subclasses_of(type):
        if lookup(m, "__hash__") is not _OBJECT_HASH or lookup(m, "__eq__") is not _OBJECT_EQ:
            return False
    return True


def subclasses_of(root: type) -> Iterator[type]:
    """``root`` and every class below it through ``type.__subclasses__``, each once (by identity), depth first.

    No metaclass code runs: classes are compared by ``id`` and listed by the
    C ``type.__subclasses__``.

    >>> class A: pass
    >>> class B(A): pass
    >>> [t.__name__ for t in subclasses_of(A)]
    ['A', 'B']
    """
    seen: set[int] = set()
    stack: list[type] = [root]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        yield t
        try:
            subs: list[type] = type.__subclasses__(t) if is_subtype(type(t), type) else []
        except TypeError:
            subs = []
        stack.extend(subs)


def distinct_types(objs: Sequence[object]) -> list[type]:
    """The distinct classes of ``objs`` in order of first sight, compared by identity (never hashed).

    One C loop over a list with the extension (``tokdiag._speedups.types``),
    else two over the sequence; no list of its length either way.
    """
    if speedups is not None and type(objs) is list:
        return speedups.types(objs)
    return list(dict(zip(map(id, map(type, objs)), map(type, objs), strict=True)).values())


_MISSING = object()


def instance_attr(obj: object, name: str, default: Any = None) -> Any:
    """``obj.<name>`` when it is a plain instance attribute, else ``default``.

    A plain instance attribute is one in its ``__dict__`` or a ``__slots__`` slot.

    Never runs user code: when the class defines or inherits anything under
    ``name`` (a property, a descriptor, a method), only a slot is read
    (``member_descriptor.__get__``, C); otherwise the instance dict is read
    with ``object.__getattribute__``, which skips the class's own
    ``__getattribute__`` and ``__getattr__`` and finds no descriptor to call.
    The dict is read in place (not materialised).
    """
    t = type(obj)
    descr = lookup(t, name)
    try:
        if descr is not None:
            return descr.__get__(obj, t) if type(descr) is _MEMBER else default
        return object.__getattribute__(obj, name)
    except (AttributeError, TypeError):  # unset slot; a slot of another class
        return default
