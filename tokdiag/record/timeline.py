"""Timeline: the tidy DataFrame every other part reads.

One row per measurement: ``run, step, elapsed_s, probe, subject, metric,
value, unit`` (:data:`tokdiag.records.COLUMNS`). ``step`` is the number of
workload steps completed when the snapshot was taken (0 = before the
first step).
"""

from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from tokdiag.records import COLUMNS


def timeline_from_snapshots(run: str, snapshots: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Build the timeline of one run from journal snapshot lines."""
    steps: list[int] = []
    elapsed: list[float] = []
    probe: list[str] = []
    subject: list[str] = []
    metric: list[str] = []
    value: list[float] = []
    unit: list[str] = []
    for snap in snapshots:
        recs = snap.get("records", [])
        n = len(recs)
        steps.extend([int(snap["step"])] * n)
        elapsed.extend([float(snap.get("elapsed_s", 0.0))] * n)
        for r in recs:
            probe.append(r["probe"])
            subject.append(r["subject"])
            metric.append(r["metric"])
            v = r.get("value")
            value.append(float("nan") if v is None else float(v))
            unit.append(r.get("unit", ""))
    df = pd.DataFrame({
        "run": pd.Series([run] * len(steps), dtype="string"),
        "step": pd.Series(steps, dtype="int64"),
        "elapsed_s": pd.Series(elapsed, dtype="float64"),
        "probe": pd.Series(probe, dtype="string"),
        "subject": pd.Series(subject, dtype="string"),
        "metric": pd.Series(metric, dtype="string"),
        "value": pd.Series(value, dtype="float64"),
        "unit": pd.Series(unit, dtype="string"),
    })
    return df[list(COLUMNS)]


def series(timeline: pd.DataFrame, probe: str, subject: str, metric: str) -> pd.Series:
    """One series indexed by step (``value`` of ``probe/subject/metric``)."""
    sel = timeline[(timeline["probe"] == probe) & (timeline["subject"] == subject) & (timeline["metric"] == metric)]
    return sel.set_index("step")["value"].sort_index()


def wide(timeline: pd.DataFrame, probe: str, metric: str) -> pd.DataFrame:
    """A step x subject table of one probe's metric (e.g. census counts per type)."""
    sel = timeline[(timeline["probe"] == probe) & (timeline["metric"] == metric)]
    return sel.pivot_table(index="step", columns="subject", values="value", aggfunc="last").sort_index()
