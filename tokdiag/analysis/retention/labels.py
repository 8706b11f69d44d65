"""Labels of the references on a chain: ``.agent``, ``["messages"]``, ``[12]``, ``.<closure seen>``.

Nothing here asks an object of the measured program anything: classes by
``type(o)`` (never ``isinstance``, which reads ``o.__class__``), names and
dicts from the C structs (:mod:`tokdiag._clevel`), attributes read through
CPython's own C descriptors, builtin containers through the builtin C
methods (``dict.items(d)``, ``list.__iter__(l)``), keys compared by
identity. A container on many chains (a registry of 20,000 sessions) is read
once per call: the ids of its values are kept in a numpy array while the
chains are labelled.
"""

from __future__ import annotations

import gc
import inspect
import json
import types
from typing import Any

import numpy as np

from tokdiag._clevel import bare_name, is_one_of, is_subtype, lookup, mro, qualname, type_dict
from tokdiag._clevel import module_dict as _module_dict
from tokdiag.analysis.retention.records import Edge

__all__ = ["Labeller", "class_dict", "key_label", "locals_of", "module_dict", "module_name", "release_snapshots"]

_KEY_MAX = 40
_ATOMS = (int, float, bool, bytes, type(None))
_C_DESCRIPTORS = (types.GetSetDescriptorType, types.MemberDescriptorType)
_TYPE_DICT = type.__dict__["__dict__"].__get__  # a mappingproxy of a class's dict, from the C struct
_SCAN = 64  # containers up to this length are scanned; longer ones get an id index


def module_dict(m: object) -> dict[str, Any] | None:
    """The namespace of a module (its real type is a module type), or None."""
    if not is_subtype(type(m), types.ModuleType):
        return None
    d = _module_dict(m)  # type: ignore[arg-type]  # a module subtype, checked above
    return d if type(d) is dict else None


def module_name(m: object) -> str:
    """A module's ``__name__`` read from its namespace (no module ``__getattr__``/``__getattribute__``)."""
    d = module_dict(m)
    name = d.get("__name__") if d is not None else None
    return name if type(name) is str else "?"


def class_dict(t: type) -> dict[str, Any] | None:
    """The dict a class keeps its namespace in (``__dict__`` is a read-only proxy of it)."""
    r = gc.get_referents(_TYPE_DICT(t))
    return r[0] if r and type(r[0]) is dict else None


def key_label(k: Any) -> str:
    """A dict key as text: JSON for a str, ``repr`` for other exact atoms, ``<Type>`` for anything
    else (its ``__repr__`` is the program's code)."""
    if type(k) is str:
        s = json.dumps(k, ensure_ascii=False)
    elif is_one_of(type(k), _ATOMS):
        s = repr(k)
    else:
        s = f"<{bare_name(type(k))}>"
    return s if len(s) <= _KEY_MAX else s[: _KEY_MAX - 3] + "..."


def locals_of(f: types.FrameType, touched: list[dict[str, Any]]) -> dict[str, Any]:
    """A frame's local variables; a snapshot dict Python caches on the frame is remembered for emptying."""
    loc = f.f_locals
    if type(loc) is dict and (f.f_code.co_flags & inspect.CO_OPTIMIZED) and loc is not f.f_globals:
        touched.append(loc)
    return loc


def release_snapshots(touched: list[dict[str, Any]]) -> None:
    """Empty the ``f_locals`` snapshots read from function frames.

    Python 3.11 keeps the snapshot of a function frame (holding every local)
    until the next one; emptied, nothing stays alive through it. The
    frame's real locals are untouched.
    """
    for d in touched:
        d.clear()
    touched.clear()


def _instance_dict(p: Any) -> dict[str, Any] | None:
    """``p.__dict__`` when a C descriptor of its class provides it (never a ``__dict__`` property), else None."""
    t = type(p)
    getter = lookup(t, "__dict__")
    if not is_one_of(type(getter), _C_DESCRIPTORS) or not is_subtype(t, getter.__objclass__):
        return None
    try:
        d = getter.__get__(p, t)
    except Exception:
        return None
    return d if type(d) is dict else None


def _slot_of(p: Any, c: Any) -> str | None:
    """Name of the ``__slots__`` slot of ``p`` that holds ``c`` (read by CPython's C getter)."""
    for t in mro(type(p)):
        for name, descr in type_dict(t).items():
            if type(descr) is not types.MemberDescriptorType or type(name) is not str:
                continue
            try:
                if descr.__get__(p, type(p)) is c:
                    return name
            except Exception:
                continue
    return None


def _index(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sorted ids, position of each)``: the first position of an id by binary search."""
    order = np.argsort(ids, kind="stable")
    return ids[order], order


def _find(index: tuple[np.ndarray, np.ndarray], oid: int) -> int:
    ids, order = index
    k = int(np.searchsorted(ids, oid))
    return int(order[k]) if k < ids.size and ids[k] == oid else -1


class Labeller:
    """Labels the references of chains; keeps an id index of each long container it read until dropped."""

    def __init__(self, touched: list[dict[str, Any]]) -> None:
        self.touched = touched
        self._seq: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id -> (sorted ids of the items, their indexes)
        self._dict: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, list[Any]]] = {}
        self._done: dict[tuple[int, int, str | None], tuple[Edge | None, int, str | None]] = {}

    def _position(self, p: Any, c: Any, seq: type[Any]) -> int:
        """Index of ``c`` in the list or tuple ``p`` by identity, -1 when absent."""
        n = seq.__len__(p)
        if n <= _SCAN:
            return next((j for j, v in enumerate(seq.__iter__(p)) if v is c), -1)
        cached = self._seq.get(id(p))
        if cached is None or cached[0].size != n:
            cached = self._seq[id(p)] = _index(np.fromiter(map(id, seq.__iter__(p)), dtype=np.int64, count=n))
        return _find(cached, id(c))

    def _key_of(self, p: dict[Any, Any], c: Any) -> tuple[bool, Any]:
        """``(True, key)`` if ``c`` is a value of the dict ``p``; ``(False, c)`` if a key; else ``(False, None)``."""
        n = dict.__len__(p)
        if n <= _SCAN:
            for k, v in dict.items(p):
                if v is c:
                    return True, k
            return False, next((k for k in dict.__iter__(p) if k is c), None)
        cached = self._dict.get(id(p))
        if cached is None or cached[0].size != n:
            keys = list(dict.__iter__(p))
            cached = self._dict[id(p)] = (*_index(np.fromiter(map(id, dict.values(p)), dtype=np.int64, count=n)),
                                          np.sort(np.fromiter(map(id, keys), dtype=np.int64, count=n)), keys)
        j = _find(cached[:2], id(c))
        if j >= 0:
            return True, cached[3][j]
        k = np.searchsorted(cached[2], id(c))
        return False, (c if k < n and cached[2][k] == id(c) else None)

    def edges(self, nodes: list[Any], owner: str | None = None) -> tuple[Edge, ...]:
        """Label the references along ``nodes`` (root first); ``owner`` names the root when it is a namespace dict."""
        out: list[Edge] = []
        i = 0
        while i < len(nodes) - 1:
            if type(nodes[i]) is types.FunctionType:  # a closure's label looks two objects ahead
                edge, hops, owner = self._label(nodes, i, owner)
            else:  # the same reference on many chains (a registry's namespace entry) is labelled once
                key = (id(nodes[i]), id(nodes[i + 1]), owner)
                done = self._done.get(key)
                if done is None:
                    done = self._done[key] = self._label(nodes, i, owner)
                edge, hops, owner = done
            if edge is not None:
                out.append(edge)
            i += hops
        return tuple(out)

    def _label(self, nodes: list[Any], i: int, owner: str | None) -> tuple[Edge | None, int, str | None]:
        """Edge for ``nodes[i] -> nodes[i+1]``: ``(edge or None to skip, hops consumed, owner for next)``."""
        p, c = nodes[i], nodes[i + 1]
        tp = type(p)
        is_class = is_subtype(tp, type)
        # instance -> its own __dict__: fold into the next edge as an attribute of the instance
        if type(c) is dict and not is_class:
            if module_dict(p) is c:
                return None, 1, "module"
            if _instance_dict(p) is c:
                return None, 1, qualname(tp)
        if is_class and type(c) is dict and class_dict(p) is c:
            return None, 1, qualname(p)
        # function -> __closure__ tuple -> cell -> value: one closure edge (FunctionType cannot be subclassed)
        if tp is types.FunctionType:
            if c is p.__closure__ and i + 3 < len(nodes):
                cell = nodes[i + 2]
                for j, cl in enumerate(p.__closure__ or ()):
                    if cl is cell:
                        return Edge("closure", p.__code__.co_freevars[j], qualname(tp)), 3, None
            for name in ("__defaults__", "__kwdefaults__", "__dict__", "__globals__", "__wrapped__"):
                if getattr(p, name, None) is c:
                    return Edge("attr", name, "function"), 1, None
        if is_subtype(tp, dict):
            is_value, k = self._key_of(p, c)
            if is_value:
                if owner is not None:
                    return Edge("attr", str(k) if type(k) is str else key_label(k), owner), 1, None
                return Edge("key", key_label(k), qualname(tp)), 1, None
            if k is not None:
                return Edge("item", "", qualname(tp)), 1, None
        for seq in (list, tuple):
            if is_subtype(tp, seq):
                j = self._position(p, c, seq)
                if j >= 0:
                    return Edge("index", str(j), qualname(tp)), 1, None
        if is_subtype(tp, set) or is_subtype(tp, frozenset):
            return Edge("item", "", qualname(tp)), 1, None
        if tp is types.CellType:
            return Edge("closure", "cell_contents", "cell"), 1, None
        if is_one_of(tp, (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)):
            frame = getattr(p, "gi_frame", None) or getattr(p, "cr_frame", None) or getattr(p, "ag_frame", None)
            if frame is not None:
                for k, v in locals_of(frame, self.touched).items():
                    if v is c:
                        return Edge("frame", str(k), qualname(tp)), 1, None
        if tp is types.MethodType:
            for name in ("__self__", "__func__"):
                if getattr(p, name, None) is c:
                    return Edge("attr", name, "method"), 1, None
        attr = self._attr_of(p, c)
        if attr is not None:
            return Edge("attr", attr, qualname(tp)), 1, None
        return Edge("referent", "", qualname(tp)), 1, None

    def _attr_of(self, p: Any, c: Any) -> str | None:
        """Name under which ``p`` holds ``c`` as an attribute (instance dict or slots)."""
        d = _instance_dict(p)
        if d is not None:
            for k, v in dict.items(d):
                if v is c:
                    return str(k) if type(k) is str else key_label(k)
        return _slot_of(p, c)
