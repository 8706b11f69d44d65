"""Charts: plotly figures built from runs, ledgers, verdicts, chains and comparisons.

Figures only. Every function returns a :class:`plotly.graph_objects.Figure`
and decides nothing: labels, intervals and projections come from
:mod:`tokdiag.analysis`; the ledger from :func:`tokdiag.analysis.ledger`.
Render them in a notebook (see :func:`tokdiag.report.export.plotly_renderer_setup`)
or with ``fig.to_html(include_plotlyjs=True)``; nothing here calls
``fig.show()``.

==================  ==========================================================
function            shows
==================  ==========================================================
:func:`ledger`      who owns the RSS growth after warm-up, stacked over steps, RSS on top
:func:`startup`     what warm-up cost, per owner (the one-off costs the ledger leaves out)
:func:`growers`     the owners that grew, one row each, largest per step first
:func:`counts`      instances per watched class (or census type) over steps
:func:`caches`      entries, and bytes (native estimate dashed), per cache
:func:`rss`         RSS of one or several runs side by side
:func:`verdict_table`  one row per series, coloured by verdict
:func:`chain`       why-alive reference chains drawn as paths
:func:`compare`     A/B growth per step with intervals, one panel per unit
==================  ==========================================================

Conventions: memory in MiB on axes (KiB/step for growth rates below 1 MiB),
the x axis is "step (workload steps completed)", titles say what to look at.
Every string that comes from the workload (class names, cache labels, run
names, reasons, chain labels) is passed through :func:`html.escape` before
it reaches a trace name, a hover text or a table cell: plotly renders a
subset of HTML in those, and a subject called ``<img src=x onerror=...>``
must show as text. Empty input gives a figure with an annotation saying what
is missing, never an exception.

>>> import pandas as pd
>>> df = pd.DataFrame({"run": "r", "step": [0, 10, 10], "owner": ["a", "a", "unexplained (native or untracked)"],
...                    "kind": ["cache", "cache", "unexplained"], "bytes": [0.0, 2**20, 2**19]})
>>> fig = ledger(df)
>>> [t.name for t in fig.data]
['a', 'unexplained (native or untracked)', 'RSS growth']
"""

from __future__ import annotations

from tokdiag.charts._style import KIND_ORDER, LABEL_COLORS, UNEXPLAINED
from tokdiag.charts.chains import chain
from tokdiag.charts.compare import compare
from tokdiag.charts.growers import growers
from tokdiag.charts.ledger import ledger, startup
from tokdiag.charts.series import caches, counts, rss
from tokdiag.charts.verdict_table import verdict_table

__all__ = [
    "KIND_ORDER",
    "LABEL_COLORS",
    "UNEXPLAINED",
    "caches",
    "chain",
    "compare",
    "counts",
    "growers",
    "ledger",
    "rss",
    "startup",
    "verdict_table",
]
