"""Why is it still alive? Reference chains from a root to live instances.

:func:`why_alive` answers, for a class (or a class-name pattern, or one
instance), which chains of references keep its instances alive::

    module app.bus -> bus -> EventBus._history[12] -> MemoryEventMessage.agent -> RewardAgent
    module app.sessions -> _SESSIONS[*] (x3) -> Session
    sys.modules["plugin_17"] -> module.handler -> Handler
    held outside Python's heap (C state, e.g. atexit), in a cycle back through
        TracerProvider._atexit_handler -> method.__self__ -> TracerProvider

The parts, one job each:

- :mod:`~tokdiag.analysis.retention.records`: :class:`Edge` and :class:`Chain`, the answer (journals carry them);
- :mod:`~tokdiag.analysis.retention.walk`: the heap and the backward search over it (C loop, or the same in Python);
- :mod:`~tokdiag.analysis.retention.roots`: where a chain may start (modules, classes, frames) and what is
  tokdiag's own;
- :mod:`~tokdiag.analysis.retention.labels`: the label of each reference;
- :mod:`~tokdiag.analysis.retention.search`: :func:`why_alive` itself: samples, passes, roots, merging.

How it is fast
--------------
``objgraph.find_backref_chain`` calls ``gc.get_referrers`` (a scan of the
whole heap) for every object its breadth-first search visits. Here each
*pass* over the heap follows a chain as far as its holders come after what
they hold (newest first: old containers holding new objects, the shape of a
leak), so a chain of any length usually costs one heap scan; see
:mod:`~tokdiag.analysis.retention.walk`. Figures: ``bench/README.md``.

What it leaves behind
---------------------
Nothing: every list of objects it made is dropped before it returns, the
collector is re-enabled, and the ``f_locals`` snapshots it had to read from
running function frames (Python 3.11 caches them on the frame, holding the
locals) are emptied again. After it returns, an instance the caller drops
can be collected, and ``gc.get_referrers`` of it shows nothing of tokdiag's.
It never calls the measured program's code (no ``isinstance``, ``getattr``,
``__eq__`` or ``__hash__`` on its objects).
"""

from __future__ import annotations

from tokdiag.analysis.retention.records import ANY, EDGE_KINDS, ROOT_KINDS, Chain, Edge
from tokdiag.analysis.retention.search import HELD_OUTSIDE, MAX_SAMPLES, UNREACHABLE, why_alive

__all__ = [
    "ANY",
    "EDGE_KINDS",
    "HELD_OUTSIDE",
    "MAX_SAMPLES",
    "ROOT_KINDS",
    "UNREACHABLE",
    "Chain",
    "Edge",
    "why_alive",
]
