"""Owners for people: what an owner is called, what holds it, where it was allocated, which runs to read.

Shared by the findings (:mod:`tokdiag.analysis.findings`) and the top
growers (:mod:`tokdiag.analysis.growers`), so both name an owner, its chain
and its sites the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from types import SimpleNamespace
from typing import Any

from tokdiag.analysis.format import short_name
from tokdiag.errors import ConfigError

__all__ = ["chain_text", "chain_through", "display_name", "is_builtin", "module_sites", "names_holder", "runs_of"]

HOLDER_KINDS: tuple[str, ...] = ("container", "cache")
"""Kinds of owner that are holders themselves: a growing container or cache names where the growth lives."""


def display_name(owner: str, kind: str, clashes: AbstractSet[str] = frozenset()) -> str:
    """The name a sentence gives an owner: a class by its bare name unless two owners share it."""
    if kind == "class":
        name = short_name("census", owner)[0]
        return owner if name in clashes else name
    if kind == "cache":
        return short_name("cache", owner)[0]
    return owner


def names_holder(kind: str, chain: str) -> bool:
    """Whether an owner of ``kind`` with the why-alive ``chain`` says what holds its growth.

    A container or a cache is its own holder (its path names it); a class is
    when a chain was recorded for it. A class only the census counted is not:
    the findings and the top growers put the owners that name a holder before
    those, when neither grows by more bytes per step.
    """
    return kind in HOLDER_KINDS or bool(chain)


def is_builtin(owner: str, kind: str) -> bool:
    """Whether ``owner`` is a class of the language core (``builtins.dict``, ``builtins.str``, ``builtins.int``).

    Every heap is full of their instances: watching one to record a chain
    sizes all of them at each snapshot, and ``str``, ``int`` and the other
    types the collector does not track cannot be watched at all (the watch
    probe warns). What holds them is read better from a growing container
    or a watched class of the workload.
    """
    return kind == "class" and short_name("census", owner)[1] == "builtins"


def chain_through(chain: str, container: str) -> bool:
    """Whether the why-alive ``chain`` (as :func:`chain_text` writes it) passes through ``container``.

    ``container`` is a path of the containers probe, ``module:attr.attr``: the
    chain's root names the module and one of its hops is the last attribute.

    >>> chain_through("module app -> _DONE[*] (x30)", "app:_DONE")
    True
    >>> chain = "class logging.Logger -> manager -> Manager.loggerDict[*] (x4)"
    >>> chain_through(chain, "logging:Logger.manager.loggerDict")
    True
    >>> chain_through("module app -> _DONE[*] (x30)", "app:_SEEN")
    False
    """
    module, _, path = container.partition(":")
    if not chain or not path:
        return False
    hops = chain.split(" -> ")
    root = hops[0].split(" ", 1)[-1]
    if root != module and not root.startswith(module + "."):
        return False
    last = path.rsplit(".", 1)[-1]
    for hop in hops[1:]:
        name = hop.split(" ", 1)[0].split("[", 1)[0].split("{", 1)[0]
        if name == last or name.endswith("." + last):
            return True
    return False


def chain_text(retention: Mapping[str, Any], owner: str) -> str:
    """The recorded why-alive chain of ``owner``, root to holder (the target left out): ``module app -> _DONE[0]``.

    A chain rooted in a module, class or frame is preferred over one from an
    unreferenced gc object. ``""`` when none was recorded.
    """
    from tokdiag.analysis.retention import Chain

    key = owner if owner in retention else None
    if key is None:
        bare = [k for k in retention if k.rsplit(".", 1)[-1] == owner.rsplit(".", 1)[-1]]
        key = bare[0] if len(bare) == 1 else None
    if key is None or not retention[key]:
        return ""
    chains = []
    for c in retention[key]:
        try:
            chains.append(Chain.from_dict(dict(c)))
        except (ConfigError, TypeError, ValueError):  # a damaged journal line: no chain rather than no answer
            continue
    if not chains:
        return ""
    best = next((c for c in chains if c.root_kind != "gc"), chains[0])
    return best.text.rsplit(" -> ", 1)[0] if best.edges else best.root


def _module_files(owner: str, kind: str) -> tuple[str, ...]:
    module = owner.rsplit(".", 1)[0] if kind == "class" and "." in owner else (
        owner.split(":", 1)[0] if kind == "cache" and ":" in owner else "")
    if not module:
        return ()
    path = module.replace(".", "/")
    return (f"{path}.py", f"{path}/__init__.py")


def module_sites(owner: str, kind: str, site_rows: list[Mapping[str, Any]]) -> tuple[str, ...]:
    """Growing allocation sites (``file:line``) in the module that defines ``owner``: at most three, largest first.

    ``site_rows``: folded verdict rows of the ``alloc`` probe's bytes that
    grow. tracemalloc knows lines, not classes: a site is given to a class
    or cache when its file is the module that defines it
    (``myapp/jobs.py`` for ``myapp.jobs.Job``, ``myapp/jobs/__init__.py``
    for a package), the place its instances are most often made.
    """
    files = _module_files(owner, kind)
    if not files:
        return ()
    hits = [r for r in site_rows if str(r["subject"]).rsplit(":", 1)[0].replace("\\", "/").endswith(files)]
    hits.sort(key=lambda r: -float(r["per_step"]))
    return tuple(str(r["subject"]) for r in hits[:3])


def runs_of(run_or_runs: Any) -> list[Any]:
    """The runs to read from what a caller passed: a Run, a journal path, a list of them, or ``{label: run}``.

    A run is anything with ``name``, ``timeline``, ``status`` and
    ``warnings`` (a :class:`tokdiag.Run`); a dict's labels become the runs'
    names. A bare timeline is refused: it has no status or warnings, so
    nothing read from it could say whether the run completed.
    """
    def one(x: Any, what: str) -> Any:
        if isinstance(x, (str, os.PathLike)):
            from tokdiag.recording.run import load

            return load(x)
        if all(hasattr(x, a) for a in ("name", "timeline", "status", "warnings")):
            return x
        raise ConfigError(f"{what} is a {type(x).__name__}; pass a tokdiag Run (td.track(...), td.load('run.jsonl')), "
                          "a journal path, or a list of them (a bare timeline has no status or warnings, so it cannot "
                          "be answered for)")

    if isinstance(run_or_runs, Mapping):
        return [
            SimpleNamespace(
                name=str(label),
                timeline=r.timeline,
                status=r.status,
                message=getattr(r, "message", ""),
                warnings=list(r.warnings),
                retention=dict(getattr(r, "retention", {}) or {}),
            )
            for label, r in ((k, one(v, f"runs[{k!r}]")) for k, v in run_or_runs.items())
        ]
    if isinstance(run_or_runs, (str, os.PathLike)) or hasattr(run_or_runs, "timeline") or hasattr(
            run_or_runs, "columns"):  # a DataFrame is iterable (its column names): refuse it as one thing
        return [one(run_or_runs, "run")]
    if isinstance(run_or_runs, Iterable):
        return [one(x, f"runs[{i}]") for i, x in enumerate(run_or_runs)]
    return [one(run_or_runs, "run")]
