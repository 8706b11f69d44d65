"""Analysis: turn a timeline into answers.

- :func:`answer`: what one or several runs say, in words (leaks with what
  holds them, or what was measured and found flat), built from
  :func:`findings`, the same findings ``summary.json``'s headlines come from;
- :func:`verdicts` / :func:`classify`: leak, bounded, step, flat or
  inconclusive per series, with growth per step and its interval;
  :func:`fold_verdicts`: the same per owner and measure, without noise;
- :func:`growers`: the owners that grew, every probe's measure merged;
- :func:`ledger`: RSS growth since the end of warm-up split between owners,
  the rest unexplained; :func:`owner_shares`: each owner's share at the end;
  :func:`startup_costs`: what warm-up cost;
- :func:`compare`: two runs side by side, and whether a difference is real;
- :func:`verdicts_table`, :func:`growers_table`, :func:`compare_table`,
  :func:`compare_notes`, :func:`compare_headlines`, :func:`runs_table`: the same for a page, with units
  and words (:data:`SEVERITY` orders verdicts, most alarming first);
- :func:`mutations`: cached values changed in place (fingerprint changed,
  entry count did not).
- :func:`time_to_limit`: when a leaking run reaches its memory limit;
- :mod:`~tokdiag.analysis.attribution`: what a run under memray left alive,
  grouped by the library frame that allocated it and the user's line above it.

Only numpy and pandas are imported here (never plotly, never the tracker):
analysis reads timelines and returns DataFrames and plain records.
"""

from __future__ import annotations

from tokdiag.analysis.answer import Answer, answer
from tokdiag.analysis.classification import LABELS, SEVERITY, Verdict, classify
from tokdiag.analysis.compare import CHANGES, COMPARE_COLUMNS, compare
from tokdiag.analysis.findings import Finding, findings
from tokdiag.analysis.fold import fold_verdicts
from tokdiag.analysis.format import (
    format_interval,
    format_rate,
    format_signed,
    format_value,
)
from tokdiag.analysis.growers import GROWER_COLUMNS, growers, growers_table
from tokdiag.analysis.ledger import LEDGER_COLUMNS, UNEXPLAINED, ledger, owner_shares, startup_costs
from tokdiag.analysis.limit import TimeToLimit, time_to_limit
from tokdiag.analysis.mutations import mutations
from tokdiag.analysis.tables import compare_headlines, compare_notes, compare_table, runs_table, verdicts_table
from tokdiag.analysis.thresholds import PRACTICAL_MIN
from tokdiag.analysis.verdicts import verdicts

__all__ = [
    "CHANGES",
    "COMPARE_COLUMNS",
    "GROWER_COLUMNS",
    "LABELS",
    "LEDGER_COLUMNS",
    "PRACTICAL_MIN",
    "SEVERITY",
    "TimeToLimit",
    "UNEXPLAINED",
    "Answer",
    "Finding",
    "Verdict",
    "answer",
    "classify",
    "compare",
    "compare_headlines",
    "compare_notes",
    "compare_table",
    "findings",
    "fold_verdicts",
    "format_interval",
    "format_rate",
    "format_signed",
    "format_value",
    "growers",
    "growers_table",
    "ledger",
    "mutations",
    "owner_shares",
    "runs_table",
    "startup_costs",
    "time_to_limit",
    "verdicts",
    "verdicts_table",
]
