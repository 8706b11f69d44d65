"""The records of a why-alive answer: :class:`Edge` (one reference) and :class:`Chain` (root to instance)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokdiag.errors import ConfigError

__all__ = ["ANY", "CONTAINER_ROOTS", "EDGE_KINDS", "ROOT_KINDS", "Chain", "Edge"]

EDGE_KINDS: tuple[str, ...] = ("attr", "key", "index", "item", "closure", "frame", "referent")
"""Kinds of :class:`Edge`: attribute, dict key, sequence index, set member, closure variable,
frame local, and an unlabelled reference (a C object's internal field)."""

ROOT_KINDS: tuple[str, ...] = ("module", "class", "frame", "c", "gc")
"""Kinds of chain roots: a loaded module's namespace (or ``sys.modules``), a class's namespace, a running
function's locals, an object held from outside Python's heap (C state), and unreachable garbage."""

ANY = "*"
"""The label of a key or index that differs between the chains merged into one (``_SESSIONS[*]``)."""

CONTAINER_ROOTS: tuple[str, ...] = ("sys.modules",)
"""Roots that are containers: their first key is written on them (``sys.modules["plugin_17"]``)."""


@dataclass(frozen=True, slots=True)
class Edge:
    """One reference on a chain: held by a ``source_type`` object under ``label``.

    ``kind`` is one of :data:`EDGE_KINDS`. ``label`` is the bare name or key:
    ``"agent"`` (attr), ``'"messages"'`` (key: the key's repr, shortened),
    ``"12"`` (index), ``"leaked"`` (closure or frame variable), ``""``
    (item, referent), :data:`ANY` for a key or index merged over several
    chains. :attr:`text` renders it (``.agent``, ``["messages"]``, ``[12]``).
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

    @property
    def varies(self) -> bool:
        """Whether this reference stands for several (a merged key or index, or any set member)."""
        return self.kind == "item" or (self.kind in ("key", "index") and self.label == ANY)

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "label": self.label, "source_type": self.source_type}


@dataclass(frozen=True, slots=True)
class Chain:
    """A chain of references from a root to an instance of ``target_type``.

    ``root`` describes the root (``"module app.bus"``, ``"class app.Bus"``,
    ``"frame serve (server.py:88)"``, ``"sys.modules"``, ``"held outside
    Python's heap (C state, e.g. atexit)"``), ``root_kind`` is one of
    :data:`ROOT_KINDS`, ``edges`` go from the root to the instance.
    ``count`` is how many of the sampled instances are held this way: chains
    that differ only in a dict key or a list index are one chain, the keys
    that differ written :data:`ANY`.

    >>> c = Chain("module app", "module", (Edge("attr", "REGISTRY", "module"), Edge("key", '"k"', "dict"),
    ...           Edge("attr", "items", "Holder"), Edge("index", "0", "list")), "Target")
    >>> c.text
    'module app -> REGISTRY["k"] -> Holder.items[0] -> Target'
    >>> Chain("module app", "module", (Edge("attr", "_SESSIONS", "module"), Edge("key", "*", "dict")),
    ...       "Session", 3).text
    'module app -> _SESSIONS[*] (x3) -> Session'
    >>> Chain.from_dict(c.as_dict()) == c
    True
    """

    root: str
    root_kind: str
    edges: tuple[Edge, ...]
    target_type: str
    count: int = 1

    @property
    def text(self) -> str:
        """One line: the root, then one segment per object that holds the next link, then the target.

        A segment starts at each object that is not a plain container: the
        first edge from the root (a bare name for a namespace or a frame; the
        object's type for a root held from C), an attribute, a closure or
        frame variable, or an unlabelled reference. Keys, indexes and set
        members of the containers that follow are appended to it. With
        ``count`` above 1, ``(xN)`` follows the segment where the chains
        merged (the first key, index or member that varies).
        """
        parts = [self.root]
        ends = [-1]  # per part, the index of its last edge
        absorbing = self.root in CONTAINER_ROOTS
        seg: str | None = None
        seg_end = -1
        for i, e in enumerate(self.edges):
            in_container = e.kind in ("key", "index", "item")
            if absorbing and in_container:
                parts[0] += e.text
                ends[0] = i
                continue
            absorbing = False
            if seg is None:
                if i == 0 and self.root_kind in ("module", "class", "frame") and e.kind != "referent":
                    seg = e.label if e.kind in ("attr", "frame", "closure") else e.text
                else:
                    seg = f"{e.source_type}{e.text}"
            elif in_container:
                seg += e.text
            else:
                parts.append(seg)
                ends.append(seg_end)
                seg = f"{e.source_type}{e.text}"
            seg_end = i
        if seg is not None:
            parts.append(seg)
            ends.append(seg_end)
        parts.append(self.target_type)
        ends.append(len(self.edges))
        if self.count > 1:
            first = next((i for i, e in enumerate(self.edges) if e.varies), len(self.edges))
            at = next(k for k, end in enumerate(ends) if end >= first)
            parts[at] += f" (x{self.count})"
        return " -> ".join(parts)

    def __str__(self) -> str:
        return self.text

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form (written to journals); :meth:`from_dict` reads it back."""
        return {"root": self.root, "root_kind": self.root_kind, "target_type": self.target_type,
                "edges": [e.as_dict() for e in self.edges], "count": self.count, "text": self.text}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Chain:
        """A chain from :meth:`as_dict`; journals written before ``count`` existed read as count 1."""
        try:
            edges = tuple(Edge(str(e["kind"]), str(e["label"]), str(e["source_type"])) for e in d.get("edges", ()))
            count = d.get("count", 1)
            if type(count) is not int or count < 1:
                raise ConfigError(f"not a retention chain: count={count!r} in {d!r}; it must be a positive int")
            return cls(str(d["root"]), str(d["root_kind"]), edges, str(d["target_type"]), count)
        except (KeyError, TypeError) as exc:
            raise ConfigError(
                f"not a retention chain: {d!r} lacks {exc}; pass a dict made by Chain.as_dict()") from None
