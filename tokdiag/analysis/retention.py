"""Why is it still alive? Reference chains from a root to live instances.

:func:`why_alive` answers, for a class (or a class-name pattern, or one
instance), which chain of references keeps its instances alive::

    module app.bus -> bus -> EventBus._history[12] -> MemoryEventMessage.agent -> RewardAgent

Roots are the places Python itself holds objects from: a module's globals
(``module app.bus``), a class's dict (``class app.bus.EventBus``), the local
variables of a running function in any thread (``frame serve
(server.py:88)``), and gc-tracked objects that no tracked object refers to
(held from C code, or by an owner the garbage collector cannot see; root
kind ``gc``). tokdiag's own frames, modules and objects are never roots and
never links of a chain.

How it is fast
--------------
``objgraph.find_backref_chain`` calls ``gc.get_referrers`` for every node of
its breadth-first search, and each call scans the whole heap. Here the heap
is read once: ``gc.get_referents(*block)`` over consecutive blocks of 32
objects of ``gc.get_objects()`` (one C call per block, the collector
paused) gives the reverse index as two numpy arrays (referent id, sorted;
block number). The search walks back from up to :data:`MAX_SAMPLES`
instances at once, one level at a time, resolving exact referrers only
inside the blocks the visited ids point to, and stops at the nearest roots
(plus a few levels more to find other roots). Only the objects on a found
chain are looked at again, to label each edge (attribute name through
``__dict__`` or ``__slots__``, dict key, list/tuple index, closure variable,
frame local). Chains that differ only in an index (``_history[12]`` and
``_history[13]``) count once.

Measured with ``.venv/bin/python bench/why_alive.py`` (a 999,905-object
heap, 2 shared cores, both tools in one process, ``why_alive`` with its
defaults, ``gc.collect()`` included):

- an ``Agent`` held by its 200 messages in a bus history (the AWorld shape):
  why_alive 0.99 s, objgraph 5.59 s: **5.6x faster**;
- a ``Note`` on a single chain (one referrer per hop): why_alive 0.81 s,
  objgraph 0.23 s: objgraph is 3.5x faster there, because its search
  visits only ~7 nodes while the index always reads the whole heap once.

objgraph's cost grows with the nodes its search visits (each a heap scan);
why_alive's stays about one heap read, so the more objects hold the leaked
ones, the larger the gap.

What it leaves behind
---------------------
Nothing: every list of objects it made is dropped before it returns, the
collector is re-enabled, and the ``f_locals`` snapshots it had to read from
running function frames (Python 3.11 caches them on the frame, holding the
locals) are emptied again. After it returns, an instance the caller drops
can be collected, and ``gc.get_referrers`` of it shows nothing of tokdiag's.
"""

from __future__ import annotations

import ctypes
import gc
import inspect
import json
import os
import re
import sys
import threading
import types
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain as _chain
from itertools import compress, islice
from typing import Any

import numpy as np

from tokdiag._clevel import (
    bare_name,
    is_one_of,
    is_subtype,
    lookup,
    module_name,
    mro,
    qualname,
    type_dict,
)
from tokdiag.errors import ConfigError

__all__ = ["EDGE_KINDS", "ROOT_KINDS", "Chain", "Edge", "MAX_SAMPLES", "why_alive"]

EDGE_KINDS: tuple[str, ...] = ("attr", "key", "index", "item", "closure", "frame", "referent")
"""Kinds of :class:`Edge`: attribute, dict key, sequence index, set member, closure variable,
frame local, and an unlabelled reference (a C object's internal field)."""

ROOT_KINDS: tuple[str, ...] = ("module", "class", "frame", "gc")
"""Kinds of chain roots (see the module docstring)."""

MAX_SAMPLES = 1000
"""At most this many instances of the target are searched from at once."""

_BLOCK = 32
_TOKDIAG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONTAINERS = (dict, list, tuple, set, frozenset)
_KEY_MAX = 40
_INDEX = re.compile(r"\[\d+\]")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Edge:
    """One reference on a chain: held by a ``source_type`` object under ``label``.

    ``kind`` is one of :data:`EDGE_KINDS`. ``label`` is the bare name or key:
    ``"agent"`` (attr), ``'"messages"'`` (key: the key's repr, shortened),
    ``"12"`` (index), ``"leaked"`` (closure or frame variable), ``""``
    (item, referent). :attr:`text` renders it (``.agent``, ``["messages"]``,
    ``[12]``).
    """

    kind: str
    label: str
    source_type: str

    @property
    def text(self) -> str:
        if self.kind == "attr":
            return f".{self.label}"
        if self.kind in ("key", "index"):
            return f"[{self.label}]"
        if self.kind == "item":
            return "{member}"
        if self.kind == "closure":
            return f".<closure {self.label}>"
        if self.kind == "frame":
            return f".<local {self.label}>"
        return ".<referent>"

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "label": self.label, "source_type": self.source_type}


@dataclass(frozen=True, slots=True)
class Chain:
    """A chain of references from a root to an instance of ``target_type``.

    ``root`` describes the root (``"module app.bus"``, ``"class app.Bus"``,
    ``"frame serve (server.py:88)"``), ``root_kind`` is one of
    :data:`ROOT_KINDS`, ``edges`` go from the root to the instance.

    >>> c = Chain("module app", "module", (Edge("attr", "REGISTRY", "module"), Edge("key", '"k"', "dict"),
    ...           Edge("attr", "items", "Holder"), Edge("index", "0", "list")), "Target")
    >>> c.text
    'module app -> REGISTRY["k"] -> Holder.items[0] -> Target'
    >>> Chain.from_dict(c.as_dict()) == c
    True
    """

    root: str
    root_kind: str
    edges: tuple[Edge, ...]
    target_type: str

    @property
    def text(self) -> str:
        """One line: the root, then one segment per object that holds the next link, then the target.

        A segment starts at each object that is not a plain container: the
        first edge from the root (written as a bare name), an attribute, a
        closure or frame variable, or an unlabelled reference. Keys, indexes
        and set members of the containers that follow are appended to it.
        """
        parts = [self.root]
        seg = ""
        for i, e in enumerate(self.edges):
            if i == 0:
                seg = e.label if e.kind in ("attr", "frame", "closure") else e.text
                if e.kind == "referent":
                    seg = f"{e.source_type}{e.text}"
            elif e.kind in ("key", "index", "item"):
                seg += e.text
            else:
                parts.append(seg)
                seg = f"{e.source_type}{e.text}"
        if seg:
            parts.append(seg)
        parts.append(self.target_type)
        return " -> ".join(parts)

    def __str__(self) -> str:
        return self.text

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form (written to journals); :meth:`from_dict` reads it back."""
        return {"root": self.root, "root_kind": self.root_kind, "target_type": self.target_type,
                "edges": [e.as_dict() for e in self.edges], "text": self.text}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Chain:
        try:
            edges = tuple(Edge(str(e["kind"]), str(e["label"]), str(e["source_type"])) for e in d.get("edges", ()))
            return cls(str(d["root"]), str(d["root_kind"]), edges, str(d["target_type"]))
        except (KeyError, TypeError) as exc:
            raise ConfigError(
                f"not a retention chain: {d!r} lacks {exc}; pass a dict made by Chain.as_dict()") from None


# --------------------------------------------------------------------------- targets


# Nothing here asks an object of the measured program anything: classes by type(o) (never
# isinstance, which reads o.__class__, a property that can lie or raise), names and dicts from the
# C structs (tokdiag._clevel), classes compared by id (never hashed), attributes read through
# CPython's own C descriptors, and builtin containers through the builtin C methods.

_qualname = qualname
_MODULE_DICT = types.ModuleType.__dict__["__dict__"].__get__  # a module's namespace, from the C struct


def _is_tokdiag_type(t: type) -> bool:
    """A type of tokdiag's own (never the subject of a chain)."""
    return _is_tokdiag_name(module_name(t))


def _is_a(obj: object, cls: type) -> bool:
    """``isinstance`` by the object's real type: its ``__class__`` is never read."""
    return is_subtype(type(obj), cls)


def _module_dict(m: object) -> dict[str, Any] | None:
    """The namespace of a module (its real type is a module type), or None."""
    if not _is_a(m, types.ModuleType):
        return None
    d = _MODULE_DICT(m)
    return d if type(d) is dict else None


def _module_name(m: object) -> str:
    """A module's ``__name__`` read from its namespace (no module ``__getattr__``/``__getattribute__``)."""
    d = _module_dict(m)
    name = d.get("__name__") if d is not None else None
    return name if type(name) is str else "?"


def _subclasses(classes: Iterable[type]) -> dict[int, type]:
    """``{id: class}`` of the classes and all their subclasses (by identity: classes are never hashed)."""
    out: dict[int, type] = {}
    stack = list(classes)
    while stack:
        t = stack.pop()
        if id(t) in out:
            continue
        out[id(t)] = t
        try:
            stack.extend(type.__subclasses__(t))
        except TypeError:
            pass
    return out


def _resolve(target: Any) -> tuple[dict[int, type] | None, str]:
    """``({id: class}, target_type)``; the classes are None for an instance target."""
    if type(target) is str:
        from tokdiag.probes.watch import WatchProbe, _matches, all_classes

        pattern = target.strip()
        if not pattern:
            raise ConfigError("why_alive(''): pass a class, a class name such as 'RewardAgent' "
                              "('app.agents.RewardAgent', '*.RewardAgent'), or an instance")
        found = [t for t in all_classes() if _matches(pattern, t)]
        if not found:
            close = WatchProbe([pattern]).unmatched().get(pattern, [])
            hint = f"; did you mean {', '.join(close)}?" if close else (
                "; check the spelling, or import the module that defines it first")
            raise ConfigError(f"why_alive({target!r}): no class matches {pattern!r}{hint}")
        names = sorted({_qualname(t) for t in found})
        # exactly the classes the watch probe would count under this pattern (no unnamed subclasses)
        return {id(t): t for t in found}, names[0] if len(names) == 1 else pattern
    if _is_a(target, type):
        return _subclasses([target]), _qualname(target)
    return None, _qualname(type(target))


# --------------------------------------------------------------------------- the heap index


def _sorted_addresses(objs: Iterable[Any], count: int) -> tuple[np.ndarray, np.ndarray]:
    """``(sorted ids, order)`` of the objects, without a Python-level ``id`` call per object.

    The objects go into a numpy object array (a C loop); its buffer *is* the
    ``PyObject*`` addresses, which CPython uses as ids. They are sorted (a
    copy) before the array and its references are dropped.
    """
    if count == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    arr = np.fromiter(objs, dtype=object, count=count)
    view = np.ctypeslib.as_array((ctypes.c_int64 * count).from_address(arr.ctypes.data))
    order = np.argsort(view, kind="stable")  # ids are mostly ascending: the stable sort is the fast one
    ids = view[order]
    del view, arr
    return ids, order


class _Index:
    """Reverse index of the heap: which block of :data:`_BLOCK` heap objects refers to an id.

    Built in one pass: ``gc.get_referents(*block)`` for consecutive blocks of
    ``gc.get_objects()`` (one C call per block, no list per object), the
    referents' ids sorted with their block numbers. :meth:`referrers` finds
    the exact referrers of an id inside its few blocks, only for the nodes
    the search visits.
    """

    def __init__(self, objs: list[Any]) -> None:
        self.objs = objs
        get_referents = gc.get_referents
        flats = [get_referents(*objs[s:s + _BLOCK]) for s in range(0, len(objs), _BLOCK)]
        sizes = np.fromiter(map(len, flats), dtype=np.int64, count=len(flats))
        total = int(sizes.sum())
        self.kid, order = _sorted_addresses(_chain.from_iterable(flats), total)
        flats.clear()
        del flats
        self.block = np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)[order]
        del order, sizes

    def referrers(self, ids: np.ndarray) -> list[list[int]]:
        """For each id, the ids of the heap objects that refer to it.

        One scan per block touched by any of ``ids`` (a big list in a block
        is read once per level, not once per id it holds).
        """
        starts = np.searchsorted(self.kid, ids, "left")
        ends = np.searchsorted(self.kid, ids, "right")
        wanted = set(ids.tolist())
        blocks = np.unique(np.concatenate([self.block[a:b] for a, b in zip(starts.tolist(), ends.tolist())]
                                          or [np.empty(0, np.int64)]))
        hits: dict[int, list[int]] = {}
        objs = self.objs
        get_referents = gc.get_referents
        for blk in blocks.tolist():
            for o in objs[blk * _BLOCK:(blk + 1) * _BLOCK]:
                for rid in wanted.intersection(map(id, get_referents(o))):
                    hits.setdefault(rid, []).append(id(o))
        return [hits.get(oid, []) for oid in ids.tolist()]


def _at(oid: int) -> Any:
    """The object with this id. Only called for ids of objects the search holds alive
    (everything in its ``gc.get_objects()`` list, and the samples), so the id is valid."""
    return ctypes.cast(oid, ctypes.py_object).value


def _is_tokdiag_file(filename: str) -> bool:
    try:
        path = os.path.abspath(filename)
        return path.startswith(_TOKDIAG_DIR + os.sep)
    except (TypeError, ValueError):
        return False


def _frames() -> list[tuple[types.FrameType, str]]:
    """Every running frame of every thread, with its thread's name, innermost first."""
    names = {t.ident: t.name for t in threading.enumerate()}
    out: list[tuple[types.FrameType, str]] = []
    for ident, top in sys._current_frames().items():
        f: types.FrameType | None = top
        while f is not None:
            if f.f_code.co_filename != __file__:  # never this module's frames (they hold the search)
                out.append((f, names.get(ident, str(ident))))
            f = f.f_back
    # This frame's object exists now (it was the top of its thread); holding it in a local at
    # return would make a cycle frame -> locals -> frame that keeps the whole search alive.
    del f, top
    return out


def _frame_label(f: types.FrameType, thread: str) -> str:
    code = f.f_code
    name = getattr(code, "co_qualname", code.co_name)
    where = f"{os.path.basename(code.co_filename)}:{f.f_lineno}"
    suffix = "" if thread == "MainThread" else f", thread {thread}"
    return f"frame {name} ({where}{suffix})"


def _locals_of(f: types.FrameType, touched: list[dict[str, Any]]) -> dict[str, Any]:
    """A frame's local variables; a snapshot dict Python caches on the frame is remembered for emptying."""
    loc = f.f_locals
    if type(loc) is dict and (f.f_code.co_flags & inspect.CO_OPTIMIZED) and loc is not f.f_globals:
        touched.append(loc)
    return loc


def _release_snapshots(touched: list[dict[str, Any]]) -> None:
    # Python 3.11 keeps the f_locals snapshot of a function frame (holding every local) until the
    # next snapshot; empty it so nothing stays alive through it. The frame's real locals are untouched.
    for d in touched:
        d.clear()
    touched.clear()


# --------------------------------------------------------------------------- labelling


_ATOMS = (int, float, bool, bytes, type(None))


def _key_label(k: Any) -> str:
    """A dict key as text: JSON for a str, ``repr`` for other exact atoms, ``<Type>`` for anything
    else (its ``__repr__`` is the program's code)."""
    if type(k) is str:
        s = json.dumps(k, ensure_ascii=False)
    elif is_one_of(type(k), _ATOMS):
        s = repr(k)
    else:
        s = f"<{bare_name(type(k))}>"
    return s if len(s) <= _KEY_MAX else s[: _KEY_MAX - 3] + "..."


def _type_dict(t: type) -> dict[str, Any] | None:
    for r in gc.get_referents(t):
        if type(r) is dict:
            return r
    return None


_C_DESCRIPTORS = (types.GetSetDescriptorType, types.MemberDescriptorType)


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


def _attr_of(p: Any, c: Any) -> str | None:
    """Name under which ``p`` holds ``c`` as an attribute (instance dict or slots)."""
    d = _instance_dict(p)
    if d is not None:
        for k, v in dict.items(d):
            if v is c:
                return str(k) if type(k) is str else _key_label(k)
    for t in mro(type(p)):  # slots: the member descriptors of each class, read by CPython's C getter
        for name, descr in type_dict(t).items():
            if type(descr) is not types.MemberDescriptorType or type(name) is not str:
                continue
            try:
                if descr.__get__(p, type(p)) is c:
                    return name
            except Exception:
                continue
    return None


def _label(nodes: list[Any], i: int, owner: str | None, touched: list[dict[str, Any]]) -> tuple[Edge | None, int, str | None]:
    """Edge for ``nodes[i] -> nodes[i+1]``: ``(edge or None to skip, hops consumed, owner for next)``."""
    p, c = nodes[i], nodes[i + 1]
    tp = type(p)
    is_class = is_subtype(tp, type)
    # instance -> its own __dict__: fold into the next edge as an attribute of the instance
    if type(c) is dict and not is_class:
        if _module_dict(p) is c:
            return None, 1, "module"
        if _instance_dict(p) is c:
            return None, 1, _qualname(tp)
    if is_class and type(c) is dict and _type_dict(p) is c:
        return None, 1, _qualname(p)
    # function -> __closure__ tuple -> cell -> value: one closure edge (FunctionType cannot be subclassed)
    if tp is types.FunctionType:
        if c is p.__closure__ and i + 3 < len(nodes) and i + 2 < len(nodes):
            cell = nodes[i + 2]
            for j, cl in enumerate(p.__closure__ or ()):
                if cl is cell:
                    return Edge("closure", p.__code__.co_freevars[j], _qualname(tp)), 3, None
        for name in ("__defaults__", "__kwdefaults__", "__dict__", "__globals__", "__wrapped__"):
            if getattr(p, name, None) is c:
                return Edge("attr", name, "function"), 1, None
    if is_subtype(tp, dict):
        for k, v in dict.items(p):
            if v is c:
                if owner is not None:
                    return Edge("attr", str(k) if type(k) is str else _key_label(k), owner), 1, None
                return Edge("key", _key_label(k), _qualname(tp)), 1, None
        for k in dict.__iter__(p):
            if k is c:
                return Edge("item", "", _qualname(tp)), 1, None
    for seq in (list, tuple):
        if is_subtype(tp, seq):
            for j, v in enumerate(seq.__iter__(p)):
                if v is c:
                    return Edge("index", str(j), _qualname(tp)), 1, None
    if is_subtype(tp, set) or is_subtype(tp, frozenset):
        return Edge("item", "", _qualname(tp)), 1, None
    if tp is types.CellType:
        return Edge("closure", "cell_contents", "cell"), 1, None
    if is_one_of(tp, (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)):
        frame = getattr(p, "gi_frame", None) or getattr(p, "cr_frame", None) or getattr(p, "ag_frame", None)
        if frame is not None:
            loc = _locals_of(frame, touched)
            for k, v in loc.items():
                if v is c:
                    return Edge("frame", str(k), _qualname(tp)), 1, None
    if tp is types.MethodType:
        for name in ("__self__", "__func__"):
            if getattr(p, name, None) is c:
                return Edge("attr", name, "method"), 1, None
    name = _attr_of(p, c)
    if name is not None:
        return Edge("attr", name, _qualname(tp)), 1, None
    return Edge("referent", "", _qualname(tp)), 1, None


def _edges(nodes: list[Any], touched: list[dict[str, Any]], owner: str | None = None) -> tuple[Edge, ...]:
    """Label the references along ``nodes`` (root first); ``owner`` names the root when it is a namespace dict."""
    out: list[Edge] = []
    i = 0
    while i < len(nodes) - 1:
        edge, hops, owner = _label(nodes, i, owner, touched)
        if edge is not None:
            out.append(edge)
        i += hops
    return tuple(out)


# --------------------------------------------------------------------------- search


def why_alive(target: Any, *, max_chains: int = 3, max_depth: int = 50, collect: bool = True) -> list[Chain]:
    """Reference chains from roots to live instances of ``target``, nearest roots first.

    ``target`` is a class, a class-name pattern (qualified ``"app.agents.RewardAgent"``,
    bare ``"RewardAgent"`` or glob ``"*.RewardAgent"``, matched like the watch
    probe: exactly the classes it names), or one instance; a class passed
    itself includes its subclasses. Up to ``max_chains`` chains, nearest
    first; chains that differ only in a list index count once (the same way
    of being held). ``max_depth`` bounds their length.
    ``collect`` runs ``gc.collect()`` first, so garbage is not explained.

    Returns ``[]`` when no instance is alive. Raises :class:`ConfigError`
    when a pattern matches no class (with close matches).

    >>> import collections, types
    >>> h = types.SimpleNamespace(items=[collections.UserList()])
    >>> [c.text.split(" -> ", 1)[1] for c in why_alive(collections.UserList)][:1]
    ['h -> SimpleNamespace.items[0] -> UserList']
    """
    if isinstance(max_chains, bool) or not isinstance(max_chains, int) or max_chains < 1:
        raise ConfigError(f"max_chains={max_chains!r}: pass a positive number of chains, e.g. max_chains=3")
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1:
        raise ConfigError(f"max_depth={max_depth!r}: pass a positive number of references, e.g. max_depth=50")
    kinds, target_type = _resolve(target)
    if collect:
        gc.collect()
    touched: list[dict[str, Any]] = []
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _search(target, kinds, target_type, max_chains, max_depth, touched)
    finally:
        _release_snapshots(touched)
        target = kinds = None
        if was_enabled:
            gc.enable()


def _search(target: Any, kinds: dict[int, type] | None, target_type: str, max_chains: int, max_depth: int,
            touched: list[dict[str, Any]]) -> list[Chain]:
    objs = gc.get_objects()
    try:
        if kinds is None:
            samples = [target]
        else:
            samples = list(islice(compress(objs, map(kinds.__contains__, map(id, map(type, objs)))), MAX_SAMPLES))
        if not samples:
            return []
        index = _Index(objs)

        # Running frames: their locals are invisible to the collector in 3.11, so add them by name.
        frame_roots: list[str] = []
        frame_refs: dict[int, list[tuple[int, str]]] = {}
        blocked: set[int] = set()  # held by tokdiag's own frames only: never roots
        module_dicts = {id(_module_dict(m)) for m in list(sys.modules.values())}
        for f, thread in _frames():
            fname = f.f_code.co_filename
            loc = _locals_of(f, touched)
            if _is_tokdiag_file(fname):
                blocked.update(map(id, loc.values()))
                continue
            if loc is f.f_globals and id(loc) in module_dicts:  # a module's own code: the module is the root
                continue
            k = len(frame_roots)
            frame_roots.append(_frame_label(f, thread))
            for name, v in loc.items():
                frame_refs.setdefault(id(v), []).append((k, str(name)))
        f = loc = None  # no frame stays referenced from here

        sample_ids = list(dict.fromkeys(map(id, samples)))
        toward: dict[int, int] = {s: s for s in sample_ids}  # node id -> next id toward the target
        # candidates: (ids root..target, root label, root kind, namespace owner, frame local name)
        found: list[tuple[list[int], str, str, str | None, str | None]] = []
        merges: list[tuple[int, int]] = []
        limit = 8 * max_chains  # candidates; several may collapse into one shape below
        frontier = np.array(sample_ids, dtype=np.int64)
        stop_depth = max_depth
        depth = 0
        while frontier.size and depth <= stop_depth and len(found) < limit:
            referrers = index.referrers(frontier)
            nxt: list[int] = []
            for n, oid in enumerate(frontier.tolist()):
                obj = _at(oid)
                parent_ids = referrers[n]
                root = _root_of(obj, parent_ids)
                if root is None and oid in frame_refs:
                    # a running frame's local; often not the only holder, so keep walking back too
                    path = _path(toward, oid)
                    for k, name in frame_refs[oid][:max_chains]:
                        found.append((path, frame_roots[k], "frame", None, name))
                if root == "blocked":
                    continue
                if root is not None:
                    found.append((_path(toward, oid), *root, None))
                    continue
                live_parents = [p for p in parent_ids if p != oid]
                if not live_parents and oid not in blocked and not _is_tokdiag_type(type(obj)):
                    found.append((_path(toward, oid), f"{_qualified(type(obj))} with no tracked referrer", "gc",
                                  None, None))
                    continue
                for p in live_parents:
                    if p not in toward:
                        toward[p] = oid
                        nxt.append(p)
                    elif toward[p] != oid and len(merges) < 32 * max_chains:
                        merges.append((p, oid))  # another way into a node already reached
                del obj
            if found and stop_depth == max_depth:
                stop_depth = min(max_depth, 2 * depth + 2)  # a few more levels for other roots, then stop
            frontier = np.array(nxt, dtype=np.int64)
            depth += 1

        # Other ways into the nodes of a found chain: same root, different path (a closure next to a slot).
        alts: list[tuple[list[int], str, str, str | None, str | None]] = []
        for ids, *rest in found:
            at = {oid: i for i, oid in enumerate(ids)}
            for p, oid in merges:
                if p in at:
                    alts.append((ids[: at[p] + 1] + _path(toward, oid), *rest))  # type: ignore[arg-type]
        candidates = found + sorted(alts, key=lambda c: len(c[0]))
        chains: list[Chain] = []
        shapes: set[str] = set()
        for ids, root_label, root_kind, owner, frame_name in candidates[:limit]:
            if len(chains) >= max_chains:
                break
            nodes = list(map(_at, ids))
            edges = _edges(nodes, touched, owner)
            nodes.clear()
            if frame_name is not None:
                edges = (Edge("frame", frame_name, "frame"),) + edges
            c = Chain(root_label, root_kind, edges, target_type)
            shape = _INDEX.sub("[i]", c.text)  # history[12] and history[13]: one way of being held
            if shape not in shapes:
                shapes.add(shape)
                chains.append(c)
        return chains
    finally:
        index = None  # noqa: F841
        samples = None  # noqa: F841
        del objs


def _qualified(t: type) -> str:
    return f"{module_name(t)}.{_qualname(t)}"


def _path(toward: dict[int, int], oid: int) -> list[int]:
    out = [oid]
    while toward[oid] != oid:
        oid = toward[oid]
        out.append(oid)
    return out


def _root_of(obj: Any, parent_ids: list[int]) -> tuple[str, str, str | None] | str | None:
    """``(label, kind, owner)`` when ``obj`` is a root, ``"blocked"`` for tokdiag's own, else None.

    ``owner`` names the namespace when the root is a module's or class's dict
    (its keys are then attributes).
    """
    t = type(obj)
    if is_subtype(t, types.ModuleType):
        name = _module_name(obj)
        return "blocked" if _is_tokdiag_name(name) else (f"module {name}", "module", None)
    if _is_tokdiag_type(t):
        return "blocked"
    if t is dict:
        for p in parent_ids:
            owner = _at(p)
            if _module_dict(owner) is obj:
                name = _module_name(owner)
                return "blocked" if _is_tokdiag_name(name) else (f"module {name}", "module", "module")
            if _is_a(owner, type) and _type_dict(owner) is obj:
                if _is_tokdiag_type(owner):
                    return "blocked"
                return f"class {_qualified(owner)}", "class", _qualname(owner)
    return None


def _is_tokdiag_name(name: str) -> bool:
    """A module of tokdiag's own: ``tokdiag`` and ``tokdiag.*``."""
    return name == "tokdiag" or name.startswith("tokdiag.")
