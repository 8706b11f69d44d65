"""Analysis: turn a timeline into answers.

- :func:`verdicts` / :func:`classify`: leak, bounded, step, flat or
  inconclusive per series, with growth per step and its interval;
- :func:`ledger`: RSS growth since the end of warm-up split between owners,
  the rest unexplained; :func:`startup_costs`: what warm-up cost;
- :func:`compare`: two runs side by side, and whether a difference is real.

Only numpy and pandas are imported here (never plotly, never the tracker):
analysis reads timelines and returns DataFrames.
"""

from __future__ import annotations

from tokdiag.analysis.compare import CHANGES, COMPARE_COLUMNS, compare
from tokdiag.analysis.ledger import LEDGER_COLUMNS, UNEXPLAINED, ledger, startup_costs
from tokdiag.analysis.verdicts import LABELS, PRACTICAL_MIN, Verdict, classify, verdicts

__all__ = [
    "CHANGES",
    "COMPARE_COLUMNS",
    "LABELS",
    "LEDGER_COLUMNS",
    "PRACTICAL_MIN",
    "UNEXPLAINED",
    "Verdict",
    "classify",
    "compare",
    "ledger",
    "startup_costs",
    "verdicts",
]
