"""Where chains start: loaded modules, classes, running frames, and what is held from outside Python's heap.

A module is a root only through ``sys.modules``: the namespace of a module
that ``sys.modules`` holds ends a chain, written ``module app.bus`` (short
for ``sys.modules["app.bus"] -> module``); chains that differ only in which
such module holds them are merged in that long form
(``sys.modules[*] (x3) -> module.handler``: a module registered per
request). The namespace of a module that ``sys.modules`` does not hold is an
ordinary object on a chain. A module that is itself the instance asked
about is held by ``sys.modules`` (``sys.modules["plugin_17"] -> module``)
and by its importers (``module app -> plugin``).

tokdiag's own modules, frames and objects are never roots and never links.
"""

from __future__ import annotations

import os
import sys
import threading
import types
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tokdiag._clevel import is_subtype, module_name, qualname
from tokdiag.analysis.retention.labels import key_label, locals_of, module_dict
from tokdiag.analysis.retention.records import ANY, Edge
from tokdiag.errors import ConfigError

__all__ = ["FrameRoots", "ModuleRoots", "Root", "is_tokdiag_name", "is_tokdiag_type", "qualified", "resolve"]

_TOKDIAG_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass(frozen=True, slots=True)
class Root:
    """How a chain starts: its label and kind, the owner name of a namespace root, and edges before the path.

    ``module`` is the name in ``sys.modules`` of a module whose namespace is the root.
    """

    label: str
    kind: str
    owner: str | None = None
    prefix: tuple[Edge, ...] = ()
    module: str | None = None

    def in_sys_modules(self, key: str) -> Root:
        """This module root written from ``sys.modules`` (``key``: the module's name, or :data:`ANY`)."""
        return Root(
            "sys.modules",
            "module",
            self.owner,
            (Edge("key", key if key == ANY else key_label(key), "dict"), *self.prefix),
        )


def is_tokdiag_name(name: str) -> bool:
    """A module of tokdiag's own: ``tokdiag`` and ``tokdiag.*``."""
    return name == "tokdiag" or name.startswith("tokdiag.")


def is_tokdiag_type(t: type) -> bool:
    """A class of tokdiag's own (never a link of a chain)."""
    return is_tokdiag_name(module_name(t))


def qualified(t: type) -> str:
    return f"{module_name(t)}.{qualname(t)}"


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


def resolve(target: Any) -> tuple[dict[int, type] | None, str]:
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
        names = sorted({qualname(t) for t in found})
        # exactly the classes the watch probe would count under this pattern (no unnamed subclasses)
        return {id(t): t for t in found}, names[0] if len(names) == 1 else pattern
    if is_subtype(type(target), type):
        return _subclasses([target]), qualname(target)
    return None, qualname(type(target))


class ModuleRoots:
    """The loaded modules: which namespaces are roots, which are tokdiag's own, and how to name each."""

    def __init__(self) -> None:
        self.modules = sys.modules  # the interpreter's own dict (a root itself: it holds every module)
        self.by_dict: dict[int, str] = {}  # id(namespace) -> its name in sys.modules (no reference kept)
        self.roots: list[Any] = [self.modules]
        self.own: list[Any] = []  # tokdiag's modules and namespaces: never reached
        for name, m in list(self.modules.items()):
            d = module_dict(m)
            if d is None or type(name) is not str:
                continue
            if is_tokdiag_name(name):
                self.own += (m, d)
            else:
                self.by_dict[id(d)] = name
                self.roots.append(d)

    def root_of(self, namespace: Any) -> Root:
        """The root a reached root container stands for (a module's namespace, or ``sys.modules``)."""
        if namespace is self.modules:
            return Root("sys.modules", "module")
        name = self.by_dict[id(namespace)]
        return Root(f"module {name}", "module", "module", module=name)


def _is_own_file(filename: str) -> bool:
    try:
        return os.path.abspath(filename).startswith(_TOKDIAG_DIR + os.sep)
    except (TypeError, ValueError):
        return False


def _frame_label(f: types.FrameType, thread: str) -> str:
    code = f.f_code
    name = getattr(code, "co_qualname", code.co_name)
    where = f"{os.path.basename(code.co_filename)}:{f.f_lineno}"
    suffix = "" if thread == "MainThread" else f", thread {thread}"
    return f"frame {name} ({where}{suffix})"


class FrameRoots:
    """The local variables of every running function of every thread (3.11's collector cannot see them).

    ``refs`` maps the id of each object a local refers to, to the frames and
    names holding it. Frames of tokdiag's own code (their locals are never
    read) and module-level code (whose module is the root) are left out.
    Reading ``f_locals`` of a function makes a snapshot dict; each is kept in
    ``touched``, never reached by the search, and emptied at the end.
    """

    def __init__(self, modules: ModuleRoots, touched: list[dict[str, Any]]) -> None:
        self.labels: list[str] = []
        self.refs: dict[int, list[tuple[int, str]]] = {}
        names = {t.ident: t.name for t in threading.enumerate()}
        for ident, top in sys._current_frames().items():
            f: types.FrameType | None = top
            while f is not None:
                self._add(f, names.get(ident, str(ident)), modules, touched)
                f = f.f_back
        # holding a frame in a local at return would make a cycle frame -> locals -> frame
        del f, top

    def _add(self, f: types.FrameType, thread: str, modules: ModuleRoots, touched: list[dict[str, Any]]) -> None:
        if _is_own_file(f.f_code.co_filename):  # tokdiag's own code (this search among it)
            return
        loc = locals_of(f, touched)
        if loc is f.f_globals and id(loc) in modules.by_dict:  # a module's own code: the module is the root
            return
        k = len(self.labels)
        self.labels.append(_frame_label(f, thread))
        for name, v in loc.items():
            self.refs.setdefault(id(v), []).append((k, str(name)))

    def roots_of(self, oid: int, limit: int) -> list[Root]:
        return [
            Root(self.labels[k], "frame", None, (Edge("frame", name, "frame"),))
            for k, name in self.refs.get(oid, ())[:limit]
        ]
