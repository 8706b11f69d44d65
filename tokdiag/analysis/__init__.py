"""Analysis: turn a timeline into answers.

- :func:`verdicts` / :func:`classify`: leak, bounded, step, flat or
  inconclusive per series, with growth per step and its interval;
- :func:`ledger`: RSS growth split between owners, the rest unexplained;
- :func:`compare`: two runs side by side, and whether a difference is real;
- :func:`time_to_limit`: when a leaking run reaches its memory limit.
- :mod:`~tokdiag.analysis.attribution`: what a run under memray left alive,
  grouped by the library frame that allocated it and the user's line above it.

Only numpy and pandas are imported here (never plotly, never the tracker):
analysis reads timelines and returns DataFrames.
"""

from __future__ import annotations

from tokdiag.analysis.classification import LABELS, PRACTICAL_MIN, Verdict, classify
from tokdiag.analysis.compare import CHANGES, COMPARE_COLUMNS, compare
from tokdiag.analysis.ledger import LEDGER_COLUMNS, UNEXPLAINED, ledger
from tokdiag.analysis.limit import TimeToLimit, time_to_limit
from tokdiag.analysis.verdicts import verdicts

__all__ = [
    "CHANGES",
    "COMPARE_COLUMNS",
    "LABELS",
    "LEDGER_COLUMNS",
    "PRACTICAL_MIN",
    "TimeToLimit",
    "UNEXPLAINED",
    "Verdict",
    "classify",
    "compare",
    "ledger",
    "time_to_limit",
    "verdicts",
]
