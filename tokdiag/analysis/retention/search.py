"""why_alive: the search from sampled instances back to roots, and the chains it returns."""

from __future__ import annotations

import gc
import types
from dataclasses import dataclass
from typing import Any

import numpy as np

from tokdiag._clevel import distinct_types, is_subtype, module_name
from tokdiag.analysis.retention import walk as heapwalk
from tokdiag.analysis.retention.labels import Labeller, release_snapshots
from tokdiag.analysis.retention.records import ANY, Chain, Edge
from tokdiag.analysis.retention.roots import FrameRoots, ModuleRoots, Root, is_tokdiag_type, qualified, resolve
from tokdiag.errors import ConfigError

__all__ = ["MAX_SAMPLES", "why_alive"]

MAX_SAMPLES = 1000
"""At most this many instances of the target are searched from at once (the newest)."""

MAX_PASSES = 16
"""At most this many passes over the heap (each follows one more change of direction along a chain)."""

MAX_NODES = 1 << 21
"""At most this many objects reached by one search (its tables: ~40 bytes each)."""

_MAX_CLOSURE = 20_000  # objects examined for references from outside Python's heap
HELD_OUTSIDE = "held outside Python's heap (C state, e.g. atexit)"
"""Root of a chain whose first object is referred to from outside the collector's heap.

And by nothing in it that leads to a root.
"""
UNREACHABLE = "unreachable: garbage the collector has not freed yet"
"""Root of a chain to an instance nothing outside its own reference cycle holds (only with ``collect=False``)."""
_CALLER = "held outside Python's heap (C state, e.g. atexit, or only the caller's reference)"


def why_alive(target: Any, *, max_chains: int = 3, max_depth: int = 50, collect: bool = True,
              newer_than: Any = None) -> list[Chain]:
    """Reference chains from roots to live instances of ``target``, the most common way of being held first.

    ``target`` is a class, a class-name pattern (qualified ``"app.agents.RewardAgent"``,
    bare ``"RewardAgent"`` or glob ``"*.RewardAgent"``, matched like the watch
    probe: exactly the classes it names), or one instance; a class passed
    itself includes its subclasses. The newest :data:`MAX_SAMPLES` instances
    are searched from (the ones a growing run made; see
    :func:`tokdiag.analysis.retention.walk.heap` for what "newest" means).

    Up to ``max_chains`` chains: chains that differ only in a dict key or a
    list index are one chain with a count (``_SESSIONS[*] (x3)``), ordered by
    how many sampled instances they hold, then nearest first. ``max_depth``
    bounds their length. Roots: a loaded module (``module app``, or
    ``sys.modules["plugin_17"]`` for a module nothing imported), a class, a
    running function's locals, or, for objects nothing in Python's heap
    leads to, :data:`HELD_OUTSIDE` with the reference cycle they sit in.

    ``newer_than`` is an object the collector tracks (an empty list kept
    since a run's baseline, as the tracker does): only instances tracked
    after it are sampled, the ones that appeared since (the collector keeps
    its objects in the order it started tracking them; see
    :func:`~tokdiag.analysis.retention.walk.heap`). When none is, the
    newest of all are.

    ``collect`` leaves garbage out: young garbage is collected first (cheap),
    and an instance only its own reference cycle holds is not explained (the
    collector would free it); when every sampled instance is such garbage,
    a full collection runs and the search starts again. With
    ``collect=False`` such instances are explained, rooted at
    :data:`UNREACHABLE`.

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
    if newer_than is not None and not gc.is_tracked(newer_than):
        raise ConfigError(f"newer_than={newer_than!r:.60}: pass an object the garbage collector tracks "
                          "(e.g. an empty list made when the baseline was taken), or None")
    kinds, target_type = resolve(target)
    if collect:
        gc.collect(1)
    touched: list[dict[str, Any]] = []
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        spec = _Spec(target if kinds is None else None, kinds, target_type, max_chains, max_depth, collect, newer_than)
        chains = _search(spec, touched)
        if chains is None:  # every sampled instance was garbage: free it, then look at what is left
            release_snapshots(touched)
            gc.collect()
            chains = _search(spec, touched) or []
        return chains
    finally:
        release_snapshots(touched)
        target = kinds = spec = None  # type: ignore[assignment]
        if was_enabled:
            gc.enable()


@dataclass(slots=True)
class _Spec:
    instance: Any
    kinds: dict[int, type] | None
    target_type: str
    max_chains: int
    max_depth: int
    collect: bool
    newer_than: Any = None


def _csr(src: np.ndarray, dst: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(src, kind="stable")
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=ptr[1:])
    return ptr, dst[order].astype(np.int64)


def _bfs(ptr: np.ndarray, adj: np.ndarray, sources: np.ndarray, n: int) -> np.ndarray:
    """Breadth-first from ``sources``: per node, the node it was reached from (-1 a source, -2 unreached)."""
    via = np.full(n, -2, dtype=np.int64)
    via[sources] = -1
    frontier = np.flatnonzero(via == -1)
    while frontier.size:
        starts, lens = ptr[frontier], ptr[frontier + 1] - ptr[frontier]
        total = int(lens.sum())
        if total == 0:
            break
        offsets = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(total)
        nb, src = adj[offsets], np.repeat(frontier, lens)
        new = via[nb] == -2
        nb, src = nb[new], src[new]
        order = np.argsort(nb, kind="stable")  # each node once, from the first node that reached it
        nb, src = nb[order], src[order]
        first = np.r_[True, nb[1:] != nb[:-1]] if nb.size else np.zeros(0, dtype=bool)
        via[nb[first]] = src[first]
        frontier = nb[first]
    return via


def _path(via: np.ndarray, k: int) -> list[int]:
    out = [k]
    while via[k] >= 0:
        k = int(via[k])
        out.append(k)
    return out


class _Graph:
    """The objects a walk reached and the references between them, tokdiag's own left out."""

    def __init__(self, walk: Any, nodes: list[Any], n_samples: int, frames: FrameRoots) -> None:
        n = self.n = len(nodes)
        self.kinds = np.frombuffer(walk.kinds(), dtype=np.uint8)
        own = {id(t) for t in distinct_types(nodes) if is_tokdiag_type(t)}
        is_class = self.kinds == heapwalk.CLASS
        self.excluded = np.fromiter(map(own.__contains__, map(id, map(type, nodes))), dtype=bool, count=n)
        for k in np.flatnonzero(is_class).tolist():
            self.excluded[k] = is_tokdiag_type(nodes[k])
        e = np.frombuffer(walk.edges(), dtype=np.int32).reshape(-1, 2).astype(np.int64)
        e = e[~(self.excluded[e[:, 0]] | self.excluded[e[:, 1]])]
        key = np.sort(e[:, 0] * n + e[:, 1])  # a reference may be recorded twice (a dict looked through)
        key = key[np.r_[True, key[1:] != key[:-1]]] if key.size else key
        e = np.stack([key // max(n, 1), key % max(n, 1)], axis=1)
        self.down = _csr(e[:, 0], e[:, 1], n)  # holder -> held
        self.up = _csr(e[:, 1], e[:, 0], n)    # held -> holders
        self.samples = np.arange(n_samples)
        ids = np.fromiter(map(id, nodes), dtype=np.int64, count=n)
        framed = np.fromiter(map(frames.refs.__contains__, ids.tolist()), dtype=bool, count=n)
        rooted = (self.kinds == heapwalk.ROOT) | is_class | framed
        self.roots = np.flatnonzero(rooted & ~self.excluded)
        self.extra_roots: dict[int, Root] = {}  # only ever added to
        self._via: np.ndarray | None = None
        self._via_roots = 0

    def sources(self) -> np.ndarray:
        extra = np.fromiter(self.extra_roots, dtype=np.int64, count=len(self.extra_roots))
        return np.sort(np.concatenate([self.roots, extra]))

    def from_roots(self) -> np.ndarray:
        """Per node, the node it is reached from on a shortest way from a root (-1 a root, -2 none)."""
        if self._via is None or self._via_roots != len(self.extra_roots):
            self._via, self._via_roots = _bfs(*self.down, self.sources(), self.n), len(self.extra_roots)
        return self._via

    def unrooted(self) -> list[int]:
        via = self.from_roots()
        return [s for s in self.samples.tolist() if via[s] == -2]


def _search(spec: _Spec, touched: list[dict[str, Any]]) -> list[Chain] | None:
    modules = ModuleRoots()
    frames = FrameRoots(modules, touched)
    samples: list[Any] = []
    if spec.kinds is None:
        samples.append(spec.instance)
    else:
        classes = list(spec.kinds.values())
        samples += heapwalk.newest(classes, MAX_SAMPLES, None, spec.newer_than)
        if not samples and spec.newer_than is not None:
            samples += heapwalk.newest(classes, MAX_SAMPLES)
        del classes
    if not samples:
        return []
    # never reached: tokdiag's modules, the snapshot dicts of frames' locals (read as frame roots instead),
    # and the lists this search made before the walk (later ones are not part of its heap)
    blocked = [*modules.own, *touched, spec, samples, touched]
    nodes: list[Any] = []
    try:
        walk = heapwalk.Walk(samples, modules.roots, blocked, MAX_NODES)
        blocked.clear()
        newest_first = True
        for _ in range(MAX_PASSES):
            added = walk.run(newest_first)
            nodes = walk.nodes()
            graph = _Graph(walk, nodes, len(samples), frames)
            unrooted = graph.unrooted()
            if added == 0 or walk.truncated or not unrooted:
                break
            newest_first = not newest_first
        garbage: set[int] = set()
        if unrooted and added == 0 and not walk.truncated:
            garbage = _explain_outside(graph, unrooted, spec, walk, nodes)
        del walk
        if garbage and spec.collect and len(garbage) == len(samples):
            return None
        return _chains(graph, nodes, garbage, modules, frames, spec, touched)
    finally:
        samples.clear()
        nodes.clear()


def _explain_outside(graph: _Graph, unrooted: list[int], spec: _Spec, walk: Any, nodes: list[Any]) -> set[int]:
    """Root what holds the unrooted samples from outside Python's heap; return the samples that are garbage.

    Looks at every object that leads to them (their closure, complete: the
    search found nothing more) and counts its references from outside the
    heap, as the collector does: one counted from outside holds the chain.
    """
    via = _bfs(*graph.up, np.asarray(unrooted, dtype=np.int64), graph.n)
    closure = np.flatnonzero(via != -2)[:_MAX_CLOSURE].tolist()
    zobjs = [nodes[k] for k in closure]
    ext = walk.outside(zobjs, (nodes,))  # the samples list is part of the walk's heap: counted there
    zobjs.clear()
    for k, x in zip(closure, ext, strict=True):
        if x > 0 and not (spec.instance is not None and k == 0):  # the instance asked about: the caller holds it
            graph.extra_roots[k] = Root(HELD_OUTSIDE, "c")
    still = graph.unrooted()
    if spec.instance is not None:
        for s in still:
            graph.extra_roots[s] = Root(_CALLER, "c")
        return set()
    if not spec.collect:
        for s in still:
            graph.extra_roots[s] = Root(UNREACHABLE, "gc")
        return set()
    return set(still)


def _candidates(graph: _Graph, garbage: set[int], spec: _Spec) -> list[tuple[list[int], int]]:
    """Paths (node numbers, root first) from roots to samples.

    The nearest root of each sample, and each root's nearest sample.
    """
    out: list[tuple[list[int], int]] = []
    via = graph.from_roots()
    for s in graph.samples.tolist():
        if via[s] != -2 and s not in garbage:
            out.append((_path(via, s)[::-1], s))
    back = _bfs(*graph.up, np.asarray([s for s in graph.samples.tolist() if s not in garbage], dtype=np.int64), graph.n)
    near = [(len(p), p) for p in (_path(back, int(r)) for r in graph.sources().tolist() if back[int(r)] != -2)]
    limit = 8 * spec.max_chains
    for _, p in sorted(near, key=lambda t: t[0])[:limit]:
        out.append((p, p[-1]))
    return [(p, s) for p, s in out if len(p) - 1 <= spec.max_depth]


def _root_of(
    graph: _Graph, k: int, nodes: list[Any], modules: ModuleRoots, frames: FrameRoots, limit: int
) -> list[Root]:
    if k in graph.extra_roots:
        return [graph.extra_roots[k]]
    kind = int(graph.kinds[k])
    if kind == heapwalk.ROOT:
        return [modules.root_of(nodes[k])]
    if kind == heapwalk.CLASS:
        return [Root(f"class {qualified(nodes[k])}", "class")]
    return frames.roots_of(id(nodes[k]), limit)


def _chains(graph: _Graph, nodes: list[Any], garbage: set[int], modules: ModuleRoots, frames: FrameRoots,
            spec: _Spec, touched: list[dict[str, Any]]) -> list[Chain]:
    labeller = Labeller(touched)
    groups: dict[tuple[Any, ...], list[Any]] = {}  # shape -> [[(root, edges)], samples, first seen]
    seen: set[tuple[Any, ...]] = set()
    roots: dict[int, list[Root]] = {}
    for path, sample in _candidates(graph, garbage, spec):
        path = _canonical_root(graph, path, nodes, modules)
        if path[0] not in roots:
            roots[path[0]] = _root_of(graph, path[0], nodes, modules, frames, spec.max_chains)
        for root in roots[path[0]]:
            if (root.label, *path) in seen:
                continue
            seen.add((root.label, *path))
            if root.kind in ("c", "gc"):
                root = Root(root.label + _cycle(graph, path, nodes, labeller), root.kind)
            edges = labeller.edges([nodes[k] for k in path], root.owner)
            # a module's namespace is sys.modules["name"]: chains through several such modules are one shape
            long = root.in_sys_modules(ANY) if root.module is not None else root
            shape = (
                long.label,
                long.kind,
                tuple(
                    (e.kind, ANY if e.kind in ("key", "index") else e.label, e.source_type)
                    for e in (*long.prefix, *edges)
                ),
            )
            g = groups.setdefault(shape, [[], set(), len(groups)])
            g[0].append((root, edges))
            g[1].add(sample)
    ranked = sorted(groups.values(), key=lambda g: (-len(g[1]), len(g[0][0][1]), g[2]))
    return [_merge(members, len(samples), spec.target_type) for members, samples, _ in ranked[:spec.max_chains]]


def _canonical_root(graph: _Graph, path: list[int], nodes: list[Any], modules: ModuleRoots) -> list[int]:
    """One root for an object several loaded modules hold (``from app.base import AgentFactory`` everywhere).

    Among the module namespaces (and ``sys.modules``) that hold the first
    object of ``path``: ``sys.modules`` for a module, else the module that
    defines the object's class, else the first by name. Chains through
    several importers of one object are then one chain, not a merge over
    modules (which says: several modules, each holding its own).
    """
    if len(path) < 2 or graph.kinds[path[0]] != heapwalk.ROOT:
        return path
    ptr, adj = graph.up
    holders = [int(k) for k in adj[ptr[path[1]]:ptr[path[1] + 1]].tolist() if graph.kinds[k] == heapwalk.ROOT]
    if len(holders) < 2:
        return path
    first = nodes[path[1]]
    if is_subtype(type(first), types.ModuleType):
        best = next((k for k in holders if nodes[k] is modules.modules), None)
    else:
        defining = module_name(type(first))
        best = next((k for k in holders if modules.by_dict.get(id(nodes[k])) == defining), None)
    if best is None:
        best = min(holders, key=lambda k: modules.by_dict.get(id(nodes[k]), ""))
    return [best, *path[1:]]


def _merge(members: list[tuple[Root, tuple[Edge, ...]]], count: int, target_type: str) -> Chain:
    """One chain for chains of one shape: a key or index that differs between them becomes ``*``.

    Module roots that differ are written from ``sys.modules``, the module's name the key that differs.
    """
    if len({root.label for root, _ in members}) > 1:
        members = [(root.in_sys_modules(root.module or "?"), edges) for root, edges in members]
    rows = [(*root.prefix, *edges) for root, edges in members]
    first = rows[0]
    merged = tuple(e if all(r[i].label == e.label for r in rows) else Edge(e.kind, ANY, e.source_type)
                   for i, e in enumerate(first))
    root = members[0][0]
    return Chain(root.label, root.kind, merged, target_type, count)


def _cycle(graph: _Graph, path: list[int], nodes: list[Any], labeller: Labeller) -> str:
    """``", in a cycle back through A.x, B.y"``: how the instance at the end of ``path`` leads back to its start."""
    start, end = path[0], path[-1]
    ptr, adj = graph.down
    if start != end:
        via = _bfs(ptr, adj, np.asarray([end], dtype=np.int64), graph.n)
        back = _path(via, start)[::-1] if via[start] != -2 else []
    else:  # the instance is the start: a way from what it refers to back to itself
        kids = adj[ptr[end]:ptr[end + 1]]
        via = _bfs(ptr, adj, kids, graph.n)
        back = [end] + _path(via, end)[::-1] if kids.size and via[end] != -2 else []
        if not back:  # a reference to itself (the search records none): label it if it is one
            edge = labeller.edges([nodes[end], nodes[end]])
            if edge and edge[0].kind != "referent":
                return f", in a cycle back through {edge[0].source_type}{edge[0].text}"
    if len(back) < 2:
        return ""
    edges = labeller.edges([nodes[k] for k in back])
    return ", in a cycle back through " + ", ".join(f"{e.source_type}{e.text}" for e in edges)
