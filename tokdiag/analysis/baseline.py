"""Where a ledger starts: the baseline snapshot of each run, by default the end of its RSS warm-up.

:func:`tokdiag.analysis.ledger` splits the RSS growth since a baseline
between owners. By default (``since="warmup"``) the baseline is the end of
the run's warm-up, so that what a service loads once (a 36 MiB tokenizer
vocabulary, imports, first-call caches) does not bury what keeps growing.
Warm-up is the one the RSS verdict found (:func:`tokdiag.analysis.classify`
on ``process/rss``: its ``warmup_steps``, where the final regime of the
series starts, found by a two-phase regression that a one-off jump fits
exactly); the baseline is the first snapshot at or after ``first step +
warmup_steps``. A run whose RSS has no warm-up (one regime from the start)
or too few snapshots to judge has its first snapshot as the baseline. A
jump between the first two snapshots ends the warm-up one snapshot after it
(a head of two snapshots fits a line exactly, so the split cannot tell the
two apart): one snapshot interval of later growth is counted as start-up.
``since="start"`` measures from the first snapshot, ``since=<step>`` from
the first snapshot at or after that step.

>>> rows = [("r", s, 0.0, "process", "process", "rss", 1e8 + 4e7 * (s >= 50) + 1e5 * s, "bytes")
...         for s in range(0, 200, 10)]
>>> tl = pd.DataFrame(rows, columns=["run", "step", "elapsed_s", "probe", "subject", "metric", "value", "unit"])
>>> baseline_step(tl), baseline_step(tl, since="start"), baseline_step(tl, since=55)
({'r': 50}, {'r': 0}, {'r': 60})
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tokdiag.analysis.classification import classify
from tokdiag.analysis.thresholds import MIN_SNAPSHOTS
from tokdiag.errors import ConfigError
from tokdiag.recording.timeline import check_timeline

__all__ = ["SINCE", "Since", "baseline_index", "baseline_step", "check_since", "rss_series"]

Since = str | int

SINCE: tuple[str, ...] = ("warmup", "start")
"""The named baselines (besides a step number)."""


def rss_series(tl: pd.DataFrame) -> pd.Series:
    """The ``process/rss`` values of one run's timeline by step, sorted by step (empty when it has none)."""
    rss = tl[(tl["probe"] == "process") & (tl["subject"] == "process") & (tl["metric"] == "rss")]
    return rss.groupby("step")["value"].last().dropna().sort_index()


def baseline_index(rss: pd.Series, since: Since, run: object) -> int:
    """Index into ``rss`` (:func:`rss_series` of run ``run``) of the baseline snapshot; see the module docstring."""
    steps = rss.index.to_numpy()
    if since == "start":
        return 0
    if since == "warmup":
        if steps.size < MIN_SNAPSHOTS:
            return 0
        warmup = classify(steps, rss.to_numpy(dtype=float), unit="bytes").warmup_steps
        at = float(steps[0]) + warmup
    else:
        at = float(since)
        if at > float(steps[-1]):
            raise ConfigError(f"since={since!r}: run {run!r} has no snapshot at or after step {since} (its last is "
                              f"step {int(steps[-1])}); pass an earlier step, 'warmup' or 'start'")
    return int(np.searchsorted(steps, at, side="left"))


def check_since(since: object) -> Since:
    """``since`` if it names a baseline (:data:`SINCE` or a step number >= 0), else a ConfigError."""
    if isinstance(since, str) and since in SINCE:
        return since
    if isinstance(since, (int, np.integer)) and not isinstance(since, bool) and since >= 0:
        return int(since)
    raise ConfigError(f"since={since!r}: pass 'warmup' (the end of the RSS warm-up, the default), 'start' (the "
                      "first snapshot) or a step number >= 0")


def baseline_step(timeline: pd.DataFrame, *, since: Since = "warmup") -> dict[object, int]:
    """The baseline step of each run of ``timeline`` for ``since`` (see the module docstring).

    Runs without a ``process/rss`` series are left out.
    """
    since = check_since(since)
    timeline = check_timeline(timeline)
    out: dict[object, int] = {}
    for run, tl in timeline.groupby("run", sort=False, dropna=False):
        rss = rss_series(tl)
        if not rss.empty:
            out[run] = int(rss.index[baseline_index(rss, since, run)])
    return out
